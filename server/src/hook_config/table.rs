//! The contract between a `[[hooks]]` table and the hook it builds. Each
//! kind of hook is one type implementing [`HookKind`] in its own file under
//! `kinds/`: its `Config` (the table's keys, with serde's defaults and
//! parsing), the checks serde cannot express, how it relates to the event
//! sinks, and how it is built. [`HookTable`] is a parsed table of any kind;
//! the rest of the server handles tables only through it.

use std::any::Any;
use std::fmt::Debug;
use std::path::Path;
use std::sync::Arc;

use reitunnel_hooks::events::EventBus;
use reitunnel_hooks::Hook;
use serde::de::DeserializeOwned;

use super::kinds::KINDS;
use super::sinks::Sink;
use super::Background;
use crate::config_types::ConfigError;

/// One kind of hook a config file can name with `kind = NAME`.
pub(crate) trait HookKind: 'static {
    /// The `kind` that names it.
    const NAME: &'static str;
    /// Its table's keys (`kind` aside), read by serde with
    /// `deny_unknown_fields`, so a typo is an error that names the key.
    type Config: DeserializeOwned + Debug + Clone + PartialEq + Send + Sync + 'static;

    /// What the types cannot say (a period of zero, two keys that exclude
    /// each other), checked when the file is read, so the error names the
    /// key's line. [`build`](HookKind::build) may rely on it.
    fn check(_config: &Self::Config) -> Result<(), Invalid> {
        Ok(())
    }

    /// How the hook stands to the config's event sinks.
    fn relation(_config: &Self::Config) -> Relation {
        Relation::Independent
    }

    /// For a kind that is an event sink (audit, webhook): opens the file
    /// or starts the delivery, `Some`; `None` for every other kind. Done
    /// before any hook is built, so every hook that emits events reaches
    /// every sink, wherever it stands in the list. A new kind of sink
    /// also needs its variant in [`Sink`].
    fn open_sink(_config: &Self::Config) -> Option<Result<Sink, String>> {
        None
    }

    /// Builds the hook; what needs the file system or the environment
    /// (opening a file, `${VAR}`) is checked here.
    fn build(
        config: &Self::Config,
        ctx: &mut BuildContext<'_>,
    ) -> Result<Arc<dyn Hook>, ConfigError>;
}

/// How a hook stands to the event sinks, which decides what a reload keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Relation {
    /// Holds no sink of the others: kept across a reload while its table
    /// is unchanged (a sink's own hook too, with its file or queue).
    Independent,
    /// Sends events to every sink (quota, meter with `"events"`): built
    /// anew when the sinks change, since it holds the old ones.
    EmitsEvents,
    /// Read again at every reload (a policy's `clients_file` may have
    /// changed under the same table).
    AlwaysRebuilt,
}

/// A check that failed: the key it is about and what is wrong.
#[derive(Debug)]
pub(crate) struct Invalid {
    /// The key, whose line the error names.
    pub(crate) key: &'static str,
    /// What is wrong, starting with the hook's kind.
    pub(crate) problem: String,
}

impl Invalid {
    pub(crate) fn new(key: &'static str, problem: impl Into<String>) -> Invalid {
        Invalid {
            key,
            problem: problem.into(),
        }
    }
}

/// What building a hook may use and adds to.
pub(crate) struct BuildContext<'a> {
    /// The server's name, carried by events.
    pub(crate) server: &'a str,
    /// The config file, named by errors.
    pub(crate) path: &'a Path,
    /// Every event sink of the config, for hooks that emit events.
    pub(crate) bus: EventBus,
    /// The handles the hook built gives the server (meters, quotas, gates).
    pub(crate) background: Background,
    /// For a sink's table: the sink opened for that very table.
    pub(crate) own_sink: Option<Sink>,
}

impl BuildContext<'_> {
    /// An error about the config file that names it.
    pub(crate) fn invalid(&self, problem: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_owned(),
            problem: problem.into(),
        }
    }

    /// For a sink's table: a bus to its own sink only.
    pub(crate) fn own_sink_bus(&self) -> EventBus {
        let bus = EventBus::new().for_server(self.server);
        match &self.own_sink {
            Some(sink) => sink.join(bus),
            None => bus,
        }
    }
}

/// A parsed `[[hooks]]` table of any kind. Two tables are equal when they
/// are of the same kind with equal keys, which is how a reload finds the
/// hooks it keeps.
#[derive(Clone)]
pub struct HookTable(Arc<dyn Table>);

impl HookTable {
    /// A table of kind `K`, checked.
    pub(crate) fn new<K: HookKind>(config: K::Config) -> Result<HookTable, Invalid> {
        K::check(&config)?;
        Ok(HookTable(Arc::new(Typed::<K>(config))))
    }

    /// The table's `kind`.
    pub fn kind(&self) -> &'static str {
        self.0.kind()
    }

    /// Whether it is a table of kind `K`.
    pub(crate) fn is<K: HookKind>(&self) -> bool {
        self.config::<K>().is_some()
    }

    /// Its keys, if it is a table of kind `K`.
    pub(crate) fn config<K: HookKind>(&self) -> Option<&K::Config> {
        self.0.as_any().downcast_ref::<Typed<K>>().map(|t| &t.0)
    }

    pub(crate) fn relation(&self) -> Relation {
        self.0.relation()
    }

    pub(crate) fn open_sink(&self) -> Option<Result<Sink, String>> {
        self.0.open_sink()
    }

    pub(crate) fn build(&self, ctx: &mut BuildContext<'_>) -> Result<Arc<dyn Hook>, ConfigError> {
        self.0.build(ctx)
    }

    /// Reads a table of the file: `kind` picks the [`HookKind`], the other
    /// keys are its config. `Err` says what is wrong and, for a failed
    /// check, which key.
    pub(crate) fn parse(mut table: toml::Table) -> Result<HookTable, TableError> {
        let kind = match table.remove("kind") {
            None => return Err(TableError::Serde("missing field `kind`".to_owned())),
            Some(toml::Value::String(kind)) => kind,
            Some(other) => {
                return Err(TableError::Serde(format!(
                    "invalid type: {}, expected a hook kind (a string)",
                    other.type_str()
                )))
            }
        };
        let Some(entry) = KINDS.iter().find(|k| k.name == kind) else {
            let names: Vec<String> = KINDS.iter().map(|k| format!("`{}`", k.name)).collect();
            return Err(TableError::Serde(format!(
                "unknown variant `{kind}`, expected one of {}",
                names.join(", ")
            )));
        };
        (entry.parse)(table)
    }
}

impl PartialEq for HookTable {
    fn eq(&self, other: &HookTable) -> bool {
        self.0.same(other.0.as_ref())
    }
}

impl Debug for HookTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Why a table could not be read.
#[derive(Debug)]
pub(crate) enum TableError {
    /// serde's message: an unknown kind or key, a missing key, a bad value.
    Serde(String),
    /// A check of the kind failed.
    Check(Invalid),
}

impl TableError {
    pub(crate) fn message(&self) -> &str {
        match self {
            TableError::Serde(message) => message,
            TableError::Check(invalid) => &invalid.problem,
        }
    }
}

/// One registered kind: its name and how to read its tables.
pub(crate) struct Entry {
    pub(crate) name: &'static str,
    parse: fn(toml::Table) -> Result<HookTable, TableError>,
}

/// The registry entry of `K`.
pub(crate) const fn entry<K: HookKind>() -> Entry {
    Entry {
        name: K::NAME,
        parse: parse_as::<K>,
    }
}

fn parse_as<K: HookKind>(table: toml::Table) -> Result<HookTable, TableError> {
    let config: K::Config = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| TableError::Serde(e.message().to_owned()))?;
    HookTable::new::<K>(config).map_err(TableError::Check)
}

/// The object-safe face of a `Typed<K>`.
trait Table: Debug + Send + Sync {
    fn kind(&self) -> &'static str;
    fn as_any(&self) -> &dyn Any;
    fn same(&self, other: &dyn Table) -> bool;
    fn relation(&self) -> Relation;
    fn open_sink(&self) -> Option<Result<Sink, String>>;
    fn build(&self, ctx: &mut BuildContext<'_>) -> Result<Arc<dyn Hook>, ConfigError>;
}

/// A checked config of kind `K`.
struct Typed<K: HookKind>(K::Config);

impl<K: HookKind> Debug for Typed<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple(K::NAME).field(&self.0).finish()
    }
}

impl<K: HookKind> Table for Typed<K> {
    fn kind(&self) -> &'static str {
        K::NAME
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn same(&self, other: &dyn Table) -> bool {
        other
            .as_any()
            .downcast_ref::<Typed<K>>()
            .is_some_and(|o| o.0 == self.0)
    }
    fn relation(&self) -> Relation {
        K::relation(&self.0)
    }
    fn open_sink(&self) -> Option<Result<Sink, String>> {
        K::open_sink(&self.0)
    }
    fn build(&self, ctx: &mut BuildContext<'_>) -> Result<Arc<dyn Hook>, ConfigError> {
        K::build(&self.0, ctx)
    }
}
