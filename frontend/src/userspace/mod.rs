//! kHTTPd's Userspace stage: the hand-off to the backend. Request bodies read whole first
//! ([`upload`]), plain GET/HEAD relayed without hyper ([`relay`]), backend text compressed on its
//! way ([`gzip_proxied`]), request ids ([`request_id`]).

pub(crate) mod gzip_proxied;
pub(crate) mod relay;
pub(crate) mod request_id;
pub(crate) mod upload;
