//! Walks the configuration fixtures: every file under `valid/` loads; every
//! file under `invalid/` is refused with an error naming what its first line
//! (`# expect: KEY`) says.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use dwa_agent::config::AgentConfig;

fn files(dir: &str) -> Vec<std::path::PathBuf> {
    let d = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/config")
        .join(dir);
    let mut v: Vec<_> = std::fs::read_dir(&d)
        .unwrap_or_else(|e| panic!("{}: {e}", d.display()))
        .map(|e| e.expect("entry").path())
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no fixtures in {}", d.display());
    v
}

#[test]
fn valid_configs_load() {
    for f in files("valid") {
        let cfg = AgentConfig::load(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        // And survive a write/read round trip unchanged.
        let again =
            AgentConfig::parse(&toml::to_string(&cfg).expect("serialize")).expect("reparse");
        assert_eq!(again, cfg, "{}", f.display());
    }
}

#[test]
fn invalid_configs_name_the_key() {
    for f in files("invalid") {
        let text = std::fs::read_to_string(&f).expect("read");
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{}: first line must be '# expect: KEY'", f.display()));
        let err = AgentConfig::parse(&text)
            .expect_err(&f.display().to_string())
            .to_string();
        assert!(
            err.contains(expect),
            "{}: error {err:?} does not name {expect:?}",
            f.display()
        );
    }
}

#[test]
fn secrets_are_redacted_in_debug_output() {
    let f = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config/valid/full.toml");
    let cfg = AgentConfig::load(&f).expect("load");
    let dbg = format!("{cfg:?}");
    assert!(!dbg.contains("s3cret") && dbg.contains("redacted"), "{dbg}");
}

#[test]
fn snmpv3_users_load_in_order_and_stay_secret() {
    use dwa_agent::telemetry::v3::SecurityLevel;
    let f = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config/valid/snmpv3.toml");
    let text = std::fs::read_to_string(&f).expect("read");
    let cfg = AgentConfig::parse(&text).expect("load");
    let users = cfg.scan.v3_security().expect("v3 users");
    let got: Vec<(&str, SecurityLevel)> = users.iter().map(|u| (u.user(), u.level())).collect();
    assert_eq!(
        got,
        [
            ("printer-ro", SecurityLevel::AuthPriv),
            ("legacy", SecurityLevel::AuthNoPriv),
            ("strong", SecurityLevel::AuthPriv),
            ("cisco-style", SecurityLevel::AuthPriv),
            ("old", SecurityLevel::AuthPriv),
            ("public-ro", SecurityLevel::NoAuthNoPriv),
        ]
    );
    let dbg = format!("{cfg:?} {users:?}");
    assert!(!dbg.contains("s3cret") && dbg.contains("redacted"), "{dbg}");

    // Communities as written; when absent, none beside v3 users, and
    // "public" only when there are no v3 users either.
    assert_eq!(cfg.scan.effective_communities(), ["public"]);
    let no_communities = text.replace("communities = [\"public\"]", "");
    let cfg = AgentConfig::parse(&no_communities).expect("load");
    assert!(cfg.scan.effective_communities().is_empty());
    let minimal =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config/valid/minimal.toml");
    let cfg = AgentConfig::load(&minimal).expect("load");
    assert_eq!(cfg.scan.effective_communities(), ["public"]);
}
