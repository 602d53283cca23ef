//! Configuration: TOML parsing and validation into domain types.

mod model;

pub use model::*;

use std::path::{Path, PathBuf};

/// stub
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct ConfigError { pub file: PathBuf, pub message: String }
/// stub
pub fn parse(_source: &str, file: &Path) -> Result<Config, ConfigError> { Err(ConfigError{file: file.into(), message: "stub".into()}) }
/// stub
pub fn load(path: &Path) -> Result<Config, ConfigError> { parse("", path) }
impl Config { /// stub
 pub fn summary(&self) -> String { String::new() } }
