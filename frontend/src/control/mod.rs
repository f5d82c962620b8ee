//! Run-time control: the control socket of `khttpd-ctl` (kHTTPd's /proc/sys/net/khttpd), its
//! [`protocol`], the management daemon's [`server`] and the [`client`]; and the loopback admin
//! listener ([`admin`]: `/healthz`, `/metrics`).

pub(crate) mod admin;
pub mod client;
pub mod protocol;
pub(crate) mod server;

#[cfg(test)]
mod tests;
