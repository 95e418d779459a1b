//! Heartbeats on a control stream, the same on both sides: a `Ping` every
//! interval, any frame from the peer counts as a sign of life, silence past
//! the timeout means the peer is dead (frozen, unplugged, half-open), and a
//! `Pong` answering our oldest outstanding `Ping` gives the round-trip time.
//!
//! Without them a peer that vanished without a FIN (SIGSTOP, a dropped
//! route) would hold its session, ports and slots until TCP keepalive, hours
//! later.

use std::time::Duration;

use futures::SinkExt;
use reitunnel_proto::{Frame, FrameCodec};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{interval_at, timeout, Instant, Interval, MissedTickBehavior};
use tokio_util::codec::Framed;

/// What a due heartbeat asks of the session.
#[derive(Debug)]
pub enum Beat {
    /// Send this `Ping`.
    Ping(Frame),
    /// The peer has been silent this long, past the timeout: close.
    Dead(Duration),
}

/// Why a control frame could not be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendFailure {
    /// The stream is closed or broken.
    Closed,
    /// The peer stopped reading: the frame did not go out within the heartbeat timeout.
    Stalled(Duration),
}

/// One side's heartbeat state.
#[derive(Debug)]
pub struct Heartbeat {
    ticker: Option<Interval>,
    timeout: Duration,
    last_heard: Instant,
    seq: u64,
    outstanding: Option<(u64, Instant)>,
}

impl Heartbeat {
    /// Pings every `interval`; the peer is dead after `timeout` of silence.
    /// A zero interval turns heartbeats off (the session then relies on TCP).
    pub fn new(interval: Duration, timeout: Duration) -> Heartbeat {
        let ticker = (!interval.is_zero()).then(|| {
            let mut ticker = interval_at(Instant::now() + interval, interval);
            ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
            ticker
        });
        Heartbeat {
            ticker,
            timeout,
            last_heard: Instant::now(),
            seq: 0,
            outstanding: None,
        }
    }

    /// Resolves when the next ping is due (cancel-safe: use in `select!`).
    pub async fn due(&mut self) -> Beat {
        match &mut self.ticker {
            Some(ticker) => ticker.tick().await,
            None => std::future::pending().await,
        };
        let silent = self.last_heard.elapsed();
        if silent >= self.timeout {
            return Beat::Dead(silent);
        }
        self.seq += 1;
        if self.outstanding.is_none() {
            self.outstanding = Some((self.seq, Instant::now()));
        }
        Beat::Ping(Frame::Ping { seq: self.seq })
    }

    /// Notes that a frame arrived from the peer.
    pub fn heard(&mut self) {
        self.last_heard = Instant::now();
    }

    /// Takes a `Pong`; returns the round trip if it answers the timed `Ping`.
    pub fn pong(&mut self, seq: u64) -> Option<Duration> {
        match self.outstanding {
            Some((sent, at)) if sent == seq => {
                self.outstanding = None;
                Some(at.elapsed())
            }
            _ => None,
        }
    }

    /// Sends a control frame, giving up if the peer does not take it within
    /// the heartbeat timeout (it stopped reading: it must not hold the
    /// session's task forever).
    pub async fn send<T>(
        &self,
        control: &mut Framed<T, FrameCodec>,
        frame: Frame,
    ) -> Result<(), SendFailure>
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        match timeout(self.timeout, control.send(frame)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(SendFailure::Closed),
            Err(_) => Err(SendFailure::Stalled(self.timeout)),
        }
    }
}
