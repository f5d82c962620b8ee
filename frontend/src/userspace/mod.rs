//! kHTTPd's Userspace stage: the hand-off to the backend. Request bodies read whole first
//! ([`upload`]), plain GET/HEAD relayed without hyper ([`relay`]), backend text compressed on its
//! way ([`gzip_proxied`]), request ids ([`request_id`]).

pub mod gzip_proxied;
pub mod relay;
pub mod request_id;
pub mod upload;
