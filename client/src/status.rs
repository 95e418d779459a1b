//! What `reitunnel-client` shows of its tunnels. On a terminal, a block of
//! compact lines, one per tunnel (connecting, ready with its public address
//! and the rate each way, reconnecting in N s, refused: why), redrawn in
//! place every second. Anywhere else, one plain line per change, as logs
//! and pipes want them.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use reitunnel_hooks::builtin::{MeterReport, MeterSink};
use reitunnel_hooks::TunnelId;

use crate::reconcile::{Kind, Report};
use crate::Supervised;

/// How often the block is redrawn and rates are measured.
pub const EVERY: Duration = Duration::from_secs(1);

/// One tunnel's line.
#[derive(Debug)]
struct Line {
    kind: Kind,
    /// As written: `0.0.0.0:0 -> 127.0.0.1:3000`.
    spec: String,
    state: State,
}

#[derive(Debug, Clone, PartialEq)]
enum State {
    Connecting,
    Ready { id: TunnelId, public: SocketAddr },
    Reconnecting { at: Instant },
    Refused(String),
    Closed,
}

/// The bytes each tunnel moved in the last meter report, and when it came:
/// the rates on the lines. A [`MeterSink`] of a
/// [`BandwidthMeter`](reitunnel_hooks::builtin::BandwidthMeter) reporting
/// every [`EVERY`].
#[derive(Debug, Default)]
pub struct Rates(Mutex<LastReport>);

/// When the last meter report came, and each tunnel's bytes (in, out) in it.
type LastReport = (Option<Instant>, HashMap<TunnelId, (u64, u64)>);

impl MeterSink for Rates {
    fn report(&self, report: &MeterReport) {
        let per_tunnel = report
            .tunnels
            .iter()
            .filter_map(|u| Some((u.tunnel?, (u.bytes_in, u.bytes_out))))
            .collect();
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = (Some(Instant::now()), per_tunnel);
    }
}

impl Rates {
    /// Bytes/s (in, out) of `id` over the last report; none moved lately is zero.
    fn of(&self, id: TunnelId, now: Instant) -> (u64, u64) {
        let last = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match last.0 {
            // A meter reports only what moved: an old report means nothing did since.
            Some(at) if now.duration_since(at) < EVERY * 3 / 2 => {
                let (i, o) = last.1.get(&id).copied().unwrap_or_default();
                let per_sec = |n: u64| (n as f64 / EVERY.as_secs_f64()) as u64;
                (per_sec(i), per_sec(o))
            }
            _ => (0, 0),
        }
    }
}

/// The program's view of its tunnels, and where it shows them.
pub struct Status {
    server: String,
    /// Not about one tunnel: a lost connection, an error.
    note: String,
    lines: Vec<Line>,
    rates: Arc<Rates>,
    /// Lines drawn last time, on a terminal (0: plain output).
    drawn: usize,
    terminal: bool,
}

impl Status {
    /// The tunnels `wanted` asks for, all connecting; on a terminal, drawn
    /// as a block, else printed line by line.
    pub fn new(wanted: &Supervised, rates: Arc<Rates>, terminal: bool) -> Status {
        let remote = wanted.remote.iter().map(|s| (Kind::Reverse, s.to_string()));
        let local = wanted.local.iter().map(|s| (Kind::Forward, s.to_string()));
        Status {
            server: wanted.client.server.clone(),
            note: "connecting".to_owned(),
            lines: remote
                .chain(local)
                .map(|(kind, spec)| Line {
                    kind,
                    spec,
                    state: State::Connecting,
                })
                .collect(),
            rates,
            drawn: 0,
            terminal,
        }
    }

    /// Takes in what the supervisor reports, and shows it.
    pub fn report(&mut self, report: Report) {
        if !self.terminal {
            return plain(&report);
        }
        match report {
            Report::Ready { kind, ready, spec } => {
                self.note = "connected".to_owned();
                let state = State::Ready {
                    id: ready.id,
                    public: ready.public_addr,
                };
                self.set(kind, &spec, state);
            }
            Report::Closed { kind, spec, .. } => self.set(kind, &spec, State::Closed),
            Report::Failed { kind, spec, error } => {
                self.set(kind, &spec, State::Refused(error.to_string()))
            }
            Report::Reconnecting {
                error,
                attempt,
                wait,
            } => {
                self.note = format!("lost (attempt {attempt}): {error}");
                let at = Instant::now() + wait;
                for line in &mut self.lines {
                    line.state = State::Reconnecting { at };
                }
            }
            Report::GaveUp { error } => self.note = format!("stopped: {error}"),
        }
        self.draw(&mut std::io::stdout().lock());
    }

    /// A tunnel's line (a reload may add one).
    fn set(&mut self, kind: Kind, spec: &str, state: State) {
        match self
            .lines
            .iter_mut()
            .find(|l| l.kind == kind && l.spec == spec)
        {
            Some(line) => line.state = state,
            None => self.lines.push(Line {
                kind,
                spec: spec.to_owned(),
                state,
            }),
        }
    }

    /// The block's lines as of `now`.
    fn render(&self, now: Instant) -> Vec<String> {
        let mut out = vec![format!(
            "reitunnel-client -> {}: {}",
            self.server, self.note
        )];
        let width = self.lines.iter().map(|l| l.spec.len()).max().unwrap_or(0);
        for line in &self.lines {
            let state = match &line.state {
                State::Connecting => "connecting".to_owned(),
                State::Ready { id, public } => {
                    let (i, o) = self.rates.of(*id, now);
                    format!("ready   {public}   in {}/s  out {}/s", bytes(i), bytes(o))
                }
                State::Reconnecting { at } => {
                    let left = at.saturating_duration_since(now);
                    format!(
                        "reconnecting in {} s",
                        left.as_secs() + u64::from(left.subsec_nanos() > 0)
                    )
                }
                State::Refused(why) => format!("refused: {why}"),
                State::Closed => "closed".to_owned(),
            };
            out.push(format!(
                "  {:<7} {:<width$}  {state}",
                line.kind.word(),
                line.spec
            ));
        }
        out
    }

    /// Redraws the block over the previous one (terminal only).
    pub fn draw(&mut self, out: &mut impl Write) {
        if !self.terminal {
            return;
        }
        let lines = self.render(Instant::now());
        let mut text = String::new();
        if self.drawn > 0 {
            text.push_str(&format!("\x1b[{}A", self.drawn));
        }
        for line in &lines {
            text.push_str("\r\x1b[2K");
            text.push_str(line);
            text.push('\n');
        }
        self.drawn = lines.len();
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }
}

/// One line per change: stdout for tunnels, stderr for errors, the log for reconnects.
fn plain(report: &Report) {
    match report {
        Report::Ready { kind, ready, .. } => println!(
            "{} {} ready: {} -> {}",
            kind.word(),
            ready.id.0,
            ready.public_addr,
            ready.target
        ),
        Report::Closed { kind, ready, .. } => println!(
            "{} {} closed: {} -> {}",
            kind.word(),
            ready.id.0,
            ready.public_addr,
            ready.target
        ),
        Report::Failed { error, .. } => eprintln!("error: {error}"),
        Report::Reconnecting {
            error,
            attempt,
            wait,
        } => tracing::warn!(%error, attempt, ?wait, "disconnected; reconnecting"),
        // The program prints the error as it exits.
        Report::GaveUp { .. } => {}
    }
}

/// `1.2 MiB` and the like.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClientConfig, TunnelReady};
    use reitunnel_hooks::builtin::Usage;
    use reitunnel_hooks::{ClientId, Secret};

    fn status() -> Status {
        let wanted = Supervised {
            client: ClientConfig::new("tunnel.example.com:7000", "laptop", Secret::new("t")),
            remote: vec!["0:127.0.0.1:3000".parse().unwrap()],
            local: vec!["5432:db:5432".parse().unwrap()],
            drain: Duration::ZERO,
            reconnect_max: Duration::ZERO,
        };
        Status::new(&wanted, Arc::default(), true)
    }

    #[test]
    fn lines_follow_the_reports() {
        let mut s = status();
        let now = Instant::now();
        // Specs are padded to the longest, so states line up.
        let (reverse, forward) = (
            "0.0.0.0:0 -> 127.0.0.1:3000",
            "127.0.0.1:5432 -> db:5432 (via the server)",
        );
        let line = |kind: &str, spec: &str, state: &str| format!("  {kind:<7} {spec:<42}  {state}");
        assert_eq!(
            s.render(now),
            [
                "reitunnel-client -> tunnel.example.com:7000: connecting".to_owned(),
                line("tunnel", reverse, "connecting"),
                line("forward", forward, "connecting"),
            ]
        );
        let ready = TunnelReady {
            id: TunnelId(7),
            public_addr: "203.0.113.5:20001".parse().unwrap(),
            target: "127.0.0.1:3000".to_owned(),
        };
        let state = State::Ready {
            id: ready.id,
            public: ready.public_addr,
        };
        s.set(Kind::Reverse, reverse, state);
        s.rates.report(&MeterReport {
            clients: Vec::new(),
            tunnels: vec![Usage {
                client: "laptop".into(),
                client_id: ClientId(1),
                tunnel: Some(TunnelId(7)),
                bytes_in: 3 << 20,
                bytes_out: 2048,
            }],
        });
        let refused = "the server refused 127.0.0.1:5432 -> db:5432: not allowed";
        s.set(Kind::Forward, forward, State::Refused(refused.to_owned()));
        let lines = s.render(Instant::now());
        let ready_line = "ready   203.0.113.5:20001   in 3.0 MiB/s  out 2.0 KiB/s";
        assert_eq!(lines[1], line("tunnel", reverse, ready_line));
        assert_eq!(
            lines[2],
            line("forward", forward, &format!("refused: {refused}"))
        );
        // Seconds later with nothing reported, nothing moves.
        assert!(s.render(Instant::now() + EVERY * 2)[1].ends_with("in 0 B/s  out 0 B/s"));
        let at = now + Duration::from_millis(2_500);
        for line in &mut s.lines {
            line.state = State::Reconnecting { at };
        }
        assert!(
            s.render(now)[1].ends_with("reconnecting in 3 s"),
            "{:?}",
            s.render(now)
        );
    }

    #[test]
    fn a_terminal_block_is_redrawn_in_place() {
        let mut s = status();
        let mut out = Vec::new();
        s.draw(&mut out);
        s.draw(&mut out);
        let text = String::from_utf8(out).unwrap();
        // Drawn twice: the second time from three lines up, each line cleared first.
        assert_eq!(text.matches("\x1b[3A").count(), 1, "{text:?}");
        assert_eq!(text.matches("\r\x1b[2K").count(), 6, "{text:?}");
    }
}
