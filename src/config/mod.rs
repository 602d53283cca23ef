//! Configuration: TOML parsing and validation into domain types.
//!
//! Two steps, both pure functions of the text: `raw` deserializes the TOML
//! into serde structs that keep spans, `validate` checks them and builds the
//! domain types in `model`. Errors carry `file:line:column: key`; validation
//! goes on past a mistake, so one error lists every mistake it found.

mod dns;
mod error;
mod header_rules;
mod model;
mod raw;
mod summary;
mod validate;
mod values;

#[cfg(test)]
mod credential_tests;
#[cfg(test)]
mod error_tests;
#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod key_coverage;
#[cfg(test)]
mod syntax_tests;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

pub use error::ConfigError;
pub use model::*;

/// Parses and validates a config document. `file` is only used in error messages.
///
/// Certificate paths that start with `${CREDENTIALS_DIRECTORY}/` are read from
/// the folder that variable names (set by systemd for `LoadCredential=`).
pub fn parse(source: &str, file: &Path) -> Result<Config, ConfigError> {
    let credentials = std::env::var_os("CREDENTIALS_DIRECTORY")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from);
    parse_with(source, file, credentials.as_deref())
}

/// [`parse`] with systemd's credentials folder given rather than read from the environment.
pub(crate) fn parse_with(
    source: &str,
    file: &Path,
    credentials: Option<&Path>,
) -> Result<Config, ConfigError> {
    let raw = raw::from_str(source).map_err(|e| ConfigError::from_toml(file, source, &e))?;
    validate::validate(raw, source, file, credentials)
}

/// Reads `path` and calls [`parse`]; an unreadable file is a [`ConfigError`] without a position.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let source = std::fs::read_to_string(path).map_err(|e| ConfigError::io(path, e))?;
    parse(&source, path)
}
