use super::*;
use crate::hook_config::kinds::{audit, metrics, quota, rate_limit, sampled, webhook};
use crate::Network;

fn parse(text: &str) -> Result<FileConfig, String> {
    FileConfig::parse(text, Path::new("server.toml")).map_err(|e| e.to_string())
}

#[test]
fn every_hook_kind_parses_in_order() {
    let cfg = parse(
        r#"
listen = "127.0.0.1:7000"
allow_ports = "20000-20100"
[[hooks]]
kind = "rate_limit"
per_client_bytes_per_sec = "10MiB"
visitors_per_ip_per_sec = 50
[[hooks]]
kind = "quota"
bytes = "1GiB"
[[hooks]]
kind = "meter"
interval_secs = 5
sinks = ["log", "events"]
[[hooks]]
kind = "audit"
path = "/tmp/audit.jsonl"
[[hooks]]
kind = "log"
"#,
    )
    .unwrap();
    assert_eq!(
        cfg.settings.allow_ports,
        Some("20000-20100".parse().unwrap())
    );
    let kinds: Vec<_> = cfg.hooks.iter().map(HookTable::kind).collect();
    assert_eq!(kinds, ["rate_limit", "quota", "meter", "audit", "log"]);
    let limit = cfg.hooks[0].config::<rate_limit::RateLimit>().unwrap();
    assert_eq!(limit.per_client_bytes_per_sec, Some(ByteSize(10485760)));
    assert_eq!(
        cfg.hooks[1].config::<quota::Quota>(),
        Some(&quota::Config {
            bytes: ByteSize(1073741824),
            period_secs: 86_400
        })
    );
}

#[test]
fn unknown_kind_field_and_bad_values_name_the_line() {
    let e = parse("[[hooks]]\nkind = \"log\"\n\n[[hooks]]\nkind = \"telepathy\"\n").unwrap_err();
    assert!(
        e.contains("line 4: hook #2: unknown variant `telepathy`"),
        "{e}"
    );
    // Errors inside a hook table name that table's header line.
    let e = parse(
        "[[hooks]]\nkind = \"log\"\n[[hooks]]\nkind = \"quota\"\nbytes = \"1GiB\"\nperiod = 5\n",
    )
    .unwrap_err();
    assert!(
        e.contains("line 3: hook #2: unknown field `period`, expected `bytes` or `period_secs`"),
        "{e}"
    );
    let e = parse("name = \"x\"\nallow_ports = \"20000-abc\"\n").unwrap_err();
    assert!(
        e.contains("line 2") && e.contains("'abc' is not a port"),
        "{e}"
    );
    let e = parse("[[hooks]]\nkind = \"rate_limit\"\nper_client_bytes_per_sec = \"10 parsecs\"\n")
        .unwrap_err();
    assert!(e.contains("line 1: hook #1: unknown unit 'parsecs'"), "{e}");
    let e = parse("name = \"x\"\nproxy_protocol_from = [\"10.0.0.0/8\", \"10.1\"]\n").unwrap_err();
    assert!(
        e.contains("line 2") && e.contains("'10.1' is not a network (like 10.0.0.0/8) or address"),
        "{e}"
    );
    let balancers = parse("proxy_protocol_from = [\"10.0.0.0/8\", \"192.0.2.7\"]\n").unwrap();
    assert_eq!(
        balancers.settings.proxy_protocol_from,
        [
            Network("10.0.0.0/8".parse().unwrap()),
            Network("192.0.2.7/32".parse().unwrap())
        ]
    );
    let e = parse("[[hooks]]\nkind = \"http_auth\"\nurl = \"http://a/\"\non_failure = \"maybe\"\n")
        .unwrap_err();
    assert!(
        e.contains("line 1: hook #1: unknown variant `maybe`, expected `deny` or `allow`"),
        "{e}"
    );
    // A value the kind's checks refuse names its own key's line.
    let e =
        parse("[[hooks]]\nkind = \"quota\"\nbytes = \"1GiB\"\n\nperiod_secs = 0\n").unwrap_err();
    assert!(
        e.contains("line 5: hook #1: quota: period_secs must be at least 1"),
        "{e}"
    );
    let e = parse(
        "[[hooks]]\nkind = \"rate_limit\"\nper_client_bytes_per_sec = \"1MiB\"\nburst = \"0\"\n",
    )
    .unwrap_err();
    assert!(
        e.contains("line 4: hook #1: rate_limit: burst 0 must be 1..=4294967295"),
        "{e}"
    );
    let e = parse("[[hooks]]\nkind = \"policy\"\nvisitors_deny = [\"10.1\"]\n").unwrap_err();
    assert!(
        e.contains("line 3: hook #1: policy: visitors_deny entry '10.1' is not a network"),
        "{e}"
    );
    let e = parse(
        "[[hooks]]\nkind = \"webhook\"\nurl = \"http://h/\"\nsecret = \"s\"\ntimeout_secs = 0\n",
    )
    .unwrap_err();
    assert!(
        e.contains("line 5: hook #1: webhook http://h:80: timeout_secs must be at least 1"),
        "{e}"
    );
    // A burst without a byte rate has nothing to apply to, and is left alone.
    parse("[[hooks]]\nkind = \"rate_limit\"\nvisitors_per_ip_per_sec = 5\nburst = \"0\"\n")
        .unwrap();
    let e = parse("[[hooks]]\nkind = 7\n").unwrap_err();
    assert!(
        e.contains("line 1: hook #1: invalid type: integer, expected a hook kind"),
        "{e}"
    );
    let e = parse("[[hooks]]\npath = \"a\"\n").unwrap_err();
    assert!(e.contains("line 1: hook #1: missing field `kind`"), "{e}");
    let e = parse("lisen = \"0.0.0.0:1\"\n").unwrap_err();
    assert!(
        e.contains("line 1") && e.contains("unknown field `lisen`"),
        "{e}"
    );
}

#[test]
fn secrets_never_show_in_debug_output() {
    let cfg = parse(
        "token = \"tok-111\"\n[[hooks]]\nkind = \"webhook\"\nurl = \"http://h/\"\nsecret = \"hook-222\"\n\
         [[hooks]]\nkind = \"policy\"\n[hooks.clients.alice]\ntoken = \"alice-333\"\n",
    )
    .unwrap();
    let mut server =
        crate::ServerConfig::new("127.0.0.1:0".parse().unwrap(), cfg.settings.token.clone());
    cfg.settings.limits.apply(&mut server);
    let shown = format!("{cfg:?} {server:?}");
    for secret in ["tok-111", "hook-222", "alice-333"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    assert!(shown.contains("MASKED"));
}

#[test]
fn the_example_config_loads_and_builds_its_hooks() {
    std::env::set_var("REITUNNEL_TOKEN", "example");
    let path = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/config/server.toml"
    ));
    let cfg = FileConfig::load(path).unwrap();
    let mut server = crate::ServerConfig::new("127.0.0.1:0".parse().unwrap(), None);
    cfg.settings.limits.apply(&mut server);
    assert_eq!(
        server.limits,
        crate::Limits::default(),
        "the example lists the defaults"
    );
    let s = &cfg.settings;
    assert_eq!(
        (s.drain_timeout_secs, s.port_lease_secs),
        (Some(30), Some(30))
    );
    assert_eq!(cfg.hooks.len(), 4);
    let dir = tempfile::tempdir().unwrap();
    let hooks: Vec<HookTable> = cfg
        .hooks
        .into_iter()
        .map(|h| match h.config::<audit::Audit>() {
            Some(audit) => HookTable::new::<audit::Audit>(audit::Config {
                path: dir.path().join("audit.jsonl"),
                streams: audit.streams,
            })
            .unwrap(),
            None => h,
        })
        .collect();
    let (builder, _bg) =
        crate::hook_config::add_hooks(reitunnel_hooks::HookChain::builder(), &hooks, "t", path)
            .unwrap();
    assert_eq!(
        builder.build().names(),
        ["rate_limit", "quota", "meter", "audit"]
    );
}

#[test]
fn tokens_come_from_the_environment() {
    std::env::set_var("REITUNNEL_TEST_TOKEN_X", "s3cret");
    let cfg = parse("token = \"${REITUNNEL_TEST_TOKEN_X}\"\n").unwrap();
    assert_eq!(
        cfg.settings.token.as_ref().map(Secret::expose),
        Some("s3cret")
    );
    let e = parse("token = \"${REITUNNEL_TEST_UNSET_Y}\"\n").unwrap_err();
    assert_eq!(
        e,
        "config server.toml: token refers to ${REITUNNEL_TEST_UNSET_Y}, which is not set"
    );
    // The admin endpoint's token too.
    std::env::set_var("REITUNNEL_TEST_ADMIN_Z", "adm1n");
    let cfg =
        parse("admin_listen = \"127.0.0.1:9200\"\nadmin_token = \"${REITUNNEL_TEST_ADMIN_Z}\"\n")
            .unwrap();
    assert_eq!(
        cfg.settings.admin_token.as_ref().map(Secret::expose),
        Some("adm1n")
    );
    let e = parse("admin_token = \"${REITUNNEL_TEST_UNSET_Y}\"\n").unwrap_err();
    assert!(
        e.contains("admin_token refers to ${REITUNNEL_TEST_UNSET_Y}"),
        "{e}"
    );
}

#[test]
fn webhook_parses_with_defaults() {
    let cfg = parse(
        r#"
[[hooks]]
kind = "webhook"
url = "http://127.0.0.1:8080/reitunnel"
secret = "${REITUNNEL_WEBHOOK_SECRET}"
[[hooks]]
kind = "webhook"
url = "http://hooks.internal/q"
secret = "plain"
events = ["quota.exceeded", "bandwidth.report"]
timeout_secs = 2
retries = 0
streams = true
"#,
    )
    .unwrap();
    let configs: Vec<_> = cfg
        .hooks
        .iter()
        .map(|h| h.config::<webhook::Webhook>().unwrap().clone())
        .collect();
    assert_eq!(
        configs,
        [
            webhook::Config::to(
                "http://127.0.0.1:8080/reitunnel".into(),
                "${REITUNNEL_WEBHOOK_SECRET}".into()
            ),
            webhook::Config {
                events: vec!["quota.exceeded".into(), "bandwidth.report".into()],
                timeout_secs: 2,
                retries: 0,
                streams: true,
                ..webhook::Config::to("http://hooks.internal/q".into(), "plain".into())
            },
        ]
    );
    let e = parse("[[hooks]]\nkind = \"webhook\"\nsecret = \"x\"\n").unwrap_err();
    assert!(e.contains("line 1: hook #1: missing field `url`"), "{e}");
}

#[test]
fn metrics_hook_and_endpoint_parse() {
    let cfg =
        parse("metrics_listen = \"127.0.0.1:9100\"\n[[hooks]]\nkind = \"metrics\"\n").unwrap();
    assert_eq!(
        cfg.settings.metrics_listen,
        Some("127.0.0.1:9100".parse().unwrap())
    );
    let metrics_100 = metrics::Config {
        max_client_labels: 100,
    };
    assert_eq!(
        cfg.hooks,
        [HookTable::new::<metrics::Metrics>(metrics_100).unwrap()]
    );
}

#[test]
fn sampled_wraps_another_hook() {
    let cfg = parse("[[hooks]]\nkind = \"sampled\"\none_in = 8\nhook = { kind = \"metrics\" }\n")
        .unwrap();
    let metrics_100 = metrics::Config {
        max_client_labels: 100,
    };
    let expected = sampled::Config {
        one_in: Some(8),
        every_ms: None,
        hook: sampled::Observer(HookTable::new::<metrics::Metrics>(metrics_100).unwrap()),
    };
    assert_eq!(
        cfg.hooks,
        [HookTable::new::<sampled::Sampled>(expected).unwrap()]
    );
    assert_ne!(
        cfg.hooks[0],
        parse("[[hooks]]\nkind = \"sampled\"\none_in = 8\nhook = { kind = \"log\" }\n")
            .unwrap()
            .hooks[0],
        "a different wrapped hook is a different table"
    );
}

#[test]
fn byte_sizes() {
    assert_eq!("64KiB".parse::<ByteSize>(), Ok(ByteSize(65536)));
    assert_eq!("1000".parse::<ByteSize>(), Ok(ByteSize(1000)));
    assert_eq!("2 MB".parse::<ByteSize>(), Ok(ByteSize(2_000_000)));
    assert!("MiB".parse::<ByteSize>().is_err());
    assert!("99999999999GiB"
        .parse::<ByteSize>()
        .unwrap_err()
        .contains("too large"));
}
