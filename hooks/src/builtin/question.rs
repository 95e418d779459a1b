//! An asynchronous gate's question as one JSON object: what `http_auth`
//! POSTs to its service and what a `command` gate writes to its
//! program's stdin, so one script can serve either.
//!
//! ```json
//! {"ask":"login","client":"alice","source":"198.51.100.7:40112","certificate":null,
//!  "nonce":"<64 hex digits>","proof":"<64 hex digits>"}
//! {"ask":"tunnel","client":"alice","source":"198.51.100.7:40112","kind":"reverse",
//!  "transport":"tcp","bind":"0.0.0.0:8080","target":"127.0.0.1:3000"}
//! {"ask":"stream","client":"alice","source":"198.51.100.7:40112","kind":"reverse",
//!  "transport":"tcp","bind":"0.0.0.0:8080","target":"127.0.0.1:3000","visitor":"203.0.113.9:5555"}
//! ```

use serde_json::{json, Value};

use super::webhook::endpoint::hex;
use crate::authorize::Ask;
use crate::info::TunnelInfo;

/// The question `ask` as one JSON object (see the module docs).
pub(crate) fn question(ask: &Ask<'_>) -> Value {
    match ask {
        Ask::Login {
            client,
            login,
            certificate,
        } => json!({
            "ask": "login",
            "client": &*client.name,
            "source": client.peer.to_string(),
            "certificate": certificate,
            "nonce": hex(login.nonce),
            "proof": hex(login.proof),
        }),
        Ask::Tunnel(tunnel) => tunnel_fields(json!({ "ask": "tunnel" }), tunnel),
        Ask::Stream(stream) => {
            let mut body = tunnel_fields(json!({ "ask": "stream" }), &stream.tunnel);
            body["visitor"] = Value::from(stream.peer.to_string());
            body
        }
    }
}

/// `body` with the fields that describe `tunnel` and its client.
pub(crate) fn tunnel_fields(mut body: Value, tunnel: &TunnelInfo) -> Value {
    body["client"] = Value::from(&*tunnel.client.name);
    body["source"] = Value::from(tunnel.client.peer.to_string());
    body["kind"] = Value::from(tunnel.kind.as_str());
    body["transport"] = Value::from(tunnel.transport.as_str());
    body["bind"] = Value::from(tunnel.bind.to_string());
    body["target"] = Value::from(&*tunnel.target);
    body
}
