//! The `REITUNNEL_*` variables a program gets, read from the JSON it gets
//! on stdin (an event, or a gate's question), so a script can branch on
//! them without parsing JSON. A variable is set only where its field
//! applies.

use serde_json::{Map, Value};

/// Each variable and the fields it is read from, the first present winning.
const VARS: &[(&str, &[&str])] = &[
    ("REITUNNEL_EVENT", &["event"]),
    ("REITUNNEL_EVENT_ID", &["id"]),
    ("REITUNNEL_GATE", &["gate"]),
    ("REITUNNEL_CLIENT", &["client"]),
    ("REITUNNEL_TUNNEL", &["tunnel_id"]),
    // A visitor's address, else the client's.
    ("REITUNNEL_REMOTE_ADDR", &["visitor", "peer", "source"]),
    // Visitor → service, and back.
    ("REITUNNEL_BYTES_UP", &["bytes_in"]),
    ("REITUNNEL_BYTES_DOWN", &["bytes_out"]),
];

/// The variables of `fields`, with `REITUNNEL_PORT` the port of `bind`.
pub(crate) fn event_vars(fields: &Map<String, Value>) -> Vec<(&'static str, String)> {
    let text = |value: &Value| match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut vars: Vec<(&'static str, String)> = VARS
        .iter()
        .filter_map(|(var, keys)| {
            let value = keys.iter().find_map(|k| fields.get(*k))?;
            Some((*var, text(value)))
        })
        .collect();
    let port = fields
        .get("bind")
        .and_then(Value::as_str)
        .and_then(|bind| bind.parse::<std::net::SocketAddr>().ok());
    if let Some(bind) = port {
        vars.push(("REITUNNEL_PORT", bind.port().to_string()));
    }
    vars
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_tunnel_gives_its_ids_port_and_bytes() {
        let event = serde_json::json!({
            "event": "tunnel.closed", "id": "ab-1", "client": "alice", "tunnel_id": 7,
            "bind": "127.0.0.1:8080", "bytes_in": 10, "bytes_out": 20,
        });
        let vars = event_vars(event.as_object().unwrap());
        let get = |name| {
            vars.iter()
                .find(|(v, _)| *v == name)
                .map(|(_, x)| x.as_str())
        };
        assert_eq!(get("REITUNNEL_EVENT"), Some("tunnel.closed"));
        assert_eq!(get("REITUNNEL_EVENT_ID"), Some("ab-1"));
        assert_eq!(get("REITUNNEL_TUNNEL"), Some("7"));
        assert_eq!(get("REITUNNEL_PORT"), Some("8080"));
        assert_eq!(get("REITUNNEL_BYTES_UP"), Some("10"));
        assert_eq!(get("REITUNNEL_BYTES_DOWN"), Some("20"));
        assert_eq!(get("REITUNNEL_REMOTE_ADDR"), None, "no address in it");
    }

    #[test]
    fn a_visitor_question_names_the_visitor_not_the_client() {
        let ask = serde_json::json!({
            "gate": "visitor", "client": "alice", "source": "10.0.0.1:1",
            "visitor": "10.0.0.2:2",
        });
        let vars = event_vars(ask.as_object().unwrap());
        assert!(vars.contains(&("REITUNNEL_REMOTE_ADDR", "10.0.0.2:2".to_owned())));
        assert!(vars.contains(&("REITUNNEL_GATE", "visitor".to_owned())));
    }
}
