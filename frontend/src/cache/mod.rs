//! The content cache: file bodies and their compressed variants kept in memory under one byte
//! budget, shared by every main daemon, with the routing verdicts remembered per path. The map
//! and its weights ([`map`]), what it keys on ([`keys`]) and holds ([`representation`]), its
//! limits ([`limits`]); the cache itself ([`store`]), its variant selection ([`variants`]) over
//! [`negotiate`] and [`compress`], and the verdict cache ([`verdicts`]).

pub mod compress;
pub mod keys;
pub mod limits;
pub mod map;
pub mod negotiate;
pub mod representation;
pub mod store;
pub mod variants;
pub mod verdicts;

#[cfg(test)]
mod tests;
