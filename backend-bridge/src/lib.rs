//! khttpd-bridge: carries the front's dynamic and unknown requests to a userspace backend.
//!
//! kHTTPd put the live client socket into the accept queue of the server on `clientport`. We
//! carry the request over HTTP/1.1 instead, and tell the backend who the client is. The phases
//! of one request and where each lives:
//! - settings (backends, limits, PROXY protocol, trusted proxies): [`config`]; a backend's
//!   address (TCP or `unix:` socket) and the stream to it: [`addr`];
//! - shared backend state (slots, health, counters) across main daemons: [`upstreams`], the
//!   choice of a backend (round-robin, cooldown): `balance`;
//! - `upstream_request`: the head the backend sees, [`forwarded`] (with [`hop`]);
//! - `connect`: one per-daemon keep-alive pool (`pool`) of plain connections (`raw`), new
//!   connections and hyper's client on them (`connect`) with an optional [`proxy_protocol`] header;
//! - `send` and `upstream_response`: [`Session::forward`] in `bridge`, bodies streamed by
//!   `body`, upgrades tunnelled by `tunnel`; answers read as fast as the backend writes them
//!   and held for slow clients by `spool`; for plain GETs and HEADs the front has parsed
//!   itself, [`Session::relay`] in [`relay`] carries the bytes without hyper;
//! - errors by blame and their statuses: [`error`]; the HTTP/1.1 limits every parser shares:
//!   [`h1`], which also reads a backend answer's head and framing for the relay.
//!
//! Use: one [`Upstreams`] per server (shared), one [`Bridge`] per main daemon, one
//! [`Session`] per client connection, [`Session::forward`] (or [`Session::relay`]) per request.

pub mod addr;
mod balance;
mod body;
mod bridge;
pub mod config;
mod connect;
pub mod error;
pub mod forwarded;
pub mod gzip;
pub mod h1;
pub mod hop;
mod pool;
pub mod proxy_protocol;
mod raw;
pub mod relay;
mod spool;
mod tunnel;
pub mod upstreams;

pub use addr::{BackendAddr, BackendStream};
pub use body::{AnswerBody, Buffered, ClientBody};
pub use bridge::{Bridge, ClientInfo, Session, Upstream};
pub use config::{BridgeConfig, Cidr, ConfigError, ProxyProtocol};
pub use error::{BridgeError, Phase};
pub use h1::Framing;
pub use relay::{RelayRequest, Relayed};
pub use spool::SpoolCounts;
pub use upstreams::{BackendStats, Upstreams};
