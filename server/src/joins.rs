//! Sessions that more connections may join (protocol version 2).
//!
//! Across a long path one TCP connection moves at most its kernel send
//! buffer per round trip, so a client may spread its session over several
//! connections ("lanes", see the transport's `mux`). A session lists itself
//! here, with the join key its login handed out, once its control stream is
//! up; a connection whose `Join` proves that key becomes one more lane of
//! it, up to `max_connections_per_client` in all. Lanes are not sessions:
//! hooks, limits and the admin API see one client with one session, and a
//! lane's end ends only the streams on it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use reitunnel_hooks::{ClientInfo, Reason, RefuseCode};
use reitunnel_proto::auth::{verify_lane, LANE_KEY_LEN};
use reitunnel_proto::login::JoinRequest;
use reitunnel_proto::ClientId;
use reitunnel_transport::MuxHandle;

use crate::limits::{Slot, Slots};

/// The sessions open to joins, by id.
#[derive(Debug, Default)]
pub(crate) struct Joins {
    open: Arc<Mutex<HashMap<ClientId, Joinable>>>,
}

#[derive(Debug)]
struct Joinable {
    key: [u8; LANE_KEY_LEN],
    client: Arc<ClientInfo>,
    mux: MuxHandle,
    /// One per connection past the first.
    lanes: Arc<Slots>,
    /// `max_connections_per_client`, the first connection included.
    max: usize,
}

/// A session's place in [`Joins`]; dropping it closes the session to joins.
#[derive(Debug)]
pub(crate) struct Listed {
    id: ClientId,
    open: Arc<Mutex<HashMap<ClientId, Joinable>>>,
}

impl Drop for Listed {
    fn drop(&mut self) {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

/// A connection admitted into a session: the session's multiplexer to add
/// it to, whose it is, and its `max_connections_per_client` slot.
pub(crate) struct Admitted {
    pub(crate) mux: MuxHandle,
    pub(crate) client: Arc<ClientInfo>,
    pub(crate) slot: Slot,
}

impl Joins {
    /// Opens `client`'s session, multiplexed by `mux`, to connections that
    /// prove `key`, up to `max` connections in all.
    pub(crate) fn list(
        &self,
        client: Arc<ClientInfo>,
        key: [u8; LANE_KEY_LEN],
        mux: MuxHandle,
        max: usize,
    ) -> Listed {
        let id = client.id;
        let lanes = Arc::new(Slots::new(
            "max_connections_per_client",
            max.saturating_sub(1),
        ));
        let joinable = Joinable {
            key,
            client,
            mux,
            lanes,
            max,
        };
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.insert(id, joinable);
        Listed {
            id,
            open: self.open.clone(),
        }
    }

    /// How many connections session `id` runs over: 1 for a session not
    /// (or no longer) open to joins.
    pub(crate) fn connections(&self, id: ClientId) -> usize {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.get(&id).map_or(1, |session| session.mux.lanes())
    }

    /// Checks a join: the session must be open to joins, the proof must
    /// hold for its key, and it must have room for one more connection.
    pub(crate) fn admit(&self, request: &JoinRequest) -> Result<Admitted, Reason> {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let id = request.client_id;
        let Some(session) = open.get(&id) else {
            return Err(Reason::new(
                RefuseCode::Unavailable,
                format!("no session {id} to join (it ended, or has not started yet)"),
            ));
        };
        if !verify_lane(&session.key, &request.nonce, id.0, &request.proof) {
            return Err(Reason::auth_failed(format!(
                "the join proof for session {id} is wrong"
            )));
        }
        // The slots count the connections past the first; the limit
        // counts them all.
        let slot = session.lanes.take().map_err(|_| {
            let max = session.max;
            let message =
                format!("connection refused: limit max_connections_per_client = {max} reached");
            Reason::new(RefuseCode::LimitReached, message)
        })?;
        Ok(Admitted {
            mux: session.mux.clone(),
            client: session.client.clone(),
            slot,
        })
    }
}
