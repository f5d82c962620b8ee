//! khttpd-front: a userspace re-creation of Linux 2.4 kHTTPd as a modern front server.
//!
//! The folders follow kHTTPd's structure, one request's way from top to bottom:
//! - [`config`]: flags, environment and file, validated into one [`Config`]; the run-time knobs;
//! - [`daemon`]: the management daemon, one main daemon per core (thread, runtime, `SO_REUSEPORT`
//!   listener), maxconnect, the shared state and the per-stage counters, the library entry [`run`];
//! - [`conn`]: accept and **WaitForHeaders**: TLS, the head guard, the fast path that answers
//!   cached static requests from raw bytes, and hyper's service for everything else;
//! - [`route`]: the routing verdict (pure, over a file-system view) and Apache's own verdict on
//!   each static URL (verification);
//! - [`sending`]: **DataSending**: preconditions, ranges, files, listings, bodies, header rules;
//! - [`cache`]: the content cache, its variants negotiated and compressed once, the verdict cache;
//! - [`userspace`]: **Userspace**, the hand-off to the backend: request bodies read first, the raw
//!   relay, backend text compressed on the way, request ids;
//! - [`logging`]: **Logging**, once for every answer whichever transport wrote it;
//! - [`control`]: the control socket `khttpd-ctl` talks to, and the admin listener (`/metrics`,
//!   `/healthz`);
//! - [`error`] and [`pages`]: the one error type by blame and the pages it maps to.

pub(crate) mod cache;
pub mod config;
pub(crate) mod conn;
pub mod control;
pub mod daemon;
pub(crate) mod error;
pub(crate) mod logging;
pub(crate) mod pages;
pub(crate) mod route;
pub(crate) mod sending;
pub(crate) mod userspace;

pub use daemon::embedded::run;

pub use config::args::Args;
pub use config::Config;
