//! What the config file and the hooks it names share: the error that
//! names the file and line, and values written with a unit. Below both
//! `file_config` and `hook_config`, so neither imports the other's parts.

use std::path::PathBuf;
use std::str::FromStr;

use reitunnel_program::config_file::FileError;
use thiserror::Error;

/// A byte count written with an optional unit: `65536`, `64KiB`, `10MiB`, `1GB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("'{s}' is not a byte size (like 65536, 64KiB or 10MiB)"))?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KB" => 1_000,
            "KiB" => 1 << 10,
            "MB" => 1_000_000,
            "MiB" => 1 << 20,
            "GB" => 1_000_000_000,
            "GiB" => 1 << 30,
            other => {
                return Err(format!(
                    "unknown unit '{other}' in '{s}' (use B, KB, KiB, MB, MiB, GB, GiB)"
                ))
            }
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("'{s}' is too large"))
    }
}

/// A service's URL whose path may be its secret (a Slack webhook's is):
/// shown, in messages and `Debug`, as `scheme://host:port` only; the
/// whole URL only for [`EndpointUrl::expose`], to reach the service.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct EndpointUrl(String);

impl EndpointUrl {
    /// The whole URL, path included: for the client that sends to it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for EndpointUrl {
    fn from(url: String) -> Self {
        EndpointUrl(url)
    }
}

impl std::fmt::Display for EndpointUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&reitunnel_hooks::builtin::redact_url(&self.0))
    }
}

impl std::fmt::Debug for EndpointUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// Why the config file could not be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// Unreadable, malformed TOML, a bad value or an unknown field (naming the line).
    #[error(transparent)]
    File(#[from] FileError),
    /// A `[[hooks]]` table is not a valid hook.
    #[error("config {path}: line {line}: hook #{index}: {message}")]
    Hook {
        /// The file.
        path: PathBuf,
        /// The line of the table's `[[hooks]]` header.
        line: usize,
        /// Its position in the chain, from 1.
        index: usize,
        /// What is wrong.
        message: String,
    },
    /// A `${VAR}` names an unset environment variable.
    #[error("config {path}: {field} refers to ${{{var}}}, which is not set")]
    MissingEnv {
        /// The file.
        path: PathBuf,
        /// The field.
        field: &'static str,
        /// The variable.
        var: String,
    },
    /// A value is valid TOML but unusable.
    #[error("config {path}: {problem}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}
