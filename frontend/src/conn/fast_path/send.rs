//! The fast path's DataSending: an answer's head and body written to the client, small bodies in
//! one write, large ones by writev or sendfile(2) from a descriptor kept per version.

use std::fs::File;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;

use crate::cache::keys::FileKey;
use crate::conn::head_guard::HeadGuard;
use crate::conn::stream::ClientStream;
use crate::logging::log_line::LogRecord;

/// Bodies up to this size are copied behind the head for one `write`; larger ones go by `writev`.
pub(super) const COPY_BODY: usize = 16 * 1024;

/// One answer decided from a parsed head.
pub(super) struct Answer {
    /// The file itself, for sendfile(2), when the body is its identity bytes, and its version.
    pub(super) file: Option<(Arc<File>, FileKey)>,
    pub(super) started: Instant,
    pub(super) consumed: usize,
    pub(super) keep_alive: bool,
    pub(super) status: u16,
    /// The body in memory; empty when it goes from the file alone (see `len`).
    pub(super) body: Bytes,
    /// The body's length: `body`'s, or the file's when it is sent from disk only.
    pub(super) len: u64,
    pub(super) log: Option<LogRecord>,
}

/// Open files by version, per main daemon (nginx's open_file_cache): sendfile needs a descriptor,
/// and opening on every request would cost three system calls.
const OPEN_FILES: usize = 256;

/// The file at `path` if it is still the version `key` names. Opening an inode routing just
/// stat'ed is a metadata lookup.
pub(super) fn open_version(key: &FileKey, path: &std::path::Path) -> Option<File> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .ok()?;
    let meta = crate::route::fs::Meta::from_std(&f.metadata().ok()?);
    (FileKey::of(&meta) == *key).then_some(f)
}

pub(super) fn open_cached(key: &FileKey, path: &std::path::Path) -> Option<Arc<File>> {
    use std::cell::RefCell;
    use std::collections::HashMap;
    thread_local! {
        static OPEN: RefCell<HashMap<FileKey, Arc<File>>> = RefCell::new(HashMap::new());
    }
    OPEN.with(|open| {
        let mut open = open.borrow_mut();
        if let Some(f) = open.get(key) {
            return Some(f.clone());
        }
        // The version must match, or the body goes from memory instead.
        let f = open_version(key, path)?;
        if open.len() >= OPEN_FILES {
            open.clear();
        }
        let f = Arc::new(f);
        open.insert(*key, f.clone());
        Some(f)
    })
}

/// Writes a whole answer through the stream; over TLS the records are flushed to the socket.
pub(super) async fn write_out<S: ClientStream>(
    io: &mut HeadGuard<S>,
    bytes: &[u8],
) -> io::Result<()> {
    io.write_all(bytes).await?;
    if !S::RAW {
        io.flush().await?;
    }
    Ok(())
}

/// Waits until the socket takes more, for at most the send timeout (slow-read defence for writes
/// that bypass the head guard).
pub(super) async fn writable<S: ClientStream>(io: &HeadGuard<S>) -> io::Result<()> {
    match tokio::time::timeout(io.send_timeout(), io.get_ref().tcp().writable()).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "client stopped reading (send timeout)",
        )),
    }
}

/// Writes the head with MSG_MORE, so the kernel packs it with the sendfile data that follows into
/// full segments instead of sending it alone (nginx's tcp_nopush does the same with TCP_CORK).
pub(super) async fn send_more<S: ClientStream>(
    io: &HeadGuard<S>,
    mut head: &[u8],
) -> io::Result<()> {
    let stream = io.get_ref().tcp();
    // Send first and wait only when the socket is full: waiting first would arm a send timer for
    // every answer, though the socket nearly always has room.
    while !head.is_empty() {
        let sent = stream.try_io(tokio::io::Interest::WRITABLE, || {
            socket2::SockRef::from(stream).send_with_flags(head, libc::MSG_MORE)
        });
        match sent {
            Ok(n) => head = &head[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => writable(io).await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// sendfile(2) of the first `len` bytes of the version `key`, waiting for the socket as needed.
/// A file that shrank ends the connection (the head promised `len` bytes). So does one rewritten
/// meanwhile: the last byte goes only after the file's version is checked again, so a file
/// truncated and refilled (NUL bytes) or rewritten (old and new bytes mixed) never ends as a
/// complete answer under the old validators; the client sees a short body, as after nginx's "file
/// was truncated".
pub(super) async fn send_file<S: ClientStream>(
    io: &HeadGuard<S>,
    file: &File,
    len: u64,
    key: &FileKey,
) -> io::Result<()> {
    let end = i64::try_from(len).map_err(|_| io::Error::other("file too large"))?;
    if end == 0 {
        return Ok(());
    }
    send_range(io, file, 0, end - 1).await?;
    let now = FileKey::of(&crate::route::fs::Meta::from_std(&file.metadata()?));
    if now != *key {
        return Err(io::Error::other("file changed while being sent"));
    }
    send_range(io, file, end - 1, end).await
}

/// sendfile(2) of the bytes `offset..end`.
pub(super) async fn send_range<S: ClientStream>(
    io: &HeadGuard<S>,
    file: &File,
    mut offset: i64,
    end: i64,
) -> io::Result<()> {
    let stream = io.get_ref().tcp();
    while offset < end {
        let want = (end - offset) as usize;
        let sent = stream.try_io(tokio::io::Interest::WRITABLE, || {
            nix::sys::sendfile::sendfile(stream, file, Some(&mut offset), want)
                .map_err(io::Error::from)
        });
        match sent {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file shrank while being sent",
                ))
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => writable(io).await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
