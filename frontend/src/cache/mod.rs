//! The content cache: file bodies and their compressed variants kept in memory, bounded, shared by
//! every main daemon; the routing verdicts remembered per path.

pub mod compress;
pub mod negotiate;
pub mod store;
