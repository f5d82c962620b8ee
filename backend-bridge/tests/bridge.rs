//! khttpd-bridge's integration tests: one binary, `Session::forward` driven by a real hyper
//! server (and `Session::relay` by a raw one, for plain GETs), against a real Apache + mod_php and against small fake backends for the faults.
//!
//! The modules live in `tests/bridge/` so cargo does not build each as a test binary of its own.

// Helpers outside #[test] functions unwrap too: in tests a panic is the failure report
// (STYLE.md: unwrap_used, tests exempt).
#![allow(clippy::unwrap_used)]

#[path = "bridge/apache.rs"]
mod apache;
#[path = "bridge/faults.rs"]
mod faults;
#[path = "bridge/relay.rs"]
mod relay;
#[path = "bridge/support.rs"]
mod support;
