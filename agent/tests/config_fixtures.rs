//! Walks the configuration fixtures: every file under `valid/` loads; every
//! file under `invalid/` is refused with an error naming what its first line
//! (`# expect: KEY`) says.

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
