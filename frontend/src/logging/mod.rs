//! kHTTPd's Logging stage: every answer counted and logged once ([`finish`]), one line's facts
//! ([`log_line`]) written in the combined, JSON or template ([`log_template`]) format by the
//! writer off the request path ([`access_log`]).

pub mod access_log;
pub mod finish;
pub mod log_line;
pub mod log_template;
