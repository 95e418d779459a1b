use super::*;
use crate::hook_config::table::TableError;
use reitunnel_hooks::events::{Event, EventSink};
use reitunnel_hooks::HookChain;

/// The table written in TOML (without `[[hooks]]`).
fn table(text: &str) -> Result<HookTable, String> {
    let raw: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    HookTable::parse(raw).map_err(|e: TableError| e.message().to_owned())
}

/// A table that must parse.
fn t(text: &str) -> HookTable {
    table(text).unwrap()
}

fn webhook(url: &str, secret: &str) -> HookTable {
    t(&format!(
        "kind = \"webhook\"\nurl = \"{url}\"\nsecret = \"{secret}\""
    ))
}

fn build(specs: &[HookTable]) -> Result<(Vec<String>, Background), String> {
    let (chain, bg) = add_hooks(
        HookChain::builder(),
        specs,
        "test",
        Path::new("server.toml"),
    )
    .map_err(|e| e.to_string())?;
    let names = chain
        .build()
        .names()
        .iter()
        .map(|n| n.to_string())
        .collect();
    Ok((names, bg))
}

/// The names of the hooks of `new` that are not the same instance as in `old`.
fn rebuilt(old: &HookSet, new: &HookSet) -> Vec<String> {
    let chain = |set: &HookSet| set.append_to(HookChain::builder()).build();
    let fresh = chain(new).without(&chain(old));
    fresh.names().iter().map(|n| n.to_string()).collect()
}

#[test]
fn a_rebuild_keeps_hooks_whose_table_did_not_change() {
    let dir = tempfile::tempdir().unwrap();
    let audit = |name: &str| {
        let path = dir.path().join(name);
        t(&format!(
            "kind = \"audit\"\npath = {:?}",
            path.display().to_string()
        ))
    };
    let quota = t("kind = \"quota\"\nbytes = \"1MiB\"\nperiod_secs = 60");
    let meter = t("kind = \"meter\"\ninterval_secs = 10\nsinks = [\"log\"]");
    let policy = t("kind = \"policy\"");
    let path = Path::new("server.toml");
    let specs = [
        policy.clone(),
        quota.clone(),
        meter.clone(),
        audit("a.jsonl"),
    ];
    let first = HookSet::build(&specs, "t", path).unwrap();
    assert_eq!(first.background().meters.len(), 1);

    // Same tables: only the policy is read again.
    let same = first.rebuild(&specs, "t", path).unwrap();
    assert_eq!(rebuilt(&first, &same), ["policy"]);
    assert!(Arc::ptr_eq(
        &same.background().meters[0].0,
        &first.background().meters[0].0
    ));
    assert!(Arc::ptr_eq(
        &same.background().audit[0],
        &first.background().audit[0]
    ));

    // Another audit file: the quota, which sends events to it, is built
    // anew; the meter, which logs, is kept; and a changed table is new.
    let other_meter = t("kind = \"meter\"\ninterval_secs = 20");
    let moved = [policy, quota, meter, other_meter, audit("b.jsonl")];
    let next = same.rebuild(&moved, "t", path).unwrap();
    assert_eq!(rebuilt(&same, &next), ["policy", "quota", "meter", "audit"]);
    assert_eq!(next.background().meters.len(), 2);
    assert!(Arc::ptr_eq(
        &next.background().meters[0].0,
        &same.background().meters[0].0
    ));

    // A table that cannot be built fails the rebuild and leaves the old
    // set as it was.
    let bad = [t(
        "kind = \"policy\"\nclients_file = \"/nonexistent/clients.toml\"",
    )];
    let err = next.rebuild(&bad, "t", path).unwrap_err().to_string();
    assert!(err.contains("/nonexistent/clients.toml"), "{err}");
    assert_eq!(next.background().meters.len(), 2);
}

#[test]
fn sampled_wraps_data_observers_only() {
    let (names, _) = build(&[t(
        "kind = \"sampled\"\none_in = 4\nhook = { kind = \"log\" }",
    )])
    .unwrap();
    assert_eq!(names, ["sampled(log)"]);
    // The wrapped table is checked as it is read.
    let err = table("kind = \"sampled\"\none_in = 4\nhook = { kind = \"quota\", bytes = \"1B\" }")
        .unwrap_err();
    assert!(
        err.contains("limits and quotas must see every chunk"),
        "{err}"
    );
    // What may be sampled is said before anything about the wrapped table's keys.
    let err = table("kind = \"sampled\"\none_in = 4\nhook = { kind = \"quota\", bytes = \"1B\", period_secs = 0 }")
        .unwrap_err();
    assert!(
        err.contains("limits and quotas must see every chunk"),
        "{err}"
    );
    let err = table("kind = \"sampled\"\nhook = { kind = \"log\" }").unwrap_err();
    assert!(err.contains("exactly one of one_in and every_ms"), "{err}");
    let err = table("kind = \"sampled\"\none_in = 4\nevery_ms = 10\nhook = { kind = \"log\" }")
        .unwrap_err();
    assert!(err.contains("exactly one of one_in and every_ms"), "{err}");
    let err = table("kind = \"sampled\"\none_in = 0\nhook = { kind = \"log\" }").unwrap_err();
    assert!(err.contains("one_in must be at least 1"), "{err}");
    let err = table("kind = \"sampled\"\none_in = 2\nhook = { kind = \"metrics\", typo = 1 }")
        .unwrap_err();
    assert!(err.contains("unknown field `typo`"), "{err}");
}

#[test]
fn policy_clients_come_from_the_config_and_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("clients.toml");
    let policy = |inline: &[&str]| {
        let clients: String = inline
            .iter()
            .map(|n| format!("clients.{n}.token = \"t\"\n"))
            .collect();
        let file = file.display().to_string();
        t(&format!(
            "kind = \"policy\"\nclients_file = {file:?}\n{clients}"
        ))
    };
    std::fs::write(&file, "[clients.bob]\ntoken = \"b\"\nmax_tunnels = 2\n").unwrap();
    let (names, _) = build(&[policy(&["alice"])]).unwrap();
    assert_eq!(names, ["policy"]);
    let err = build(&[policy(&["bob"])]).unwrap_err();
    assert!(
        err.contains("client 'bob' is in both `clients` and"),
        "{err}"
    );
    std::fs::write(&file, "[clients.bob]\ntoken = \"b\"\nmax_tunels = 2\n").unwrap();
    let err = build(&[policy(&[])]).unwrap_err();
    assert!(
        err.contains("clients.toml")
            && err.contains("line 3")
            && err.contains("unknown field `max_tunels`"),
        "{err}"
    );
}

#[test]
fn webhooks_are_built_as_event_hooks_and_checked() {
    std::env::set_var("REITUNNEL_TEST_WEBHOOK_SECRET", "s3cret");
    // Outside a runtime, as in the server binary: delivery gets its own thread.
    let (names, bg) = build(&[
        webhook("http://127.0.0.1:9/a", "${REITUNNEL_TEST_WEBHOOK_SECRET}"),
        webhook("http://127.0.0.1:9/b", "plain"),
    ])
    .unwrap();
    assert_eq!(names, ["webhook", "webhook"]);
    let urls: Vec<_> = bg.webhooks.iter().map(|w| w.url()).collect();
    // Shown without their paths, which may be secrets.
    assert_eq!(urls, ["http://127.0.0.1:9", "http://127.0.0.1:9"]);

    let e = build(&[webhook(
        "http://127.0.0.1:9/",
        "${REITUNNEL_TEST_UNSET_WEBHOOK}",
    )])
    .err()
    .unwrap();
    assert!(
        e.contains("secret refers to ${REITUNNEL_TEST_UNSET_WEBHOOK}, which is not set"),
        "{e}"
    );
    // https:// with a private CA: a CA file that is not there is named.
    let private = t("kind = \"webhook\"\nurl = \"https://hooks.internal/x\"\nsecret = \"s\"\nca = \"/nonexistent/receivers-ca.pem\"");
    let e = build(&[private]).err().unwrap();
    assert!(
        e.contains("webhook https://hooks.internal:443:")
            && !e.contains("/x")
            && e.contains("/nonexistent/receivers-ca.pem"),
        "{e}"
    );
}

#[test]
fn a_webhook_gone_unhealthy_is_recorded_by_the_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    // Nothing listens on port 9 of loopback: every attempt fails at once.
    let dead =
        t("kind = \"webhook\"\nurl = \"http://127.0.0.1:9/hook\"\nsecret = \"s\"\nretries = 0");
    let audit_table = format!("kind = \"audit\"\npath = {:?}", audit.display().to_string());
    let specs = [t(&audit_table), dead];
    let set = HookSet::build(&specs, "edge-1", Path::new("server.toml")).unwrap();
    let webhook = &set.background().webhooks[0];
    for n in 0..reitunnel_hooks::builtin::UNHEALTHY_AFTER {
        webhook.emit(&Event::now("tunnel.opened").with("n", n));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let line = loop {
        set.background().audit[0].flush().unwrap();
        let text = std::fs::read_to_string(&audit).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains("webhook.unhealthy")) {
            break line.to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no webhook.unhealthy in {text}"
        );
        std::thread::yield_now();
    };
    assert!(line.contains(r#""endpoint":"127.0.0.1:9""#), "{line}");
    assert!(line.contains(r#""server":"edge-1""#), "{line}");
    assert!(line.contains("connect"), "the last error: {line}");
}

#[test]
fn redis_buses_are_event_hooks_that_show_no_password_and_need_somewhere_to_send() {
    std::env::set_var("REITUNNEL_TEST_REDIS_PASSWORD", "hunter2");
    // Outside a runtime, as in the server binary; Redis need not be up.
    let (names, bg) = build(&[t(
        "kind = \"redis\"\nurl = \"redis://:${REITUNNEL_TEST_REDIS_PASSWORD}@127.0.0.1:9/2\"",
    )])
    .unwrap();
    assert_eq!(names, ["redis"]);
    assert_eq!(bg.redis[0].url(), "redis://127.0.0.1:9");
    assert!(!format!("{:?}", bg.redis[0]).contains("hunter2"));

    let nowhere = table("kind = \"redis\"\nurl = \"redis://h\"\nstream = \"\"").unwrap_err();
    assert!(nowhere.contains("needs a channel_prefix"), "{nowhere}");
    let e = build(&[t("kind = \"redis\"\nurl = \"http://:hunter2@h/\"")])
        .err()
        .unwrap();
    assert!(
        e.contains("redis:// or rediss://") && !e.contains("hunter2"),
        "{e}"
    );
    let e = build(&[t(
        "kind = \"redis\"\nurl = \"redis://:${REITUNNEL_TEST_UNSET_REDIS}@h\"",
    )])
    .err()
    .unwrap();
    assert!(
        e.contains("${REITUNNEL_TEST_UNSET_REDIS}, which is not set"),
        "{e}"
    );
}

#[test]
fn statsd_tables_are_checked_key_by_key() {
    let (names, bg) = build(&[t("kind = \"statsd\"\naddr = \"127.0.0.1:8125\"")]).unwrap();
    assert_eq!(names, ["statsd"]);
    assert_eq!(bg.statsd[0].1, std::time::Duration::from_secs(10));
    for (keys, wanted) in [
        ("addr = \"localhost\"", "addr 'localhost' is not host:port"),
        (
            "addr = \"h:1\"\ninterval_ms = 0",
            "interval_ms must be at least 1",
        ),
        (
            "addr = \"h:1\"\nmax_packet_bytes = 100",
            "max_packet_bytes must be 512..=65507",
        ),
        (
            "addr = \"h:1\"\ntags = { env = \"prod\" }",
            "tags need flavor = \"dogstatsd\"",
        ),
        (
            "addr = \"h:1\"\nflavor = \"graphite\"",
            "unknown variant `graphite`",
        ),
        ("addr = \"h:1\"\nport = 1", "unknown field `port`"),
        (
            "addr = \"h:1\"\nprefix = \"a|b\"",
            "prefix may hold letters",
        ),
    ] {
        let e = table(&format!("kind = \"statsd\"\n{keys}")).unwrap_err();
        assert!(e.contains(wanted), "{keys}: {e}");
    }
    let e = build(&[t("kind = \"statsd\"\naddr = \"no-such-host.invalid:8125\"")])
        .err()
        .unwrap();
    assert!(
        e.contains("statsd: addr 'no-such-host.invalid:8125'"),
        "{e}"
    );
}

#[test]
fn alert_tables_name_the_rule_and_target_that_are_wrong() {
    let target = "[targets.ops]\nformat = \"slack\"\nurl = \"http://127.0.0.1:9/services/T/B/X\"\n";
    let alert = |rule: &str| format!("kind = \"alert\"\n{target}[[rules]]\nname = \"r\"\n{rule}");
    let (names, bg) = build(&[t(&alert(
        "metric = \"client_rate_up\"\nabove = \"100MiB/s\"\nfor_secs = 30\ntargets = [\"ops\"]",
    ))])
    .unwrap();
    assert_eq!(names, ["alert"]);
    assert_eq!(bg.alerts.len(), 1);
    let targets: Vec<&str> = bg.webhooks.iter().map(|w| w.url()).collect();
    assert_eq!(targets, ["http://127.0.0.1:9"], "shown without the path");
    for (rule, wanted) in [
        (
            "metric = \"open_streams\"\ntargets = [\"ops\"]",
            "rule 'r' needs `above`",
        ),
        (
            "metric = \"open_streams\"\nabove = \"1MiB\"\ntargets = [\"ops\"]",
            "only the client rates take a byte size",
        ),
        (
            "metric = \"client_rate_up\"\nabove = \"fast\"\ntargets = [\"ops\"]",
            "rule 'r': above = \"fast\"",
        ),
        (
            "metric = \"failed_logins\"\nabove = 20\ntargets = [\"ops\"]",
            "failed_logins needs in_secs",
        ),
        (
            "metric = \"sessions\"\nabove = 20\nin_secs = 60\ntargets = [\"ops\"]",
            "in_secs is for failed_logins only",
        ),
        (
            "metric = \"sessions\"\nabove = 1\ntargets = [\"pager\"]",
            "names target 'pager'",
        ),
        (
            "metric = \"sessions\"\nabove = 1\ntargets = []",
            "rule 'r' names no targets",
        ),
        (
            "metric = \"cpu\"\nabove = 1\ntargets = [\"ops\"]",
            "unknown variant `cpu`",
        ),
        (
            "metric = \"sessions\"\nabove = 1\ntargets = [\"ops\"]\nwhen = 1",
            "unknown field `when`",
        ),
    ] {
        let e = table(&alert(rule)).unwrap_err();
        assert!(e.contains(wanted), "{rule}: {e}");
    }
    let unsigned = "kind = \"alert\"\n[targets.a]\nformat = \"webhook\"\nurl = \"http://h/\"\n\
                    [[rules]]\nname = \"r\"\nmetric = \"webhook_unhealthy\"\ntargets = [\"a\"]";
    let e = table(unsigned).unwrap_err();
    assert!(
        e.contains("target 'a' of format \"webhook\" needs a secret"),
        "{e}"
    );
    let rule = "[[rules]]\nname = \"r\"\nmetric = \"sessions\"\nabove = 1\ntargets = [\"a\"]";
    for (target, wanted) in [
        (
            "format = \"command\"\nurl = \"http://h/\"",
            "target 'a' of format \"command\" needs command",
        ),
        (
            "format = \"command\"",
            "target 'a' of format \"command\" needs command",
        ),
        (
            "format = \"slack\"\ncommand = [\"/bin/true\"]",
            "target 'a' of format \"slack\" needs a url and no command",
        ),
    ] {
        let e = table(&format!("kind = \"alert\"\n[targets.a]\n{target}\n{rule}")).unwrap_err();
        assert!(e.contains(wanted), "{target}: {e}");
    }
}

/// `text` as a whole config file: `Err` is its error, which names the line.
fn file(text: &str) -> Result<(), String> {
    crate::file_config::FileConfig::parse(text, Path::new("server.toml"))
        .map(drop)
        .map_err(|e| e.to_string())
}

#[cfg(unix)]
#[test]
fn command_hooks_refuse_what_cannot_work_naming_the_key_and_its_line() {
    let hook = "[[hooks]]\nkind = \"command\"\ncommand = [\"/bin/true\"]\n";
    file(hook).unwrap();
    // serde's errors name the table's line; a failed check names its key's.
    let cases = [
        ("shell = true\n", "line 1: hook #1: unknown field `shell`"),
        (
            "timeout_secs = 0\n",
            "line 4: hook #1: command /bin/true: timeout_secs must be at least 1",
        ),
        (
            "max_concurrent = 0\n",
            "line 1: hook #1: invalid value: integer `0`, expected a nonzero",
        ),
        (
            "queue = 1\n",
            "line 4: hook #1: command /bin/true: queue must be at least 2",
        ),
        (
            "gate = \"door\"\n",
            "line 1: hook #1: unknown variant `door`",
        ),
        (
            "env = [\"A=B\"]\n",
            "line 4: hook #1: command /bin/true: env names variables",
        ),
        (
            "required = false\n",
            "line 4: hook #1: command /bin/true: required is for gate",
        ),
        (
            "gate = \"login\"\n\nevents = [\"client.connected\"]\n",
            "line 6: hook #1: command /bin/true: a gate answers questions, not events",
        ),
    ];
    for (keys, wanted) in cases {
        let e = file(&format!("{hook}{keys}")).unwrap_err();
        assert!(e.contains(wanted), "{keys:?}: {e}");
    }
    let e = file("[[hooks]]\nkind = \"command\"\ncommand = []\n").unwrap_err();
    assert!(
        e.contains("line 3: hook #1: command: the program to run is missing"),
        "{e}"
    );
    let e = file("[[hooks]]\nkind = \"command\"\n").unwrap_err();
    assert!(e.contains("missing field `command`"), "{e}");
}

#[cfg(unix)]
#[test]
fn a_command_notifier_is_an_event_sink_and_a_gate_is_an_asynchronous_gate() {
    let (names, bg) = build(&[
        t("kind = \"command\"\ncommand = [\"/bin/true\"]\nevents = [\"client.connected\"]"),
        t("kind = \"command\"\ncommand = [\"/bin/true\"]\ngate = \"login\"\nrequired = false"),
        t("kind = \"command\"\ncommand = [\"/bin/true\"]\ngate = \"port\""),
    ])
    .unwrap();
    assert_eq!(names, ["command", "command", "command"]);
    assert_eq!(bg.commands.len(), 1, "the notifier");
    assert_eq!(bg.commands[0].program(), "/bin/true");
    let gates: Vec<bool> = bg.authorizers.iter().map(|a| a.chooses_ports()).collect();
    assert_eq!(gates, [false, true], "a login gate, then a port chooser");
}
