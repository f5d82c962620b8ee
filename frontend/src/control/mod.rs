//! Run-time control: the control socket of `khttpd-ctl` (kHTTPd's /proc/sys/net/khttpd) and the
//! loopback admin listener (`/healthz`, `/metrics`).

pub mod admin;
pub mod socket;
