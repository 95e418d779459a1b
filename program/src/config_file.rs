//! TOML config files, read the same way by every binary: errors name the
//! file, toml's own messages name the line and column, and values written
//! as strings (ports, sizes, specs, fingerprints) are parsed while the file
//! is read, so a bad one is reported at its line too.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use thiserror::Error;

/// A config file that could not be read or parsed.
#[derive(Debug, Error)]
pub enum FileError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Bad TOML, an unknown key or a bad value; toml's message names line and column.
    #[error("config {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's error.
        source: Box<toml::de::Error>,
    },
}

/// Reads the file's text.
pub fn read(path: &Path) -> Result<String, FileError> {
    std::fs::read_to_string(path).map_err(|source| FileError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Parses TOML text (`path` only names it in errors).
pub fn parse<T: DeserializeOwned>(text: &str, path: &Path) -> Result<T, FileError> {
    toml::from_str(text).map_err(|source| FileError::Parse {
        path: path.to_owned(),
        source: Box::new(source),
    })
}

/// Reads and parses the file.
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<T, FileError> {
    parse(&read(path)?, path)
}

/// `deserialize_with`: a value written as a string, parsed by its `FromStr`.
pub fn parsed<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: fmt::Display,
{
    String::deserialize(d)?
        .parse()
        .map_err(serde::de::Error::custom)
}

/// `deserialize_with` for an optional field (with `#[serde(default)]`).
pub fn parsed_opt<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: fmt::Display,
{
    parsed(d).map(Some)
}

/// `deserialize_with` for a list of strings, each parsed.
pub fn parsed_list<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: fmt::Display,
{
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| s.parse().map_err(serde::de::Error::custom))
        .collect()
}
