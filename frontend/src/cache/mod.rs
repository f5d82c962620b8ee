//! The content cache: file bodies and their compressed variants kept in memory under one byte
//! budget, shared by every main daemon, with the routing verdicts remembered per path. The map
//! and its weights ([`map`]), what it keys on ([`keys`]) and holds ([`representation`]), its
//! limits ([`limits`]); the cache itself ([`store`]), its variant selection ([`variants`]) over
//! [`negotiate`] and [`compress`], and the verdict cache ([`verdicts`]).

pub(crate) mod compress;
pub(crate) mod keys;
pub(crate) mod limits;
pub(crate) mod map;
pub(crate) mod negotiate;
pub(crate) mod representation;
pub(crate) mod store;
pub(crate) mod variants;
pub(crate) mod verdicts;

#[cfg(test)]
mod tests;
