//! khttpd-front: a userspace re-creation of Linux 2.4 kHTTPd as a modern front server.
//!
//! The pipeline of one request and where each step lives:
//! - configuration and flags: [`config`];
//! - main daemons (one thread, runtime and `SO_REUSEPORT` listener per core): [`daemon`], with
//!   maxconnect counted in [`maxconnect`]; under the management daemon [`manager`], or in another
//!   program through [`run`] ([`embedded`]);
//! - HTTPS (rustls, certificates by SNI, ALPN `h2`/`http/1.1`): [`tls`];
//! - accept and WaitForHeaders: [`fast_path`] answers cached static requests itself and hands the
//!   rest to hyper (header deadline, head size limit) in [`server`], with
//!   [`head_guard`] refusing framing a backend could read differently;
//! - the request's way through the stages and the counters: [`handler`], [`stats`];
//! - routing (pure): path decoding [`path`], the verdict [`route`] over the [`fs`] view; with a
//!   backend, Apache's own verdict on each static URL (probed, remembered, expired): [`verify`];
//! - DataSending: preconditions [`conditional`], ranges [`range`], files [`static_file`],
//!   listings [`directory`] rendered by [`listing`], bodies [`body`]; the content cache [`cache`] with
//!   encodings negotiated by [`negotiate`] and compressed once by [`compress`]; the allocator
//!   tuned and memory given back by [`memory`];
//! - Userspace: request bodies read whole before the backend is asked [`upload`];
//! - errors answered by the front: one type by blame, [`error`], its pages [`pages`];
//! - what both encoders write (the front's own fields, the Date cache): [`wire`];
//! - Logging, once for every answer whichever transport wrote it: [`finish`], the line
//!   [`log_line`] in the combined, JSON or template ([`log_template`]) format of [`access_log`];
//! - `/healthz` and `/metrics` on the loopback admin listener: [`admin`].

pub mod access_log;
pub mod admin;
pub mod body;
pub mod cache;
pub mod compress;
pub mod conditional;
pub mod config;
pub mod control;
pub mod daemon;
pub mod directory;
pub mod embedded;
pub mod error;
pub mod fast_path;
pub mod fast_relay;
pub mod finish;
pub mod fs;
pub mod gzip_proxied;
pub mod handler;
pub mod head_guard;
pub mod header_rules;
pub mod knobs;
pub mod latency;
pub mod listing;
pub mod log_line;
pub mod log_template;
pub mod manager;
pub mod maxconnect;
pub mod memory;
pub mod negotiate;
pub mod pages;
pub mod path;
pub mod privileges;
pub mod range;
pub mod request_id;
pub mod route;
pub mod server;
pub mod service_manager;
pub mod state;
pub mod static_file;
pub mod stats;
pub mod stream;
pub mod tls;
pub mod upload;
pub mod verify;
pub mod wire;

pub use embedded::run;

pub use config::{Args, Config};
