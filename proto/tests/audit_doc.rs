//! `docs/audit.md` lists every audit event the enum declares, with the same
//! version, cases and fields, and nothing the enum lacks.
//!
//! The page's format: an event is a heading ``### `kind` (vN)``, a case of a
//! tagged event a heading ``#### `tag: "value"` `` below it, a field a table
//! row starting with ``| `name` |``. Other headings end an event's section.

use std::collections::{BTreeMap, BTreeSet};

use dwa_proto::audit::CATALOG;

const DOC: &str = include_str!("../../docs/audit.md");

#[derive(Debug, Default)]
struct DocEvent {
    version: Option<u32>,
    fields: BTreeSet<String>,
    tag: Option<String>,
    cases: BTreeMap<String, BTreeSet<String>>,
}

/// The first `` `…` `` in `s`, and what follows it.
fn quoted(s: &str) -> Option<(&str, &str)> {
    let (_, rest) = s.split_once('`')?;
    rest.split_once('`')
}

enum At {
    Nowhere,
    Event(String),
    Case(String, String),
}

fn parse(doc: &str) -> (BTreeMap<String, DocEvent>, Vec<String>) {
    let mut events: BTreeMap<String, DocEvent> = BTreeMap::new();
    let mut errors = Vec::new();
    let mut at = At::Nowhere;
    for (n, line) in doc.lines().enumerate() {
        let n = n + 1;
        if let Some(h) = line.strip_prefix("### `") {
            let Some((kind, rest)) = h.split_once('`') else {
                errors.push(format!("line {n}: unclosed event heading"));
                continue;
            };
            let version = rest
                .trim()
                .strip_prefix("(v")
                .and_then(|v| v.strip_suffix(')'))
                .and_then(|v| v.parse().ok());
            if version.is_none() {
                errors.push(format!("line {n}: `{kind}` has no \"(vN)\""));
            }
            if events.contains_key(kind) {
                errors.push(format!("line {n}: `{kind}` is listed twice"));
            }
            events.entry(kind.to_string()).or_default().version = version;
            at = At::Event(kind.to_string());
        } else if let Some(h) = line.strip_prefix("#### ") {
            let (kind, case) = match (&at, quoted(h)) {
                (At::Event(k) | At::Case(k, _), Some((inner, _))) => (k.clone(), inner),
                _ => {
                    errors.push(format!("line {n}: a case heading outside an event"));
                    at = At::Nowhere;
                    continue;
                }
            };
            let Some((tag, value)) = case.split_once(": ") else {
                errors.push(format!("line {n}: expected `tag: \"value\"`"));
                continue;
            };
            let value = value.trim_matches('"').to_string();
            let e = events.entry(kind.clone()).or_default();
            if e.tag.get_or_insert_with(|| tag.to_string()) != tag {
                errors.push(format!("line {n}: `{kind}` cases use two tags"));
            }
            if e.cases.insert(value.clone(), BTreeSet::new()).is_some() {
                errors.push(format!("line {n}: case {value:?} of `{kind}` twice"));
            }
            at = At::Case(kind, value);
        } else if line.starts_with('#') {
            at = At::Nowhere;
        } else if let Some(row) = line.strip_prefix("| `") {
            let Some((name, _)) = row.split_once('`') else {
                continue;
            };
            let fields = match &at {
                At::Nowhere => continue,
                At::Event(k) => &mut events.entry(k.clone()).or_default().fields,
                At::Case(k, c) => events
                    .entry(k.clone())
                    .or_default()
                    .cases
                    .entry(c.clone())
                    .or_default(),
            };
            if !fields.insert(name.to_string()) {
                errors.push(format!("line {n}: field `{name}` twice"));
            }
        }
    }
    (events, errors)
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn compare(
    errors: &mut Vec<String>,
    what: String,
    doc: &BTreeSet<String>,
    enumd: BTreeSet<String>,
) {
    for f in enumd.difference(doc) {
        errors.push(format!("{what}: field `{f}` is not documented"));
    }
    for f in doc.difference(&enumd) {
        errors.push(format!(
            "{what}: the page names `{f}`, the enum has no such field"
        ));
    }
}

/// Differences between the page and the catalog, one line each.
fn check(doc: &str) -> Vec<String> {
    let (mut events, mut errors) = parse(doc);
    for info in CATALOG {
        let Some(d) = events.remove(info.kind) else {
            errors.push(format!("`{}` is not documented", info.kind));
            continue;
        };
        let k = info.kind;
        if d.version != Some(info.version) {
            errors.push(format!(
                "`{k}`: the page says version {:?}, the enum {}",
                d.version, info.version
            ));
        }
        compare(&mut errors, format!("`{k}`"), &d.fields, set(info.fields));
        match info.cases {
            None => {
                if !d.cases.is_empty() {
                    errors.push(format!("`{k}` has no cases, the page lists some"));
                }
            }
            Some(c) => {
                if d.tag.as_deref() != Some(c.tag) {
                    errors.push(format!(
                        "`{k}`: cases are told apart by `{}`, the page says {:?}",
                        c.tag, d.tag
                    ));
                }
                let empty = BTreeSet::new();
                for case in c.cases {
                    match d.cases.get(case.name) {
                        Some(fields) => compare(
                            &mut errors,
                            format!("`{k}` {:?}", case.name),
                            fields,
                            set(case.fields),
                        ),
                        None => {
                            errors.push(format!("`{k}`: case {:?} is not documented", case.name));
                            let what = format!("`{k}` {:?}", case.name);
                            compare(&mut errors, what, &empty, set(case.fields));
                        }
                    }
                }
                for name in d.cases.keys() {
                    if !c.cases.iter().any(|x| x.name == name) {
                        errors.push(format!(
                            "`{k}`: the page lists case {name:?}, the enum has none"
                        ));
                    }
                }
            }
        }
    }
    for kind in events.keys() {
        errors.push(format!(
            "the page lists `{kind}`, the enum has no such event"
        ));
    }
    errors
}

#[test]
fn the_audit_page_lists_every_event_and_field_of_the_enum() {
    let errors = check(DOC);
    assert!(
        errors.is_empty(),
        "docs/audit.md and dwa_proto::audit::Event differ:\n{}",
        errors.join("\n")
    );
}

#[test]
fn the_check_sees_a_missing_or_extra_entry() {
    let without_row = DOC.replacen("| `hostname` | string |", "| hostname | string |", 1);
    assert!(check(&without_row)
        .iter()
        .any(|e| e.contains("`enroll.refused`: field `hostname` is not documented")));
    let extra = format!("{DOC}\n### `made.up` (v1)\n\n| `x` | string | |\n");
    assert!(check(&extra).iter().any(|e| e.contains("`made.up`")));
    let extra_case = DOC.replacen(
        "#### `command: \"init\"`",
        "#### `command: \"reboot\"`\n\n#### `command: \"init\"`",
        1,
    );
    assert!(check(&extra_case).iter().any(|e| e.contains("\"reboot\"")));
    let wrong_version = DOC.replacen("### `token.revoke` (v1)", "### `token.revoke` (v2)", 1);
    assert!(check(&wrong_version)
        .iter()
        .any(|e| e.contains("`token.revoke`: the page says version")));
}
