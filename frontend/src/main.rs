//! The `khttpd-front` binary: the command line and config file into a validated configuration, then
//! the management daemon ([`khttpd_front::daemon::manager`]) does the rest.

use std::io::IsTerminal;
use std::process::ExitCode;

use khttpd_front::config::knobs::{LoadError, Settings};
use khttpd_front::config::EX_USAGE;
use khttpd_front::daemon::manager;

fn main() -> ExitCode {
    khttpd_front::daemon::memory::tune_allocator();
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
    if args.check_config {
        return check_config(&args);
    }
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

/// `--check-config` / `-t`: the configuration loaded and validated as at start; print it as the
/// config file's keys and exit, binding nothing.
fn check_config(args: &khttpd_front::Args) -> ExitCode {
    let Ok(serde_json::Value::Object(all)) = serde_json::to_value(args) else {
        eprintln!("khttpd-front: the configuration cannot be shown");
        return ExitCode::FAILURE;
    };
    let mut out = String::from("# khttpd-front: the configuration is valid; in effect:\n");
    for (key, value) in all {
        if key == "check_config" {
            continue;
        }
        let key = key.replace('_', "-");
        let shown = match (key.as_str(), &value) {
            ("perm-required", v) | ("perm-forbid", v) => {
                format!("\"{:o}\"", v.as_u64().unwrap_or(0))
            }
            (_, serde_json::Value::Null) => continue,
            (_, v) => v.to_string(),
        };
        out.push_str(&format!("{key} = {shown}\n"));
    }
    print!("{out}");
    ExitCode::SUCCESS
}
