//! Strata's cross-crate integration tests and repository checks.
//!
//! The tests live in `tests/tests/`: the crate graph rules of
//! `ARCHITECTURE.md`, and end-to-end runs of session nodes across real
//! transports on loopback. `tests/interop/` holds the JavaScript harness
//! that talks to third-party clients. This library is intentionally empty.
