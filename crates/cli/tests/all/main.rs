//! The `warden` binary's integration tests: one test binary (one link), a module per concept,
//! as the library's `crates/warden/tests/all` and wasmtime's `tests/all/main.rs`. Every test
//! drives the built binary as a user would. Run one concept with
//! `cargo test -p warden-cli --test all -- serve::`.
//!
//! Shared helpers (spawning `warden`, scratch files, waits on output, a port or a state, each
//! with a deadline) are in `common`; guests too long to read inline are `.wat` files in
//! `fixtures/`, which `warden` reads as they are (`common::fixture`).

mod common;

/// Every input bounded, every exit code exact (issue #16).
mod bounds;
/// `warden run` with component guests: preview2 commands, typed `--invoke` in WAVE.
mod components;
/// `warden demo`: friendly and hostile requests against `warden serve`.
mod demo;
/// WASI calls that block in the host end at the deadline and at a signal (issue #10).
mod host_calls;
/// `warden policy check|show|explain` and `warden run --policy`.
mod policy;
/// `warden run`: outcomes, exit codes, events, grants, bad input.
mod run;
/// The guest SDKs: the C SDK end to end (needs Debian's clang), the WIT package.
mod sdk;
/// `warden serve`: routes, admission, reuse, quarantine, versions, the admin port, the drain.
mod serve;
/// How `warden run` ends: the orderly exit, background calls, SIGTERM/SIGINT.
mod signals;
/// `warden run --repeat N --handles H`: the soak aid.
mod soak;
/// `warden stress`: seeded runs, injected leaks and their replay, failpoints.
mod stress;
/// WASI grants: `--dir`, `--dir-ro`, `--env`, stdin.
mod wasi;
