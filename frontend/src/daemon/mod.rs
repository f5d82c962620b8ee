//! kHTTPd's daemons: the management daemon ([`manager`]) and one main daemon per core
//! ([`main_daemon`]), what they share ([`state`]), admission ([`maxconnect`]), the per-stage
//! counters ([`stats`], [`latency`]), memory, privileges, the service manager, and the front as a
//! library call ([`embedded`]).

pub mod embedded;
pub(crate) mod latency;
pub(crate) mod main_daemon;
pub mod manager;
pub(crate) mod maxconnect;
pub mod memory;
pub(crate) mod privileges;
pub(crate) mod service_manager;
pub(crate) mod state;
pub(crate) mod stats;
