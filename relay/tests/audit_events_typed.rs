//! Audit records are written as typed events (`dwa_proto::audit::Event`):
//! only single sign-on, until it is rewritten, still builds its details as
//! JSON and calls the transitional `Audit::record(kind, .., Value)`.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

/// The one file allowed to write JSON details, relative to `relay/src`.
const JSON_WRITER: &str = "services/sso.rs";

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
fn only_single_sign_on_writes_json_details() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut found = Vec::new();
    for f in &files {
        let rel = f
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        if rel == JSON_WRITER || rel == "services/audit.rs" {
            continue;
        }
        let text = std::fs::read_to_string(f).unwrap();
        for (i, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            // `.record(` is the JSON form; typed events go through
            // `append` and `record_event`. `audit::kind` names the kind
            // strings only that form needs.
            if code.contains(".record(") || code.contains("audit::kind") {
                found.push(format!("{rel}:{}: {code}", i + 1));
            }
        }
    }
    assert!(
        found.is_empty(),
        "audit records outside {JSON_WRITER} must be typed events:\n{}",
        found.join("\n")
    );
}
