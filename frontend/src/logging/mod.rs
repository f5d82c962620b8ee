//! kHTTPd's Logging stage: every answer counted and logged once ([`finish`]), one line's facts
//! ([`log_line`]) in the combined, JSON or template ([`log_template`]) format ([`format`]), queued
//! by the handle the daemons hold ([`access_log`]) for the writer thread off the request path
//! ([`writer`]).

pub mod access_log;
pub mod finish;
pub mod format;
pub mod log_line;
pub mod log_template;
pub mod writer;
