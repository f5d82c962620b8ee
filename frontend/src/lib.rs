//! khttpd-front: a userspace re-creation of Linux 2.4 kHTTPd as a modern front server.
//!
//! The pipeline of one request and where each step lives:
//! - configuration and flags: [`config`];
//! - main daemons (one thread, runtime and `SO_REUSEPORT` listener per core): [`daemon`];
//! - accept and WaitForHeaders (hyper, header deadline, head size limit): [`server`], with
//!   [`head_guard`] refusing framing a backend could read differently;
//! - the request's way through the stages and the counters: [`handler`], [`stats`];
//! - routing (pure): path decoding [`path`], the verdict [`route`] over the [`fs`] view;
//! - DataSending: preconditions [`conditional`], ranges [`range`], files [`static_file`],
//!   listings [`directory`] rendered by [`listing`], bodies [`body`];
//! - errors answered by the front: [`pages`].

pub mod body;
pub mod conditional;
pub mod config;
pub mod daemon;
pub mod directory;
pub mod fs;
pub mod handler;
pub mod head_guard;
pub mod listing;
pub mod pages;
pub mod path;
pub mod range;
pub mod route;
pub mod server;
pub mod static_file;
pub mod stats;

use std::future::Future;
use std::net::TcpListener;
use std::sync::Arc;

pub use config::{Args, Config};

/// Serves on `listeners` (one main daemon each) until `shutdown` completes, then drains.
pub fn run(
    listeners: Vec<TcpListener>,
    config: Arc<Config>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let daemons = daemon::start(listeners, config)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(shutdown);
    daemons.stop();
    Ok(())
}
