//! Locating (and if needed building) the workspace's binaries under test.
//!
//! This crate deliberately does not depend on the `khttpd-front` crate, so
//! `cargo test -p khttpd-tests` does not build the binary by itself. To never
//! test a stale binary, the first lookup of each name in a test process runs
//! `cargo build --bin NAME` into the same target directory and profile as
//! the running test executable (a no-op build takes well under a second).
//! Setting `KHTTPD_FRONT_BIN` (generally the name upper-cased, `-` → `_`,
//! plus `_BIN`: `KHTTPD_CTL_BIN` for `khttpd-ctl`) skips all of that.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// The path of the workspace binary `name` (e.g. `"khttpd-front"`,
/// `"khttpd-ctl"`), built on first use. Panics with cargo's output when the
/// build fails, since no test of that binary can mean anything then.
pub fn binary(name: &str) -> PathBuf {
    static CACHE: OnceLock<Mutex<HashMap<String, Result<PathBuf, String>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    // Holding the lock across the build makes parallel tests wait for one
    // build instead of racing several cargo processes.
    let mut cache = cache
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let found = cache
        .entry(name.to_owned())
        .or_insert_with(|| locate(name))
        .clone();
    match found {
        Ok(path) => path,
        Err(why) => panic!("cannot provide binary {name}: {why}"),
    }
}

/// `khttpd-front` → `KHTTPD_FRONT_BIN`.
fn env_var_name(name: &str) -> String {
    format!("{}_BIN", name.to_uppercase().replace('-', "_"))
}

fn locate(name: &str) -> Result<PathBuf, String> {
    let var = env_var_name(name);
    if let Some(path) = std::env::var_os(&var) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("{var}={} is not a file", path.display()))
        };
    }
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let profile_dir = profile_dir(&exe)?;
    build(name, &profile_dir)?;
    let path = profile_dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "cargo built successfully but {} does not exist",
            path.display()
        ))
    }
}

/// `target/<profile>/deps/e2e-xxxx` → `target/<profile>` (unit tests of
/// the library live in `deps/` too; a test binary outside `deps/` is taken
/// to sit in the profile directory directly).
fn profile_dir(exe: &Path) -> Result<PathBuf, String> {
    let dir = exe
        .parent()
        .ok_or_else(|| format!("{} has no parent directory", exe.display()))?;
    let dir = if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent()
            .ok_or_else(|| format!("{} has no parent directory", dir.display()))?
    } else {
        dir
    };
    Ok(dir.to_path_buf())
}

/// Builds `name` into the target directory and profile that `profile_dir`
/// belongs to, so the binary matches the test executable's build.
fn build(name: &str, profile_dir: &Path) -> Result<(), String> {
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("odd profile directory {}", profile_dir.display()))?;
    let target_dir = profile_dir
        .parent()
        .ok_or_else(|| format!("{} has no parent directory", profile_dir.display()))?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(crate::repo_root())
        .args(["build", "--quiet", "--bin", name, "--target-dir"])
        .arg(target_dir);
    // Cargo names the dev profile's directory "debug"; every other profile
    // directory is named after the profile itself.
    match profile {
        "debug" => {}
        "release" => {
            command.arg("--release");
        }
        other => {
            command.args(["--profile", other]);
        }
    }
    let output = command
        .output()
        .map_err(|e| format!("running cargo build: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`cargo build --bin {name}` failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_var_names() {
        assert_eq!(env_var_name("khttpd-front"), "KHTTPD_FRONT_BIN");
        assert_eq!(env_var_name("khttpd-ctl"), "KHTTPD_CTL_BIN");
    }

    #[test]
    fn profile_dir_strips_deps() {
        let dir = profile_dir(Path::new("/t/target/release/deps/e2e-0123")).unwrap();
        assert_eq!(dir, Path::new("/t/target/release"));
        let dir = profile_dir(Path::new("/t/target/debug/e2e")).unwrap();
        assert_eq!(dir, Path::new("/t/target/debug"));
    }
}
