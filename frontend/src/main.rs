//! The `khttpd-front` binary: the command line and config file into a validated configuration, then
//! the management daemon ([`khttpd_front::manager`]) does the rest.

use std::io::IsTerminal;
use std::process::ExitCode;

use khttpd_front::config::EX_USAGE;
use khttpd_front::knobs::{LoadError, Settings};
use khttpd_front::manager;

fn main() -> ExitCode {
    let settings = Settings::new(std::env::args_os().collect());
    let (args, config) = match settings.load() {
        Ok(v) => v,
        Err(LoadError::Usage(e)) => {
            let usage = e.use_stderr();
            let _ = e.print();
            return if usage {
                ExitCode::from(EX_USAGE as u8)
            } else {
                ExitCode::SUCCESS
            };
        }
        Err(e) => {
            eprintln!("khttpd-front: {e}");
            return ExitCode::from(EX_USAGE as u8);
        }
    };
    // Colour only for a person at a terminal: journald and `docker logs` would show the escape codes.
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KHTTPD_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    // Every connection is a descriptor: take the whole hard limit, as nginx's worker_rlimit_nofile does.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(limit = n, "open-files limit raised"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-files limit"),
    }
    match manager::run(settings, args, config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("khttpd-front: {e}");
            ExitCode::FAILURE
        }
    }
}
