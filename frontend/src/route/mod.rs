//! Routing: what a URL means. The path decoded ([`path`]), the verdict decided as a pure function
//! over a file-system view ([`decide`], [`fs`]), and Apache's own verdict on each static URL the
//! front would serve ([`verify`]).

pub(crate) mod decide;
pub(crate) mod fs;
pub(crate) mod path;
pub(crate) mod verify;
