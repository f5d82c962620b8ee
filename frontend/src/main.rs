//! The `khttpd-front` binary: flags, validated config, listeners, then the library does the rest.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use khttpd_front::config::{Args, Config, EX_USAGE};
use khttpd_front::daemon;

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let usage = e.use_stderr();
            let _ = e.print();
            return if usage {
                ExitCode::from(EX_USAGE as u8)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KHTTPD_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    let config = match Config::try_from(args) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("khttpd-front: {e}");
            return ExitCode::from(EX_USAGE as u8);
        }
    };
    // Every connection is a descriptor: take the whole hard limit, as nginx's worker_rlimit_nofile does.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(limit = n, "open-files limit raised"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-files limit"),
    }
    let listeners = match daemon::bind(&config) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("khttpd-front: {e}");
            return ExitCode::FAILURE;
        }
    };
    let addr = listeners
        .first()
        .and_then(|l| l.local_addr().ok())
        .unwrap_or(config.listen);
    println!("listening on {addr}");
    let _ = std::io::stdout().flush();
    tracing::info!(%addr, daemons = config.threads, root = %config.root.display(), "khttpd-front started");
    match khttpd_front::run(listeners, config, shutdown_signal()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("khttpd-front: {e}");
            ExitCode::FAILURE
        }
    }
}

/// SIGTERM or SIGINT: stop accepting and drain, as `khttpd-ctl unload` will.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: draining"),
        _ = int.recv() => tracing::info!("SIGINT: draining"),
    }
}
