//! Configuration: TOML parsing and validation into domain types.
//!
//! Two steps, both pure functions of the text: `raw` deserializes the TOML
//! into serde structs that keep spans, `validate` checks them and builds the
//! domain types in `model`. Errors carry `file:line:column: key`; validation
//! goes on past a mistake, so one error lists every mistake it found.

mod error;
mod model;
mod raw;
mod summary;
mod validate;
mod values;

#[cfg(test)]
mod error_tests;
#[cfg(test)]
mod key_coverage;
#[cfg(test)]
mod syntax_tests;
#[cfg(test)]
mod tests;

use std::path::Path;

pub use error::ConfigError;
pub use model::*;

/// Parses and validates a config document. `file` is only used in error messages.
pub fn parse(source: &str, file: &Path) -> Result<Config, ConfigError> {
    let raw = raw::from_str(source).map_err(|e| ConfigError::from_toml(file, source, &e))?;
    validate::validate(raw, source, file)
}

/// Reads `path` and calls [`parse`]; an unreadable file is a [`ConfigError`] without a position.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let source = std::fs::read_to_string(path).map_err(|e| ConfigError::io(path, e))?;
    parse(&source, path)
}
