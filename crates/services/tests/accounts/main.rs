//! The services suite. Every test body runs twice: against SQLite in a
//! temp dir and against a real PostgreSQL (its own fresh database on the
//! server `DATAMESH_TEST_POSTGRES` names). Without that variable the
//! PostgreSQL cases print a loud skip, unless `DATAMESH_REQUIRE_POSTGRES=1`
//! (as `scripts/test` sets), where they fail.

mod common;

mod audit;
mod bad_input;
mod concurrency;
mod enckeys;
mod figures;
mod keylogin;
mod keys;
mod migrations;
mod perms;
mod quota;
mod ratelimit;
mod sessions;
mod shared;
mod users;
