//! A client that stays up: logs in, opens its tunnels, and when the
//! connection is lost logs in again with backoff and reopens each tunnel on
//! the port it had (the server holds it on a lease meanwhile). A login the
//! server refuses for now (full, a limit, shutting down, too many failed
//! logins from this address) is retried the same way, waiting at least
//! what the server asks; only a refusal for good (wrong token, a ban) ends
//! it. With several servers in the list, each login begins with the server
//! after the one that lost the session or refused it for now, so that a
//! fleet's surviving node takes over at the first attempt. A reload signal
//! applies a new tunnel list to the running session.
//!
//! ```no_run
//! # async fn demo() -> Result<(), reitunnel_client::ClientError> {
//! use std::time::Duration;
//! use reitunnel_client::{ClientConfig, Supervised, Supervisor};
//! use reitunnel_hooks::{builtin::Secret, HookChain};
//! use reitunnel_program::Signals;
//!
//! let wanted = Supervised {
//!     client: ClientConfig::new("tunnel.example.com:7000", "laptop", Secret::new("s3cret")),
//!     remote: vec!["0:127.0.0.1:3000".parse().unwrap()],
//!     local: Vec::new(),
//!     drain: Duration::from_secs(30),
//!     reconnect_max: Duration::from_secs(30),
//! };
//! Supervisor::new(wanted, HookChain::default())
//!     .run(Signals::install(), || Err("no config file to reload".to_owned()), |report| println!("{report:?}"))
//!     .await
//! # }
//! ```

use std::time::Duration;

use reitunnel_hooks::HookChain;
use reitunnel_program::Signals;
use tokio::sync::watch;

use crate::reconcile::{Report, Wanted};
use crate::servers::Rotation;
use crate::{Backoff, Client, ClientConfig, ClientError, LocalSpec, RemoteSpec};

/// What a [`Supervisor`] keeps up.
#[derive(Debug, Clone)]
pub struct Supervised {
    /// How to connect and log in.
    pub client: ClientConfig,
    /// Reverse tunnels (`-R`).
    pub remote: Vec<RemoteSpec>,
    /// Local forwards (`-L`).
    pub local: Vec<LocalSpec>,
    /// At a stop signal, how long open streams may take to finish.
    pub drain: Duration,
    /// Longest wait between reconnect attempts, even where the server asks
    /// for longer; zero: no reconnect, a lost connection or any refused
    /// login ends [`Supervisor::run`] with its error.
    pub reconnect_max: Duration,
}

/// Keeps a client logged in with its tunnels open; see the module docs.
pub struct Supervisor {
    /// How to connect: the first settings' (a reload changes only the tunnels).
    client: ClientConfig,
    drain: Duration,
    reconnect_max: Duration,
    chain: HookChain,
    wanted: Wanted,
    backoff: Backoff,
    /// Which server the next login begins with.
    rotation: Rotation,
}

/// How one connection ended.
enum Ended {
    /// By a stop signal: the result is final.
    Stopped(Result<(), ClientError>),
    /// Lost or refused; `worked` if it logged in and opened every tunnel.
    Lost { error: ClientError, worked: bool },
}

impl Supervisor {
    /// A supervisor for `settings`, with `chain` as the client's hooks.
    pub fn new(settings: Supervised, chain: HookChain) -> Supervisor {
        Supervisor {
            wanted: Wanted::new(settings.remote, settings.local),
            backoff: Backoff::new(settings.reconnect_max),
            client: settings.client,
            drain: settings.drain,
            reconnect_max: settings.reconnect_max,
            chain,
            rotation: Rotation::default(),
        }
    }

    /// Runs until the first stop signal (then drains; a second one cuts the
    /// drain short) or an error that reconnecting cannot cure: a final
    /// refusal of the login (wrong token, a ban), a bad server list or TLS
    /// settings, or a first login that fails before any server was ever
    /// reached (a typo in the address should not loop forever). A login refused for now
    /// (a limit, the server full or shutting down) is tried again, even
    /// the first. On each reload signal `reload` gives the new settings;
    /// its tunnel lists are applied at once, other changes only warned
    /// about. `report` hears what each tunnel does, each retry and its
    /// delay, and the error it gives up on.
    pub async fn run(
        mut self,
        signals: Signals,
        mut reload: impl FnMut() -> Result<Supervised, String> + Send,
        mut report: impl FnMut(Report) + Send,
    ) -> Result<(), ClientError> {
        let mut reloads = signals.reloads();
        // A server answered these settings: a login worked, or one was
        // refused for now. From then on a failure to connect is the
        // server's absence, not a typo.
        let mut reached = false;
        loop {
            let error = match self
                .session(&signals, &mut reloads, &mut reload, &mut report)
                .await
            {
                Ended::Stopped(result) => return result,
                Ended::Lost { error, worked } => {
                    if worked {
                        self.backoff.reset();
                    }
                    reached |= worked || error.is_temporary_refusal();
                    error
                }
            };
            if !reached || error.is_final() || self.reconnect_max.is_zero() {
                report(Report::GaveUp { error: &error });
                return Err(error);
            }
            let wait = self.delay(&error);
            report(Report::Reconnecting {
                error: &error,
                attempt: self.backoff.attempts(),
                wait,
            });
            let sleep = tokio::time::sleep(wait);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = signals.nth(1) => return Ok(()),
                    _ = &mut sleep => break,
                    // Offline: the new list is what the next login opens.
                    Ok(()) = reloads.changed() => self.reload(None, &mut reload, &mut report).await,
                }
            }
        }
    }

    /// The wait before the next login: the backoff's next delay, or what
    /// the server asked for if that is longer (an earlier attempt would
    /// only be refused again), but never past `reconnect_max`, the longest
    /// wait the user allowed.
    fn delay(&mut self, error: &ClientError) -> Duration {
        let backoff = self.backoff.next_delay();
        match error.retry_after() {
            Some(asked) => asked.max(backoff).min(self.reconnect_max),
            None => backoff,
        }
    }

    /// One connection: log in, open every tunnel, then serve until a
    /// signal or the loss of the connection, applying reloads on the way.
    async fn session(
        &mut self,
        signals: &Signals,
        reloads: &mut watch::Receiver<u32>,
        reload: &mut (impl FnMut() -> Result<Supervised, String> + Send),
        report: &mut (impl FnMut(Report) + Send),
    ) -> Ended {
        let lost = |error| Ended::Lost {
            error,
            worked: false,
        };
        let connected = tokio::select! {
            _ = signals.nth(1) => return Ended::Stopped(Ok(())),
            connected = Client::connect_in_turn(self.client.clone(), self.chain.clone(), &mut self.rotation) => connected,
        };
        let client = match connected {
            Ok(client) => client,
            Err(e) => return lost(e),
        };
        if let Err(e) = self.wanted.open_all(&client, report).await {
            let _ = client.shutdown().await;
            return lost(e);
        }
        loop {
            tokio::select! {
                _ = signals.nth(1) => {
                    let drained = client.shutdown_graceful(self.drain, signals.nth(2)).await;
                    return Ended::Stopped(drained);
                }
                _ = client.ended() => return Ended::Lost {
                    error: client.shutdown().await.err().unwrap_or(ClientError::ConnectionLost),
                    worked: true,
                },
                Ok(()) = reloads.changed() => self.reload(Some(&client), reload, report).await,
            }
        }
    }

    /// Applies the tunnel lists of the reloaded settings; a broken config
    /// changes nothing. Connection settings (server, name, token, TLS)
    /// apply only after a restart.
    async fn reload(
        &mut self,
        client: Option<&Client>,
        reload: &mut (impl FnMut() -> Result<Supervised, String> + Send),
        report: &mut (impl FnMut(Report) + Send),
    ) {
        let new = match reload() {
            Ok(new) => new,
            Err(e) => {
                tracing::error!("reload refused, the current tunnels stay as they are: {e}");
                return;
            }
        };
        if connection_changed(&new.client, &self.client) {
            tracing::warn!("connection settings changed (server, name, token or TLS): they take effect only after a restart");
        }
        let tunnels = Wanted::new(new.remote, new.local);
        self.wanted.apply(client, tunnels, report).await;
    }
}

/// The settings a config file gives that only a new login would apply.
fn connection_changed(a: &ClientConfig, b: &ClientConfig) -> bool {
    a.server != b.server
        || a.name != b.name
        || a.token != b.token
        || a.tls != b.tls
        || a.server_name != b.server_name
        || a.heartbeat_timeout != b.heartbeat_timeout
}
