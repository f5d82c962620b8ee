//! kHTTPd's accept and WaitForHeaders stages: a client's connection from accept to its answer's
//! head. Plain or TLS ([`tls`], [`stream`]), the byte-level [`head_guard`], the [`fast_path`] that
//! answers from raw bytes, hyper's service ([`server`], [`handler`]) for the rest, and the wire
//! pieces both encoders share ([`wire`]).

pub(crate) mod fast_path;
pub(crate) mod handler;
pub(crate) mod head_guard;
pub(crate) mod server;
pub(crate) mod stream;
pub(crate) mod tls;
pub(crate) mod wire;
