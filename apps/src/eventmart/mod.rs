//! EventMart on brook: the platform from the seeds, declared on brook's DSL.
//!
//! - [`topics`]: the topics from one declarative file, created and verified.
//! - [`generator`]: shoppers' sessions and carts, and the order, payment,
//!   user and product lifecycles they start.
//! - [`apps`]: the applications (analytics, order analytics, notifications,
//!   audit, the lake), each a topology.
//! - [`dashboard`]: the live page and JSON API over the apps' stores.
//! - [`run`]: the `eventmart` binary that runs them.
//! - [`demo`]: `make demo` — everything in one process on the
//!   [`embedded`] broker, watched live.
//! - [`generate`]: the `eventmart-generator` binary (rate, duration, count,
//!   progress).

pub mod apps;
pub mod dashboard;
pub mod demo;
pub mod embedded;
pub mod generate;
pub mod generator;
pub mod run;
pub mod topics;
