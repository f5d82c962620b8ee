//! kHTTPd's Logging stage: every answer counted and logged once ([`finish`]), one line's facts
//! ([`log_line`]) in the combined, JSON or template ([`log_template`]) format ([`format`]), queued
//! by the handle the daemons hold ([`access_log`]) for the writer thread off the request path
//! ([`writer`]).

pub(crate) mod access_log;
pub(crate) mod finish;
pub(crate) mod format;
pub(crate) mod log_line;
pub(crate) mod log_template;
pub(crate) mod writer;
