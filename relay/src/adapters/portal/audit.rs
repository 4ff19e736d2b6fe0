//! The audit log page: filters (since, kind, user, device) and CSV/JSONL
//! downloads, through the same scoped query as `GET /api/v1/audit`.

use axum::extract::State;
use maud::{html, Markup};

use super::layout::page;
use super::{query, PResult, Portal, QueryArgs};
use crate::adapters::api::audit::{self, AuditQuery};
use crate::adapters::state::Relay;

/// Records shown on the page (downloads take up to the API's maximum).
const PAGE_LIMIT: i64 = 200;

fn filter_string(q: &AuditQuery, format: &str) -> String {
    let mut parts = vec![("format", format.to_string())];
    for (k, v) in [
        ("since", q.since.clone()),
        ("kind", q.kind.clone()),
        ("user", q.user.clone()),
        ("device", q.device.clone()),
    ] {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            parts.push((k, v));
        }
    }
    parts
        .iter()
        .map(|(k, v)| format!("{k}={}", urlencode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub async fn page_handler(
    relay: Relay,
    p: crate::services::auth::Principal,
    q: AuditQuery,
) -> PResult<Markup> {
    let mut shown = q.clone();
    shown.limit = Some(PAGE_LIMIT);
    shown.format = None;
    let records = audit::query(&relay, &p, &shown).await?;
    let v = |o: &Option<String>| o.clone().unwrap_or_default();
    Ok(page(
        "Audit log",
        Some(&p),
        html! {
            form.filters method="get" action="/audit" {
                label for="since" { "Since (RFC 3339, UTC)"
                    input id="since" name="since" type="text" placeholder="2026-01-31T00:00:00Z" value=(v(&q.since));
                }
                label for="kind" { "Kind (exact, or a prefix ending in .)"
                    input id="kind" name="kind" type="text" placeholder="web." value=(v(&q.kind));
                }
                label for="user" { "User"
                    input id="user" name="user" type="text" value=(v(&q.user));
                }
                label for="device" { "Device id"
                    input id="device" name="device" type="number" min="1" value=(v(&q.device));
                }
                button type="submit" { "Filter" }
            }
            p {
                "Download with these filters: "
                a href=(format!("/audit/download?{}", filter_string(&q, "csv"))) { "CSV" } " · "
                a href=(format!("/audit/download?{}", filter_string(&q, "jsonl"))) { "JSONL" }
            }
            p role="status" { "The newest " (records.len()) " records you may see, newest first." }
            div.table-wrap { table {
                thead { tr {
                    th scope="col" { "#" } th scope="col" { "Time" } th scope="col" { "Kind" }
                    th scope="col" { "Who" } th scope="col" { "Agent" } th scope="col" { "Detail" }
                } }
                tbody {
                    @for r in records.iter().rev() {
                        tr {
                            td.num { (r.id) }
                            td { (r.entry.ts) }
                            td { (r.entry.kind) }
                            td { (r.entry.actor) }
                            td { (r.entry.agent.as_deref().unwrap_or("—")) }
                            td { code { (r.entry.detail) } }
                        }
                    }
                }
            } }
        },
    ))
}

pub async fn page_route(
    State(relay): State<Relay>,
    Portal(p): Portal,
    q: QueryArgs<AuditQuery>,
) -> PResult<Markup> {
    let q = query(q)?;
    page_handler(relay, p, q).await
}

pub async fn download(
    State(relay): State<Relay>,
    Portal(p): Portal,
    q: QueryArgs<AuditQuery>,
) -> PResult {
    let mut q = query(q)?;
    let format = match q.format.as_deref() {
        Some("jsonl") => "jsonl",
        _ => "csv",
    };
    q.limit = Some(q.limit.unwrap_or(audit::MAX_LIMIT));
    let records = audit::query(&relay, &p, &q).await?;
    Ok(audit::render(&records, Some(format))?)
}
