//! `cerebros-bridge serve` (DESIGN §11) as a client sees it: a real server process on
//! an ephemeral loopback port, real runs (iris through `tests/fixtures/nas_fixture.py`),
//! a real HTTP client. `api`: every route and every error status; `access`: the token
//! and the cross-site checks; `queue`: order, concurrency and `runs submit`; `events`:
//! the SSE streams; `crash`: `kill -9` and restart; `browser`: the live page in headless
//! Chromium.

#[path = "../common/mod.rs"]
mod common;
mod harness;

mod access;
mod api;
mod browser;
mod crash;
mod events;
mod queue;
