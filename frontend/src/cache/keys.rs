//! What the cache keys file bodies and listings on: a file's version, a listing's directory
//! version, format and displayed path.

use std::time::SystemTime;

use crate::route::fs::Meta;

/// A file version: the strong validator the cache keys bodies on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct FileKey {
    /// Device.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Size in bytes.
    pub len: u64,
    /// Modification time with nanoseconds.
    pub mtime: SystemTime,
}

impl FileKey {
    /// The version of the file `meta` describes.
    pub(crate) fn of(meta: &Meta) -> FileKey {
        FileKey {
            dev: meta.dev,
            ino: meta.ino,
            len: meta.len,
            mtime: meta.mtime,
        }
    }
}

/// Which rendering of a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ListingFormat {
    /// `text/html`.
    Html,
    /// `application/json`.
    Json,
}

/// A rendered listing: the directory's version, the format and the path shown in the page.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ListingKey {
    /// Directory device.
    pub dev: u64,
    /// Directory inode.
    pub ino: u64,
    /// Directory mtime (changes when an entry is added, removed or renamed).
    pub mtime: SystemTime,
    /// HTML or JSON.
    pub format: ListingFormat,
    /// The request path shown in the page (two URLs may reach one directory).
    pub display: String,
    /// The column and direction it is sorted by.
    pub order: crate::sending::listing::Order,
}

impl ListingKey {
    /// The key of `format` for the directory `meta` describes, shown as `display`.
    pub(crate) fn of(meta: &Meta, format: ListingFormat, display: &str) -> ListingKey {
        ListingKey {
            dev: meta.dev,
            ino: meta.ino,
            mtime: meta.mtime,
            format,
            display: display.to_owned(),
            order: crate::sending::listing::Order::default(),
        }
    }
}
