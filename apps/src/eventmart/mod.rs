//! EventMart on brook: the platform from the seeds, declared on brook's DSL.
//!
//! - [`topics`]: the topics from one declarative file, created and verified.
//! - [`generator`]: shoppers' sessions and carts, and the order, payment,
//!   user and product lifecycles they start.
//! - [`apps`]: the applications (analytics, order analytics, notifications,
//!   audit, the lake), each a topology.

pub mod apps;
pub mod generator;
pub mod topics;
