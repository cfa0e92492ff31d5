//! DataMesh services: the layer that knows **who** is asking and what they
//! may do. Accounts, API and S3 keys, permissions, quotas and tiers, rate
//! limits, the audit log, storage economics and governance live here, over
//! SQL (SQLite in the data dir by default, PostgreSQL when configured).
//!
//! The crate is empty for now: it is the place those layers are built in,
//! with its rules fixed before the first line of them.
//!
//! **Architecture invariant:** services know SQL and business rules, and
//! never the network or the store: this crate depends on `datamesh-core`
//! (vocabulary) and on database crates, never on `datamesh-net`,
//! `datamesh-store`, `datamesh-node`, libp2p or an HTTP server. A service
//! answers questions ("may this principal delete this object?", "does this
//! put fit the user's quota?") and records facts ("this key was revoked");
//! the gateway asks it before it calls the node, so the node never knows
//! SQL and never sees a user.
//!
//! **Architecture invariant:** the node never knows SQL: `datamesh-node`
//! and the crates below it depend on no SQL driver and not on this crate.
//! Both rules are checked by `tests/layering.rs` over every crate's
//! `Cargo.toml`.
