//! The HTTP/1.1 wire limits, one set for every parser of the front and the bridge: the head guard
//! and the fast path (client requests), the relay, the verification probe and hyper's client
//! (backend answers). Two parsers of one message that disagree on a limit would let one side
//! accept what the other refuses.

/// The largest response head (status line and fields) accepted from a backend; hyper's client is
/// built with it (`max_header_size`), so the relay and hyper refuse the same heads (502).
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// Most fields in a backend's response head. hyper's client default, kept so its parse stays on
/// the stack; the relay and the probe use the same number.
pub const MAX_RESPONSE_FIELDS: usize = 100;

/// Most fields in a client's request head (hyper's server default: beyond it, 431).
pub const MAX_REQUEST_FIELDS: usize = 100;

/// Most hex digits in a chunk size, leading zeros included: more cannot be a real chunk, and
/// overflows some parsers behind us.
pub const MAX_CHUNK_SIZE_DIGITS: usize = 15;

/// The longest chunk-size line (extensions included) or trailer line accepted.
pub const MAX_CHUNK_LINE: usize = 8 * 1024;
