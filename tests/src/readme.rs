//! The README's promise to a newcomer, read from README.md itself: its first code block holds exactly
//! two commands, one that serves the sample site and one that runs the whole test suite.
//!
//! The contract tests (`tests/e2e/readme.rs`) run these lines verbatim, so editing the README changes
//! what is tested and a README that stops working fails CI.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The two commands of the README's first code block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuickStart {
    /// Serves `www/` (the whole line, comment included, as a user would paste it).
    pub serve: String,
    /// Runs the whole test suite.
    pub test: String,
}

/// Reads the first fenced code block of `readme` and splits it into its two command lines.
pub fn quick_start(readme: &str) -> Result<QuickStart, String> {
    let mut lines = readme.lines();
    lines
        .by_ref()
        .find(|line| line.trim_start().starts_with("```"))
        .ok_or("README.md has no code block")?;
    let commands: Vec<&str> = lines
        .take_while(|line| !line.trim_start().starts_with("```"))
        .filter(|line| !line.trim().is_empty())
        .collect();
    match commands.as_slice() {
        [serve, test] => Ok(QuickStart {
            serve: (*serve).to_owned(),
            test: (*test).to_owned(),
        }),
        other => Err(format!(
            "the README's first code block must hold exactly two commands, it holds {}: {other:?}",
            other.len()
        )),
    }
}

/// A command line without its trailing `# comment` (for comparing commands, not for running them).
pub fn without_comment(line: &str) -> &str {
    line.split(" #").next().unwrap_or(line).trim()
}

/// The files a fresh clone has: what git tracks (staged or committed), or, outside a git checkout,
/// every file but `target/` and `.git/`.
pub fn tracked_files(repo: &Path) -> Vec<PathBuf> {
    let listed = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["ls-files", "-z"])
        .output()
        .ok()
        .filter(|out| out.status.success() && !out.stdout.is_empty());
    match listed {
        Some(out) => out
            .stdout
            .split(|&b| b == 0)
            .filter(|name| !name.is_empty())
            .map(|name| PathBuf::from(String::from_utf8_lossy(name).into_owned()))
            // A file deleted in the work tree but still in the index is not in a fresh clone's
            // future either; skip it rather than fail the copy.
            .filter(|rel| repo.join(rel).symlink_metadata().is_ok())
            .collect(),
        None => {
            let mut files = Vec::new();
            walk(repo, Path::new(""), &mut files);
            files
        }
    }
}

fn walk(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(root.join(rel)) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        if rel.as_os_str().is_empty() && (name == "target" || name == ".git") {
            continue;
        }
        let path = rel.join(&name);
        match entry.file_type() {
            Ok(t) if t.is_dir() => walk(root, &path, out),
            Ok(_) => out.push(path),
            Err(_) => {}
        }
    }
}

/// Copies `files` (relative to `from`) into `to`, keeping modes and symlinks as they are.
pub fn copy_files(from: &Path, to: &Path, files: &[PathBuf]) {
    for rel in files {
        let src = from.join(rel);
        let dest = to.join(rel);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("creating {}: {e}", parent.display()));
        }
        let meta = src
            .symlink_metadata()
            .unwrap_or_else(|e| panic!("{}: {e}", src.display()));
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&src)
                .unwrap_or_else(|e| panic!("reading link {}: {e}", src.display()));
            std::os::unix::fs::symlink(target, &dest)
                .unwrap_or_else(|e| panic!("linking {}: {e}", dest.display()));
        } else {
            std::fs::copy(&src, &dest).unwrap_or_else(|e| panic!("copying {}: {e}", src.display()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_code_block_gives_the_two_commands() {
        let readme = "# x\n\ntext\n\n```sh\ncargo run -- --port 8080   # serve\n\nbash scripts/test  # test\n```\n\n```sh\nother\n```\n";
        let q = quick_start(readme).unwrap();
        assert_eq!(q.serve, "cargo run -- --port 8080   # serve");
        assert_eq!(without_comment(&q.serve), "cargo run -- --port 8080");
        assert_eq!(without_comment(&q.test), "bash scripts/test");
    }

    #[test]
    fn a_third_command_or_no_block_is_refused() {
        assert!(quick_start("```\na\nb\nc\n```\n").is_err());
        assert!(quick_start("```\na\n```\n").is_err());
        assert!(quick_start("no block at all\n").is_err());
    }
}
