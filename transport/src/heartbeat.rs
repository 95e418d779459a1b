//! Heartbeats on a control stream, the same on both sides: a `Ping` every
//! interval, any frame from the peer counts as a sign of life, silence past
//! the timeout means the peer is dead (frozen, unplugged, half-open), and a
//! `Pong` answering our oldest outstanding `Ping` gives the round-trip time.
//!
//! Without them a peer that vanished without a FIN (SIGSTOP, a dropped
//! route) would hold its session, ports and slots until TCP keepalive, hours
//! later.

use std::time::Duration;

use reitunnel_proto::Frame;
use tokio::time::{interval_at, Instant, Interval, MissedTickBehavior};

/// What a due heartbeat asks of the session.
#[derive(Debug)]
pub enum Beat {
    /// Send this `Ping`.
    Ping(Frame),
    /// The peer has been silent for the whole timeout (given here): close.
    Dead(Duration),
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

    /// Resolves when the next ping is due, or when the silence reaches the
    /// timeout, whichever comes first: a timeout that is not a multiple of
    /// the interval is kept to, not rounded up to the next ping.
    /// Cancel-safe: use in `select!`.
    pub async fn due(&mut self) -> Beat {
        let Some(ticker) = &mut self.ticker else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = ticker.tick() => {}
            _ = tokio::time::sleep_until(self.last_heard + self.timeout) => {}
        }
        if self.last_heard.elapsed() >= self.timeout {
            return Beat::Dead(self.timeout);
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

    /// How long the peer may stay silent.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pings every 200 ms until the peer has been silent 1.5 s, then dead at
    /// 1.5 s exactly (not at the next ping, 1.6 s), with the limit in hand.
    #[tokio::test(start_paused = true)]
    async fn silence_is_caught_at_the_timeout_not_the_next_ping() {
        let ms = Duration::from_millis;
        let start = Instant::now();
        let mut beat = Heartbeat::new(ms(200), ms(1500));
        let mut pings = 0;
        let dead = loop {
            match beat.due().await {
                Beat::Ping(_) => pings += 1,
                Beat::Dead(limit) => break limit,
            }
        };
        assert_eq!(pings, 7, "pings at 200, 400, ... 1400 ms");
        assert_eq!(dead, ms(1500));
        assert_eq!(start.elapsed(), ms(1500));

        // A frame from the peer restarts the count.
        beat.heard();
        let heard = Instant::now();
        assert!(matches!(beat.due().await, Beat::Ping(_)));
        assert!(heard.elapsed() <= ms(200));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pong_for_the_timed_ping_gives_the_round_trip() {
        let ms = Duration::from_millis;
        let mut beat = Heartbeat::new(ms(100), ms(1000));
        let Beat::Ping(Frame::Ping { seq }) = beat.due().await else {
            panic!("a ping first")
        };
        tokio::time::advance(ms(7)).await;
        assert_eq!(beat.pong(seq + 1), None, "not the timed ping");
        assert_eq!(beat.pong(seq), Some(ms(7)));
        assert_eq!(beat.pong(seq), None, "answered once");
    }
}
