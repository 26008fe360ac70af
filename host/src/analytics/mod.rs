//! Analytics: events from the platform's services taken in, each checked on its own ([`events`]), what AI usage
//! costs ([`cost`]), the answers over the stored events ([`answers`]: active users, engagement, satisfaction,
//! retention and AI cost against the budget), and their SQL ([`store`]).

pub mod answers;
pub mod cost;
pub mod events;
pub mod store;
