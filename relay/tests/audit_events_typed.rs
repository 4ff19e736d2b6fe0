//! Audit records are written only as typed events
//! (`dwa_proto::audit::Event`, through `services::audit::Audit`): nothing
//! else in the relay appends to the store's audit log directly, so no
//! record can bypass the event catalogue that docs/audit.md lists.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

/// The one file that appends to the store's audit log, relative to
/// `relay/src`.
const WRITER: &str = "services/audit.rs";

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
