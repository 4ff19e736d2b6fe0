//! The relay's layering, checked: services never name an HTTP or SSH
//! framework, SQL, or the adapters above them; the relay crate itself does
//! not depend on sqlx at all (the store crate is the only code that speaks
//! SQL, and the compiler enforces that once the dependency is gone); the
//! store depends on no framework; only the audit service appends audit
//! records. See CONTRIBUTING.md.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Code lines of a file (comments and doc comments left out).
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_start()))
        .filter(|(_, l)| !l.starts_with("//"))
}

/// What a service may not name: HTTP and SSH frameworks, SQL, the
/// adapters and the app that sit above the services, and the relay's
/// outer error (services return their own).
const FORBIDDEN_IN_SERVICES: [&str; 13] = [
    "axum::",
    "hyper::",
    "hyper_util::",
    "russh::",
    "sqlx::",
    "tokio_rustls::",
    "StatusCode",
    "crate::adapters",
    "crate::app",
    "crate::db",
    "crate::error",
    "RelayError",
    "http::",
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The SQL-side names a file outside the store may not use.
fn sql_lines(text: &str) -> Vec<usize> {
    code_lines(text)
        .filter(|(_, l)| l.contains("sqlx::") || l.contains("crate::db") || l.contains(".db.pool"))
        .map(|(n, _)| n)
        .collect()
}

#[test]
fn no_sql_outside_the_store() {
    let mut files = vec![];
    rust_files(&src(), &mut files);
    assert!(files.len() >= 30, "the scan found too few files: {files:?}");
    let mut found = vec![];
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read");
        let lines = sql_lines(&text);
        if !lines.is_empty() {
            found.push(format!("{}: lines {lines:?}", f.display()));
        }
    }
    assert!(
        found.is_empty(),
        "SQL outside relay/store (move it into a store module):\n{}",
        found.join("\n")
    );
}

/// The forbidden names a file's code lines use, as `line: name: text`.
fn forbidden_in(text: &str) -> Vec<String> {
    let mut found = vec![];
    for (n, line) in code_lines(text) {
        for bad in FORBIDDEN_IN_SERVICES {
            // `http::` as a path segment, not inside another name.
            let hit = line.match_indices(bad).any(|(i, _)| {
                bad != "http::"
                    || i == 0
                    || !line[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_')
            });
            if hit {
                found.push(format!("{n}: {bad}: {line}"));
            }
        }
    }
    found
}

#[test]
fn services_name_no_framework_no_sql_and_no_adapter() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/services");
    let mut files = vec![];
    rust_files(&root, &mut files);
    assert!(
        files.len() >= 10,
        "the scan found too few services: {files:?}"
    );
    let mut found = vec![];
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read");
        for hit in forbidden_in(&text) {
            found.push(format!("{}:{hit}", f.display()));
        }
    }
    assert!(
        found.is_empty(),
        "services must not use these (move the code to an adapter or the store):\n{}",
        found.join("\n")
    );
}

fn dependencies(manifest: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(manifest).expect("read Cargo.toml");
    let doc: toml::Table = text.parse().expect("Cargo.toml parses");
    let mut out = vec![];
    for section in ["dependencies", "dev-dependencies"] {
        if let Some(t) = doc.get(section).and_then(|v| v.as_table()) {
            out.extend(t.keys().cloned());
        }
    }
    out
}

#[test]
fn only_the_store_crate_depends_on_sqlx() {
    let relay = Path::new(env!("CARGO_MANIFEST_DIR"));
    let deps = dependencies(&relay.join("Cargo.toml"));
    assert!(deps.contains(&"dwa-store".to_string()), "{deps:?}");
    assert!(
        !deps.iter().any(|d| d == "sqlx"),
        "dwa-relay must not depend on sqlx: SQL belongs in relay/store"
    );
    let store = dependencies(&relay.join("store/Cargo.toml"));
    assert!(store.contains(&"sqlx".to_string()), "{store:?}");
    for framework in ["axum", "hyper", "hyper-util", "russh", "tokio-rustls"] {
        assert!(
            !store.iter().any(|d| d == framework),
            "the store must not depend on {framework}"
        );
    }
}

#[test]
fn a_production_build_does_not_link_the_simulator() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let tree = |features: &[&str]| {
        let out = std::process::Command::new(&cargo)
            .args([
                "tree",
                "-p",
                "dwa-relay",
                "-e",
                "normal",
                "--prefix",
                "none",
            ])
            .args(features)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("cargo tree");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // The check can tell: the default (demo) build does link it.
    assert!(tree(&[]).contains("dwa-sim"));
    assert!(
        !tree(&["--no-default-features"]).contains("dwa-sim"),
        "a relay built without the demo feature must not depend on dwa-sim"
    );
}

// Audit records are written only as typed events (`dwa_proto::audit::Event`,
// through `services::audit::Audit`), so none bypasses the catalogue that
// docs/audit.md lists.
/// The one file that appends to the store's audit log, relative to
/// `relay/src`.
const WRITER: &str = "services/audit.rs";

#[test]
fn only_the_audit_service_appends_records() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() >= 30, "the scan found too few files");
    let mut found = Vec::new();
    let mut writer_seen = false;
    for f in &files {
        let rel = f
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let text = std::fs::read_to_string(f).unwrap();
        for (i, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            // The store's raw append, and building an entry by hand.
            if code.contains("audit_append(") || code.contains("AuditEntry {") {
                if rel == WRITER {
                    writer_seen = true;
                } else {
                    found.push(format!("{rel}:{}: {code}", i + 1));
                }
            }
        }
    }
    assert!(writer_seen, "{WRITER} no longer appends: update this test");
    assert!(
        found.is_empty(),
        "audit records must be typed events written through {WRITER}:\n{}",
        found.join("\n")
    );
}
