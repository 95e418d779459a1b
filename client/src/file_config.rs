//! `reitunnel-client --config client.toml`: every command-line option in a
//! file. Unknown keys and bad values (a malformed `-R` spec or fingerprint)
//! are errors naming the line; `${VAR}` in `token` reads the environment;
//! flags given on the command line win over the file.

use std::path::{Path, PathBuf};

use reitunnel_hooks::builtin::Secret;
use reitunnel_program::config_file::{self, FileError};
use reitunnel_program::expand_env;
use reitunnel_transport::tls::Fingerprint;
use serde::{Deserialize, Deserializer};
use thiserror::Error;

use crate::{LocalSpec, RemoteSpec};

/// The client's config file; every key is the flag of the same name.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientFile {
    /// `--server`: `"host:port"`, several separated by commas, or an array
    /// of them (`["a:7000", "b:7000"]`), kept as the comma-separated list.
    #[serde(default, deserialize_with = "server_list")]
    pub server: Option<String>,
    /// `--token`; `${VAR}` takes it from the environment.
    pub token: Option<Secret>,
    /// `--name`.
    pub name: Option<String>,
    /// `--tls`.
    #[serde(default)]
    pub tls: bool,
    /// `--ca`.
    pub ca: Option<PathBuf>,
    /// `--fingerprint`.
    #[serde(default, deserialize_with = "config_file::parsed_opt")]
    pub fingerprint: Option<Fingerprint>,
    /// `--server-name`.
    pub server_name: Option<String>,
    /// `--cert`.
    pub cert: Option<PathBuf>,
    /// `--key`.
    pub key: Option<PathBuf>,
    /// `-R` specs, e.g. `["8080:127.0.0.1:3000"]`; an entry may be a table
    /// with options: `{ spec = "8080:127.0.0.1:80", proxy_protocol = "v2" }`.
    #[serde(default)]
    pub remote: Vec<RemoteSpec>,
    /// `-L` specs, e.g. `["5432:db.internal:5432"]`.
    #[serde(default, deserialize_with = "config_file::parsed_list")]
    pub local: Vec<LocalSpec>,
    /// Silence from the server before it is taken for dead, in milliseconds.
    pub heartbeat_timeout_ms: Option<u64>,
    /// `--connections`.
    pub connections: Option<u16>,
    /// `--drain-timeout`, seconds.
    pub drain_timeout_secs: Option<u64>,
    /// `--reconnect-max`, seconds.
    pub reconnect_max_secs: Option<u64>,
    /// Seconds without a datagram either way after which a flow of a
    /// `udp:` forward (`-L`) closes [default: 60].
    pub udp_flow_idle_secs: Option<u64>,
}

/// `server` as a string or an array of strings, joined as `--server` has it.
fn server_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged, expecting = "a string \"host:port\" or an array of them")]
    enum List {
        One(String),
        Many(Vec<String>),
    }
    Ok(Some(match List::deserialize(d)? {
        List::One(list) => list,
        List::Many(entries) => entries.join(","),
    }))
}

/// Why the config file was refused.
#[derive(Debug, Error)]
pub enum ClientFileError {
    /// Unreadable, bad TOML, an unknown key or a bad value (naming the line).
    #[error(transparent)]
    File(#[from] FileError),
    /// `${VAR}` names an unset variable.
    #[error("config {path}: token refers to ${{{var}}}, which is not set")]
    MissingEnv {
        /// The file.
        path: PathBuf,
        /// The variable.
        var: String,
    },
}

impl ClientFile {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<ClientFile, ClientFileError> {
        ClientFile::parse(&config_file::read(path)?, path)
    }

    /// Parses TOML text (`path` only names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<ClientFile, ClientFileError> {
        let mut file: ClientFile = config_file::parse(text, path)?;
        if let Some(token) = &file.token {
            let token = expand_env(token.expose()).map_err(|var| ClientFileError::MissingEnv {
                path: path.to_owned(),
                var,
            })?;
            file.token = Some(Secret::new(token));
        }
        Ok(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ClientFile, String> {
        ClientFile::parse(text, Path::new("client.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn every_key_parses() {
        let f = parse(
            "server = \"h:7000\"\ntoken = \"t\"\nname = \"n\"\ntls = true\nca = \"ca.pem\"\n\
             server_name = \"h\"\ncert = \"c.pem\"\nkey = \"k.pem\"\n\
             remote = [\"8080:127.0.0.1:3000\", \"127.0.0.1:0:db:5432\"]\nheartbeat_timeout_ms = 5000\n\
             local = [\"5432:db.internal:5432\"]\n",
        )
        .unwrap();
        assert_eq!(f.server.as_deref(), Some("h:7000"));
        assert_eq!(f.remote.len(), 2);
        assert_eq!(f.remote[1].target, "db:5432");
        assert!(f.tls);
        assert_eq!(f.heartbeat_timeout_ms, Some(5000));
        assert_eq!(f.local[0].target, "db.internal:5432");
    }

    #[test]
    fn the_server_may_be_a_list_or_an_array() {
        let f = parse("server = \"a:7000, b:7000\"\n").unwrap();
        assert_eq!(f.server.as_deref(), Some("a:7000, b:7000"));
        let f = parse("server = [\"a:7000\", \"b:7000\"]\n").unwrap();
        assert_eq!(f.server.as_deref(), Some("a:7000,b:7000"));
        let e = parse("name = \"n\"\nserver = 7000\n").unwrap_err();
        assert!(
            e.contains("line 2") && e.contains("a string \"host:port\" or an array of them"),
            "{e}"
        );
    }

    #[test]
    fn a_tunnel_may_be_a_table_with_its_proxy_protocol() {
        let f = parse(
            "remote = [\n  { spec = \"8080:127.0.0.1:80\", proxy_protocol = \"v2\" },\n  \"9090:127.0.0.1:81\",\n]\n",
        )
        .unwrap();
        assert_eq!(f.remote[0].proxy_protocol, Some(crate::ProxyProtocol::V2));
        assert_eq!(
            f.remote[0].to_string(),
            "0.0.0.0:8080 -> 127.0.0.1:80 (PROXY v2)"
        );
        assert_eq!(f.remote[1].proxy_protocol, None);
        let e = parse("remote = [{ spec = \"80:h:1\", proxy = \"v2\" }]\n").unwrap_err();
        assert!(
            e.contains("line 1") && e.contains("unknown field `proxy`"),
            "{e}"
        );
        let e = parse("remote = [{ spec = \"80:h:1\", proxy_protocol = \"v3\" }]\n").unwrap_err();
        assert!(
            e.contains("PROXY protocol version 'v3': expected v1 or v2"),
            "{e}"
        );
        let e = parse("remote = [{ proxy_protocol = \"v1\" }]\n").unwrap_err();
        assert!(e.contains("missing field `spec`"), "{e}");
    }

    #[test]
    fn mistakes_name_the_line_and_the_problem() {
        let e = parse("server = \"h:1\"\nremot = []\n").unwrap_err();
        assert!(
            e.contains("line 2") && e.contains("unknown field `remot`"),
            "{e}"
        );
        let e = parse("server = \"h:1\"\n\nremote = [\"80:nowhere\"]\n").unwrap_err();
        assert!(
            e.contains("line 3") && e.contains("invalid tunnel spec '80:nowhere'"),
            "{e}"
        );
        let e = parse("fingerprint = \"abc\"\n").unwrap_err();
        assert!(e.contains("line 1") && e.contains("bad fingerprint"), "{e}");
        let e = parse("token = \"${REITUNNEL_CLIENT_TEST_UNSET}\"\n").unwrap_err();
        assert!(
            e.contains("token refers to ${REITUNNEL_CLIENT_TEST_UNSET}"),
            "{e}"
        );
    }

    #[test]
    fn the_example_config_loads() {
        std::env::set_var("REITUNNEL_TOKEN", "example");
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/config/client.toml"
        ));
        let f = ClientFile::load(path).unwrap();
        assert!(f.server.is_some() && !f.remote.is_empty() && !f.local.is_empty());
        assert_eq!(
            (f.reconnect_max_secs, f.drain_timeout_secs),
            (Some(30), Some(30))
        );
        assert_eq!(f.token.as_ref().map(Secret::expose), Some("example"));
    }
}
