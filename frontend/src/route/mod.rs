//! Routing: what a URL means. The path decoded ([`path`]), the verdict decided as a pure function
//! over a file-system view ([`decide`], [`fs`]), and Apache's own verdict on each static URL the
//! front would serve ([`verify`]).

pub mod decide;
pub mod fs;
pub mod path;
pub mod verify;
