//! kHTTPd's DataSending stage for what the front serves itself: preconditions
//! ([`conditional`]), ranges ([`range`]), files ([`static_file`]), listings ([`directory`],
//! [`listing`]), bodies ([`body`]) and the operator's header rules ([`header_rules`]).

pub(crate) mod body;
pub(crate) mod conditional;
pub(crate) mod directory;
pub(crate) mod head;
pub(crate) mod header_rules;
pub(crate) mod listing;
pub(crate) mod range;
pub(crate) mod static_file;
