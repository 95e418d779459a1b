//! What `dist/` ships for operators: the systemd units pass
//! `systemd-analyze verify` with the real binaries in place of the install
//! paths, and every metric the Prometheus alert rules use is one the
//! server exports.

use std::path::{Path, PathBuf};
use std::process::Command;

use reitunnel_testkit::{client_program, server_program};

fn dist(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../dist")
        .join(path)
}

/// What `systemd-analyze verify` says of `unit` with `/usr/local/bin/NAME`
/// replaced by `binary`: `None` where the tool is missing.
fn verify(unit: &str, name: &str, binary: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dist(&format!("systemd/{unit}"))).unwrap();
    let installed = format!("/usr/local/bin/{name}");
    assert!(text.contains(&installed), "{unit} runs {installed}");
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join(unit);
    std::fs::write(
        &copy,
        text.replace(&installed, binary.to_str().expect("a UTF-8 path")),
    )
    .unwrap();
    let out = match Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("systemd-analyze: {e}"),
    };
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{unit}: {said}");
    Some(said)
}

#[test]
fn systemd_units_verify_clean() {
    let units = [
        (
            "reitunnel-server.service",
            "reitunnel-server",
            server_program(),
        ),
        (
            "reitunnel-client.service",
            "reitunnel-client",
            client_program(),
        ),
    ];
    for (unit, name, binary) in units {
        let Some(said) = verify(unit, name, binary) else {
            eprintln!("systemd-analyze is not installed: units not verified (.ci/run installs it)");
            return;
        };
        assert_eq!(said.trim(), "", "{unit}: systemd-analyze complained");
        // The flags the unit passes are the binary's.
        let help = Command::new(binary).arg("--help").output().unwrap();
        assert!(String::from_utf8_lossy(&help.stdout).contains("--config"));
    }
    // The check sees a broken unit: a typo in a value is only a warning,
    // which the assertion above would catch.
    let text = std::fs::read_to_string(dist("systemd/reitunnel-server.service")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.service");
    let text = text
        .replace(
            "/usr/local/bin/reitunnel-server",
            server_program().to_str().expect("a UTF-8 path"),
        )
        .replace("Type=exec", "Type=exce");
    std::fs::write(&broken, text).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&broken)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("Failed to parse service type"), "{said}");
}

#[test]
fn alert_rules_use_only_metrics_the_server_exports() {
    let rules = std::fs::read_to_string(dist("prometheus/reitunnel.rules.yml")).unwrap();
    // The metrics hook and the webhook's health are where metrics are named.
    let builtin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hooks/src/builtin");
    let exported: String = ["metrics.rs", "webhook/mod.rs", "webhook/delivery.rs"]
        .iter()
        .map(|file| std::fs::read_to_string(builtin.join(file)).unwrap())
        .collect();
    let mut used = Vec::new();
    let mut rest = rules.as_str();
    while let Some(at) = rest.find("reitunnel_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        used.push(name);
    }
    assert!(used.len() >= 5, "{used:?}");
    for name in &used {
        assert!(
            exported.contains(&format!("\"{name}\"")),
            "the alert rules use {name}, which no hook exports"
        );
    }
    // Every rule is an alert with an expression, a severity and a summary.
    let alerts = rules.matches("- alert:").count();
    assert!(alerts >= 5);
    for key in ["expr:", "severity:", "summary:"] {
        assert_eq!(rules.matches(key).count(), alerts, "each alert has {key}");
    }
}
