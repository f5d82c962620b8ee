//! A pooled backend connection: the stream and what was read from it. The relay reads answers
//! into it; hyper's client borrows the stream alone ([`RawConn::into_stream`]).

use std::io;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::time::{timeout_at, Instant};

use crate::addr::BackendStream;
use crate::pool::Reusable;

/// Bytes read from the backend at a time, and the start size of a connection's buffer.
const READ_CHUNK: usize = 16 * 1024;

/// A raw keep-alive connection to a backend and its read buffer.
#[derive(Debug)]
pub(crate) struct RawConn {
    pub(crate) stream: BackendStream,
    /// What was read from it and not yet taken.
    pub(crate) buf: BytesMut,
}

impl RawConn {
    pub(crate) fn new(stream: BackendStream) -> RawConn {
        RawConn {
            stream,
            buf: BytesMut::with_capacity(READ_CHUNK),
        }
    }

    /// The stream, for hyper's client to borrow (a pooled connection has nothing buffered).
    pub(crate) fn into_stream(self) -> BackendStream {
        self.stream
    }

    /// Reads more of the answer, within `deadline`.
    pub(crate) async fn read_more(&mut self, deadline: Instant) -> Result<usize, ReadFailure> {
        self.buf.reserve(READ_CHUNK);
        match timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(e)) => Err(ReadFailure::Io(e)),
            Err(_) => Err(ReadFailure::Timeout),
        }
    }
}

impl Reusable for RawConn {
    fn alive(&self) -> bool {
        self.buf.is_empty() && crate::pool::socket_is_quiet(&socket2::SockRef::from(&self.stream))
    }
}

pub(crate) enum ReadFailure {
    Io(io::Error),
    Timeout,
}
