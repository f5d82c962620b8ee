//! khttpd-bridge: carries the front's dynamic and unknown requests to a userspace backend.
//!
//! kHTTPd put the live client socket into the accept queue of the server on `clientport`. We carry
//! the request over HTTP/1.1 instead; this crate holds what that needs. It starts with the header
//! rules every proxy hop must apply: RFC 9110 §7.6.1 hop-by-hop fields never cross a proxy.

pub mod hop;
