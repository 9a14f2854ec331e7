//! `cerebros-bridge serve` (DESIGN §11): the HTTP front door.

pub mod metrics;
