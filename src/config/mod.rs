//! Configuration: TOML parsing and validation into domain types.

mod model;

pub use model::*;
