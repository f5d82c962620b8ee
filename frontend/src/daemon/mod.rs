//! kHTTPd's daemons: the management daemon ([`manager`]) and one main daemon per core
//! ([`main_daemon`]), what they share ([`state`]), admission ([`maxconnect`]), the per-stage
//! counters ([`stats`], [`latency`]), memory, privileges, the service manager, and the front as a
//! library call ([`embedded`]).

pub mod embedded;
pub mod latency;
pub mod main_daemon;
pub mod manager;
pub mod maxconnect;
pub mod memory;
pub mod privileges;
pub mod service_manager;
pub mod state;
pub mod stats;
