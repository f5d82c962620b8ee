//! The file-system questions routing asks, behind a trait.
//!
//! Routing is a pure function of the request, the configuration and this view of the file system, so a
//! cache (or a test) can stand in for the disk. [`RealFs`] asks the kernel; it blocks, so callers run
//! it on a blocking thread, never on a runtime thread.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What kind of object a path names (after following symlinks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A FIFO, socket or device: never opened.
    Other,
}

/// The facts about a file that routing and validators need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Meta {
    /// File, directory or other.
    pub kind: Kind,
    /// Permission bits including setuid, setgid and sticky (`st_mode & 0o7777`).
    pub mode: u32,
    /// Size in bytes.
    pub len: u64,
    /// Device, with `ino` the file's identity.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Modification time with nanoseconds.
    pub mtime: SystemTime,
}

impl Meta {
    /// Builds the facts from std's metadata.
    pub(crate) fn from_std(m: &std::fs::Metadata) -> Meta {
        let ft = m.file_type();
        let kind = if ft.is_file() {
            Kind::File
        } else if ft.is_dir() {
            Kind::Dir
        } else {
            debug_assert!(
                ft.is_fifo() || ft.is_socket() || ft.is_block_device() || ft.is_char_device()
            );
            Kind::Other
        };
        let mtime = if m.mtime() >= 0 {
            UNIX_EPOCH
                + Duration::new(
                    m.mtime() as u64,
                    m.mtime_nsec().clamp(0, 999_999_999) as u32,
                )
        } else {
            UNIX_EPOCH
        };
        Meta {
            kind,
            mode: m.mode() & 0o7777,
            len: m.len(),
            dev: m.dev(),
            ino: m.ino(),
            mtime,
        }
    }
}

/// The file-system view routing needs.
pub(crate) trait Fs {
    /// Resolves every symlink and `.` / `..` component (realpath).
    fn canonicalize(&self, path: &Path) -> io::Result<PathBuf>;
    /// Metadata after following symlinks (stat).
    fn stat(&self, path: &Path) -> io::Result<Meta>;
    /// Whether anything exists at `path` without following a final symlink (lstat), for `.htaccess`.
    fn exists(&self, path: &Path) -> bool;
}

/// The kernel's answers. Blocking.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RealFs;

impl Fs for RealFs {
    fn canonicalize(&self, path: &Path) -> io::Result<PathBuf> {
        std::fs::canonicalize(path)
    }

    fn stat(&self, path: &Path) -> io::Result<Meta> {
        std::fs::metadata(path).map(|m| Meta::from_std(&m))
    }

    fn exists(&self, path: &Path) -> bool {
        std::fs::symlink_metadata(path).is_ok()
    }
}
