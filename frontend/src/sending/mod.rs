//! kHTTPd's DataSending stage for what the front serves itself: preconditions
//! ([`conditional`]), ranges ([`range`]), files ([`static_file`]), listings ([`directory`],
//! [`listing`]), bodies ([`body`]) and the operator's header rules ([`header_rules`]).

pub mod body;
pub mod conditional;
pub mod directory;
pub mod header_rules;
pub mod listing;
pub mod range;
pub mod static_file;
