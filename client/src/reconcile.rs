//! The tunnels a client is asked to keep, and making a session's tunnels
//! match them: at login (every tunnel on the port it had before) and on a
//! new list (close what is gone, open what is new, leave the rest alone).

use std::time::Duration;

use reitunnel_hooks::RefuseCode;

use crate::{Client, ClientError, LocalSpec, RemoteSpec, TunnelReady};

/// What a supervised tunnel did, for the program to show.
#[derive(Debug)]
pub enum Report<'a> {
    /// Open: visitors reach `ready.target` through `ready.public_addr`.
    Ready {
        /// `-R` or `-L`.
        kind: Kind,
        /// The tunnel as asked for (its spec as displayed).
        spec: String,
        /// The tunnel as the server opened it.
        ready: &'a TunnelReady,
    },
    /// Closed because a new list no longer has it.
    Closed {
        /// `-R` or `-L`.
        kind: Kind,
        /// The tunnel as asked for.
        spec: String,
        /// The tunnel that closed.
        ready: &'a TunnelReady,
    },
    /// Could not be opened; a refused one is dropped from the list, one cut
    /// by a lost connection is opened at the next login.
    Failed {
        /// `-R` or `-L`.
        kind: Kind,
        /// The tunnel as asked for.
        spec: String,
        /// Why, as the server, a local hook or the OS said.
        error: &'a ClientError,
    },
    /// The connection was lost, or the login refused for now (see
    /// [`ClientError::is_temporary_refusal`]); the next login is in `wait`.
    Reconnecting {
        /// How the connection ended, or why the login was refused.
        error: &'a ClientError,
        /// Attempts since the last connection that worked.
        attempt: u32,
        /// Time until the next attempt: the backoff's, or the wait the
        /// server asked for ([`ClientError::retry_after`]) if longer.
        wait: Duration,
    },
    /// No more attempts: the supervisor returns `error`, one that logging in
    /// again cannot cure ([`ClientError::is_final`]), a first login that
    /// failed, or any loss with reconnecting turned off.
    GaveUp {
        /// Why.
        error: &'a ClientError,
    },
}

/// `-R` or `-L`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A reverse tunnel (`-R`): a public port on the server.
    Reverse,
    /// A local forward (`-L`): a local port to a target behind the server.
    Forward,
}

impl Kind {
    /// The word for it in the client's output lines.
    pub fn word(self) -> &'static str {
        match self {
            Kind::Reverse => "tunnel",
            Kind::Forward => "forward",
        }
    }
}

/// The tunnels asked for, each with what the current session made of it.
#[derive(Debug, Default)]
pub(crate) struct Wanted {
    remote: Vec<Want<RemoteSpec>>,
    local: Vec<Want<LocalSpec>>,
}

impl Wanted {
    pub(crate) fn new(remote: Vec<RemoteSpec>, local: Vec<LocalSpec>) -> Wanted {
        Wanted {
            remote: remote.into_iter().map(Want::new).collect(),
            local: local.into_iter().map(Want::new).collect(),
        }
    }

    /// Opens every tunnel in a new session, each on the port it had.
    pub(crate) async fn open_all(
        &mut self,
        client: &Client,
        report: &mut (dyn FnMut(Report) + Send),
    ) -> Result<(), ClientError> {
        open_all(client, &mut self.remote, report).await?;
        open_all(client, &mut self.local, report).await
    }

    /// Makes `new` the list: closes what it no longer has, opens what is
    /// new (if connected; otherwise the next login does), keeps the rest.
    pub(crate) async fn apply(
        &mut self,
        client: Option<&Client>,
        new: Wanted,
        report: &mut (dyn FnMut(Report) + Send),
    ) {
        apply(client, &mut self.remote, new.remote, report).await;
        apply(client, &mut self.local, new.local, report).await;
        tracing::info!(
            remote = self.remote.len(),
            local = self.local.len(),
            "configuration reloaded"
        );
    }
}

async fn apply<S: Spec>(
    client: Option<&Client>,
    list: &mut Vec<Want<S>>,
    wanted: Vec<Want<S>>,
    report: &mut (dyn FnMut(Report) + Send),
) {
    let mut kept = Vec::with_capacity(wanted.len());
    let mut spare = std::mem::take(list);
    for new in wanted {
        match spare.iter().position(|w| w.written == new.written) {
            Some(at) => kept.push(spare.remove(at)),
            None => kept.push(new),
        }
    }
    let mut freed = Vec::new();
    for gone in spare {
        if let (Some(client), Some(ready)) = (client, gone.ready) {
            match client.close_tunnel(ready.id).await {
                Ok(()) => {
                    freed.push(ready.public_addr.port());
                    report(Report::Closed {
                        kind: S::KIND,
                        spec: gone.written.to_string(),
                        ready: &ready,
                    });
                }
                Err(e) => tracing::warn!(error = %e, tunnel = ready.id.0, "closing a tunnel"),
            }
        }
    }
    if let Some(client) = client {
        for wanted in kept.iter_mut().filter(|w| w.ready.is_none()) {
            let mut opened = wanted.open(client, report).await;
            // A tunnel moved to another target on the same port: the port is
            // let go a moment after the close was sent (by the server for
            // -R, by our listener task for -L), so retry briefly.
            let reused = freed.contains(&wanted.written.port());
            for _ in 0..PORT_RELEASE_TRIES {
                match &opened {
                    Err(e) if reused && port_still_closing(e) => {
                        tokio::time::sleep(PORT_RELEASE_WAIT).await;
                        opened = wanted.open(client, report).await;
                    }
                    _ => break,
                }
            }
            if let Err(error) = opened {
                report(Report::Failed {
                    kind: S::KIND,
                    spec: wanted.written.to_string(),
                    error: &error,
                });
                if is_refusal(&error) {
                    wanted.refused = true;
                }
            }
        }
        kept.retain(|w| !w.refused);
    }
    *list = kept;
}

/// How often, and how far apart, a reload retries opening a tunnel on a
/// port it just closed.
const PORT_RELEASE_TRIES: usize = 50;
const PORT_RELEASE_WAIT: Duration = Duration::from_millis(20);

/// A failure that means the port is still taken.
fn port_still_closing(e: &ClientError) -> bool {
    match e {
        ClientError::LocalListen { source, .. } => source.kind() == std::io::ErrorKind::AddrInUse,
        ClientError::TunnelRefused { code, .. } => *code == RefuseCode::Unavailable,
        _ => false,
    }
}

/// The server, a local hook or the OS said no to this tunnel (rather than
/// the connection failing).
fn is_refusal(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::TunnelRefused { .. }
            | ClientError::LocalListen { .. }
            | ClientError::RefusedLocally { .. }
    )
}

async fn open_all<S: Spec>(
    client: &Client,
    list: &mut [Want<S>],
    report: &mut (dyn FnMut(Report) + Send),
) -> Result<(), ClientError> {
    for wanted in list {
        wanted.ready = None;
        wanted.open(client, report).await?;
    }
    Ok(())
}

/// A tunnel asked for.
#[derive(Debug)]
struct Want<S> {
    /// As written in the flags or the file, to tell on reload whether it changed.
    written: S,
    /// The port it got the first time, asked for again after a reconnect
    /// (the server's lease keeps it meanwhile); 0 until then.
    port: u16,
    /// Open in the current session.
    ready: Option<TunnelReady>,
    /// Refused when a reload added it: dropped from the list.
    refused: bool,
}

impl<S: Spec> Want<S> {
    fn new(written: S) -> Self {
        Want {
            written,
            port: 0,
            ready: None,
            refused: false,
        }
    }

    async fn open(
        &mut self,
        client: &Client,
        report: &mut (dyn FnMut(Report) + Send),
    ) -> Result<(), ClientError> {
        let mut spec = self.written.clone();
        if self.port != 0 {
            spec.set_port(self.port);
        }
        let ready = self.ready.insert(spec.open(client).await?);
        self.port = ready.public_addr.port();
        report(Report::Ready {
            kind: S::KIND,
            spec: self.written.to_string(),
            ready,
        });
        Ok(())
    }
}

/// `-R` and `-L` specs, opened alike.
trait Spec: Clone + PartialEq + std::fmt::Display {
    const KIND: Kind;
    /// The port as written (0: any).
    fn port(&self) -> u16;
    fn set_port(&mut self, port: u16);
    async fn open(self, client: &Client) -> Result<TunnelReady, ClientError>;
}

impl Spec for RemoteSpec {
    const KIND: Kind = Kind::Reverse;
    fn port(&self) -> u16 {
        self.bind.port()
    }
    fn set_port(&mut self, port: u16) {
        self.bind.set_port(port);
    }
    async fn open(self, client: &Client) -> Result<TunnelReady, ClientError> {
        client.open_reverse(self).await
    }
}

impl Spec for LocalSpec {
    const KIND: Kind = Kind::Forward;
    fn port(&self) -> u16 {
        self.bind.port()
    }
    fn set_port(&mut self, port: u16) {
        self.bind.set_port(port);
    }
    async fn open(self, client: &Client) -> Result<TunnelReady, ClientError> {
        client.open_forward(self).await
    }
}
