//! What a webhook's request body is. Our own receivers get the event as
//! it is (signed, docs/EVENTS.md); a chat's incoming webhook takes its own
//! JSON: Slack a message with a section block, Microsoft Teams a
//! MessageCard. Both are written from any event: its `summary` field (or
//! its name) as the headline, its other fields as facts, so the alert
//! hook's events and any other event read the same way.

use serde_json::{json, Value};

use crate::events::Event;

/// The body a [`Webhook`](super::Webhook) POSTs for each event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BodyShape {
    /// The event's JSON, as docs/EVENTS.md describes it.
    #[default]
    Event,
    /// A Slack incoming-webhook message: `text` and one `section` block.
    Slack,
    /// A Microsoft Teams MessageCard: title, colour and the fields as facts.
    Teams,
}

impl BodyShape {
    /// The request body for `event`.
    pub(crate) fn render(self, event: &Event) -> String {
        match self {
            BodyShape::Event => event.to_json(),
            BodyShape::Slack => slack(event).to_string(),
            BodyShape::Teams => teams(event).to_string(),
        }
    }
}

/// The event's `summary` field, or its name.
fn headline(event: &Event) -> String {
    match event.fields.get("summary") {
        Some(Value::String(s)) => s.clone(),
        _ => event.event.to_owned(),
    }
}

/// Every field but the summary, as (name, text).
fn facts(event: &Event) -> Vec<(&str, String)> {
    let mut facts = vec![("event", event.event.to_owned())];
    facts.extend(
        event
            .fields
            .iter()
            .filter(|(k, _)| *k != "summary")
            .map(|(k, v)| match v {
                Value::String(s) => (k.as_str(), s.clone()),
                other => (k.as_str(), other.to_string()),
            }),
    );
    facts.push(("timestamp", event.timestamp.clone()));
    facts
}

/// Slack's mrkdwn takes `&`, `<` and `>` as markup.
fn escaped(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn slack(event: &Event) -> Value {
    let headline = headline(event);
    let mut text = format!("*{}*", escaped(&headline));
    for (name, value) in facts(event) {
        text.push_str(&format!("\n• *{name}*: {}", escaped(&value)));
    }
    json!({
        "text": headline,
        "blocks": [{ "type": "section", "text": { "type": "mrkdwn", "text": text } }],
    })
}

fn teams(event: &Event) -> Value {
    let headline = headline(event);
    let colour = match event.fields.get("state").and_then(Value::as_str) {
        Some("firing") => "D70000",
        Some("resolved") => "2EB886",
        _ => "0076D7",
    };
    let facts: Vec<Value> = facts(event)
        .into_iter()
        .map(|(name, value)| json!({ "name": name, "value": value }))
        .collect();
    json!({
        "@type": "MessageCard",
        "@context": "https://schema.org/extensions",
        "summary": headline,
        "themeColor": colour,
        "title": headline,
        "sections": [{ "facts": facts }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert() -> Event {
        Event::now("alert.firing")
            .with("summary", "alice <fast> & loud")
            .with("state", "firing")
            .with("value", 3.5)
    }

    #[test]
    fn slack_gets_a_section_block_with_escaped_text() {
        let body: Value = serde_json::from_str(&BodyShape::Slack.render(&alert())).unwrap();
        assert_eq!(body["text"], "alice <fast> & loud");
        let block = &body["blocks"][0];
        assert_eq!(block["type"], "section");
        let text = block["text"]["text"].as_str().unwrap();
        assert!(
            text.starts_with("*alice &lt;fast&gt; &amp; loud*"),
            "{text}"
        );
        assert!(text.contains("• *value*: 3.5"), "{text}");
    }

    #[test]
    fn teams_gets_a_message_card_coloured_by_state() {
        let body: Value = serde_json::from_str(&BodyShape::Teams.render(&alert())).unwrap();
        assert_eq!(body["@type"], "MessageCard");
        assert_eq!(body["themeColor"], "D70000");
        assert_eq!(body["title"], "alice <fast> & loud");
        let facts = body["sections"][0]["facts"].as_array().unwrap();
        assert!(facts
            .iter()
            .any(|f| f["name"] == "event" && f["value"] == "alert.firing"));
    }

    #[test]
    fn events_stay_as_they_are() {
        let event = alert();
        assert_eq!(BodyShape::Event.render(&event), event.to_json());
    }
}
