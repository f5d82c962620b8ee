//! The one end-to-end test binary: real binaries, real sockets, a real
//! Apache 2.4 + mod_php. One binary (not one per file) so the harness is
//! compiled once and all tests share one parallel test runner.
//!
//! The test modules live in `tests/e2e/`, not directly in `tests/`: cargo
//! would build every `tests/*.rs` as a test binary of its own and run each
//! test twice.

// Test helpers outside #[test] functions may unwrap too: a panic is the failure report.
#![allow(clippy::unwrap_used)]

/// Runs each named test, a function taking a [`khttpd_tests::Proto`], once over HTTP/1.1 and once
/// over HTTP/2 (issue 18: the same suite, not a copy): `name::h1` and `name::h2`.
macro_rules! over_h1_and_h2 {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn h1() {
                super::$name(khttpd_tests::Proto::H1)
            }
            #[test]
            fn h2() {
                super::$name(khttpd_tests::Proto::H2)
            }
        }
    )*};
}

#[path = "e2e/apache_harness.rs"]
mod apache_harness;
#[path = "e2e/applications.rs"]
mod applications;
#[path = "e2e/backend.rs"]
mod backend;
#[path = "e2e/compression.rs"]
mod compression;
#[path = "e2e/control.rs"]
mod control;
#[path = "e2e/differential.rs"]
mod differential;
#[path = "e2e/docker.rs"]
mod docker;
#[path = "e2e/layout.rs"]
mod layout;
#[path = "e2e/limits.rs"]
mod limits;
#[path = "e2e/logging.rs"]
mod logging;
#[path = "e2e/readme.rs"]
mod readme;
#[path = "e2e/service.rs"]
mod service;
#[path = "e2e/site.rs"]
mod site;
#[path = "e2e/static_files.rs"]
mod static_files;
#[path = "e2e/tls.rs"]
mod tls;
#[path = "e2e/verification.rs"]
mod verification;
#[path = "e2e/wire.rs"]
mod wire;
