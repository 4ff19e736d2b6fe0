//! Customers → agents → devices, and a device's own page. Each page checks
//! `ViewTelemetry` for the customer concerned; lists show only what the
//! caller may see.

use axum::extract::{Path, State};
use dwa_policy::roles::{Action, Role};
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{opt, page, status_badge, supply_bar};
use super::{query, PResult, Portal, PortalError, QueryArgs};
use crate::adapters::state::Relay;
use crate::error::RelayError;
use crate::services::auth::Principal;
use crate::services::telemetry::inventory::{self, DeviceView, ReadingView};
use crate::services::telemetry::{alerts, billing, fleet, TelemetryError};

/// Ports that are not web pages: reached through TCP tunnels instead.
pub const RAW_PORTS: [u16; 3] = [9100, 631, 515];

/// Ports on which the relay speaks TLS to the printer by default.
pub fn tls_port(port: u16) -> bool {
    matches!(port, 443 | 8443)
}

fn not_found(what: &str) -> PortalError {
    PortalError::from(RelayError::NotFound(format!("no {what}")))
}

/// The customers the caller may see: None for an admin (all).
fn scope(p: &Principal) -> Option<&[i64]> {
    (p.role != Role::Admin).then_some(p.customers.as_slice())
}

pub async fn home(State(relay): State<Relay>, Portal(p): Portal) -> PResult<Markup> {
    let visible = fleet::customers(&relay, scope(&p)).await?;
    Ok(page(
        "Customers",
        Some(&p),
        html! {
            @if visible.is_empty() {
                p { "No customers to show." }
            } @else {
                div.table-wrap { table {
                    caption { "Customers you may see" }
                    thead { tr { th scope="col" { "Customer" } th.num scope="col" { "Agents" } th.num scope="col" { "Devices" } } }
                    tbody {
                        @for r in &visible {
                            tr {
                                td { a href=(format!("/customers/{}", r.id)) { (r.name) } }
                                td.num { (r.agents) }
                                td.num { (r.devices) }
                            }
                        }
                    }
                } }
            }
            p { a href="/devices" { "All devices, with search and filters" } }
        },
    ))
}

/// The device table shared by the devices and customer pages.
fn device_table(list: &[&DeviceView], caption: &str) -> Markup {
    html! {
        @if list.is_empty() {
            p { "No devices match." }
        } @else {
            div.table-wrap { table {
                caption { (caption) }
                thead { tr {
                    th scope="col" { "Device" } th scope="col" { "Customer" } th scope="col" { "Address" }
                    th scope="col" { "Status" } th scope="col" { "Supplies" } th.num scope="col" { "Total pages" }
                    th scope="col" { "Last seen" }
                } }
                tbody {
                    @for d in list {
                        tr {
                            td { a href=(format!("/devices/{}", d.id)) { (device_name(d)) } }
                            td { (d.customer) }
                            td { (d.address) }
                            td { (status_badge(&d.status())) }
                            td { (supplies(d)) }
                            td.num { (opt(d.record.as_ref().and_then(|r| r.counters.total))) }
                            td { (opt(d.last_seen.as_deref())) }
                        }
                    }
                }
            } }
        }
    }
}

fn device_name(d: &DeviceView) -> String {
    let r = d.record.as_ref();
    d.name
        .clone()
        .or_else(|| r.and_then(|r| r.sys_name.clone()))
        .or_else(|| r.and_then(|r| r.model.clone()))
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| format!("Device {}", d.address))
}

fn supplies(d: &DeviceView) -> Markup {
    let Some(r) = &d.record else {
        return html! { "—" };
    };
    html! {
        @for s in &r.supplies {
            @if s.percent.is_some() {
                (supply_bar(&alerts::supply_label(s), s.colour.as_deref(), s.percent))
            }
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DeviceFilter {
    q: Option<String>,
    customer: Option<String>,
    status: Option<String>,
}

pub async fn devices(
    State(relay): State<Relay>,
    Portal(p): Portal,
    q: QueryArgs<DeviceFilter>,
) -> PResult<Markup> {
    let f = query(q)?;
    let all = inventory::list(&relay, scope(&p)).await?;
    let needle = f.q.as_deref().unwrap_or("").trim().to_lowercase();
    let customer: Option<i64> = match f.customer.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(c) => Some(c.parse().map_err(|_| {
            PortalError::from(RelayError::Invalid(
                "customer: expected a customer id".into(),
            ))
        })?),
    };
    let status = f.status.as_deref().map(str::trim).filter(|s| !s.is_empty());
    let mut customers: Vec<(i64, String)> = all
        .iter()
        .map(|d| (d.customer_id, d.customer.clone()))
        .collect();
    customers.sort_by(|a, b| a.1.cmp(&b.1));
    customers.dedup();
    let mut statuses: Vec<String> = all.iter().map(|d| d.status()).collect();
    statuses.sort();
    statuses.dedup();
    let shown: Vec<&DeviceView> = all
        .iter()
        .filter(|d| customer.is_none_or(|c| d.customer_id == c))
        .filter(|d| status.is_none_or(|s| d.status() == s))
        .filter(|d| {
            if needle.is_empty() {
                return true;
            }
            let r = d.record.as_ref();
            [
                Some(device_name(d)),
                Some(d.address.clone()),
                r.and_then(|r| r.serial.clone()),
                r.and_then(|r| r.model.clone()),
                r.and_then(|r| r.manufacturer.clone()),
            ]
            .into_iter()
            .flatten()
            .any(|v| v.to_lowercase().contains(&needle))
        })
        .collect();
    Ok(page(
        "Devices",
        Some(&p),
        html! {
            form.filters method="get" action="/devices" role="search" {
                label for="q" { "Search (name, address, serial, model)"
                    input id="q" name="q" type="search" value=(f.q.as_deref().unwrap_or(""));
                }
                label for="customer" { "Customer"
                    select id="customer" name="customer" {
                        option value="" { "All customers" }
                        @for (id, name) in &customers {
                            option value=(id) selected[customer == Some(*id)] { (name) }
                        }
                    }
                }
                label for="status" { "Status"
                    select id="status" name="status" {
                        option value="" { "Any status" }
                        @for s in &statuses {
                            option value=(s) selected[status == Some(s.as_str())] { (s) }
                        }
                    }
                }
                button type="submit" { "Filter" }
            }
            p role="status" { (shown.len()) " of " (all.len()) " devices" }
            (device_table(&shown, "Devices"))
            p { a href="/api/v1/devices.csv" { "Download the device report (CSV)" } }
        },
    ))
}

pub async fn customer(
    State(relay): State<Relay>,
    Portal(p): Portal,
    Path(id): Path<i64>,
) -> PResult<Markup> {
    let name = fleet::customer(&relay, id)
        .await
        .map_err(|_| not_found("such customer"))?
        .name;
    p.require(Action::ViewTelemetry, Some(id))?;
    let only = [id];
    let mut agents = fleet::agents(&relay, Some(&only)).await?;
    agents.sort_by(|a, b| a.name.cmp(&b.name));
    let devices = inventory::list(&relay, Some(&only)).await?;
    let refs: Vec<&DeviceView> = devices.iter().collect();
    Ok(page(
        &format!("Customer {name}"),
        Some(&p),
        html! {
            h2 { "Agents" }
            @if agents.is_empty() {
                p { "No agents enrolled yet." }
            } @else {
                div.table-wrap { table {
                    thead { tr { th scope="col" { "Agent" } th scope="col" { "Host" } th scope="col" { "Connection" } th scope="col" { "Last seen" } } }
                    tbody {
                        @for a in &agents {
                            tr {
                                td { a href=(format!("/agents/{}", a.id)) { (a.name) } }
                                td { (a.hostname) }
                                td {
                                    @if a.revoked { (status_badge("revoked")) }
                                    @else if a.connected { span.badge.st-ok { "connected" } }
                                    @else { span.badge.st-warn { "disconnected" } }
                                }
                                td { (opt(a.last_seen.clone())) }
                            }
                        }
                    }
                } }
            }
            h2 { "Devices" }
            (device_table(&refs, &format!("Devices of {name}")))
            h2 { "Billing meter report" }
            (billing_form(id, &billing::Period::previous_month(relay.time.unix())))
        },
    ))
}

/// A download of the customer's billing report (the API route, which the
/// log-in cookie authorises); the previous calendar month by default.
fn billing_form(customer: i64, last_month: &billing::Period) -> Markup {
    html! {
        form method="get" action=(format!("/api/v1/customers/{customer}/billing")) {
            label { "From " input type="date" name="from" required value=(last_month.from); }
            " "
            label { "to " input type="date" name="to" required value=(last_month.to); }
            " "
            label { "as "
                select name="format" {
                    option value="xlsx" { "XLSX" }
                    option value="csv" { "CSV" }
                }
            }
            " "
            button type="submit" { "Download" }
        }
        p { "Start and end reading of every counter, pages, estimated values and counter drops, resets and jumps." }
    }
}

pub async fn agent(
    State(relay): State<Relay>,
    Portal(p): Portal,
    Path(id): Path<String>,
) -> PResult<Markup> {
    let fleet::AgentDetail {
        agent: row,
        hello,
        last_telemetry,
        scan: stored,
        ..
    } = match fleet::agent(&relay, &id).await {
        Err(TelemetryError::NotFound(_)) => return Err(not_found("such agent")),
        r => r?,
    };
    let customer_id = row.customer_id;
    p.require(Action::ViewTelemetry, Some(customer_id))?;
    let conn = relay.agents.get(&id);
    let scan = stored.settings;
    let applied = stored.applied.map(|v| v.to_string());
    let name = row.name.clone();
    let devices = inventory::list(&relay, Some(&[customer_id])).await?;
    let mine: Vec<&DeviceView> = devices.iter().filter(|d| d.agent_id == id).collect();
    Ok(page(
        &format!("Agent {name}"),
        Some(&p),
        html! {
            dl.facts {
                dt { "Customer" } dd { a href=(format!("/customers/{customer_id}")) { (row.customer) } }
                dt { "Id" } dd { code { (id) } }
                dt { "Host name" } dd { (row.hostname) }
                dt { "Connection" } dd {
                    @if row.revoked_at.is_some() { (status_badge("revoked")) }
                    @else if let Some(c) = &conn {
                        span.badge.st-ok { "connected" } " since " (humantime::format_rfc3339_seconds(c.connected_at))
                    } @else { span.badge.st-warn { "disconnected" } }
                }
                dt { "Transport" } dd { (opt(conn.as_ref().map(|c| c.transport))) }
                dt { "Agent version" } dd { (opt(hello.as_ref().map(|h| h.agent_version.clone()))) }
                dt { "Allowed ports (agent policy)" } dd { (opt(hello.as_ref().map(|h| format!("{:?}", h.ports)))) }
                dt { "Allowed networks (agent policy)" } dd { (opt(hello.as_ref().map(|h| h.allow.join(", ")))) }
                dt { "Enrolled" } dd { (row.created_at) }
                dt { "Last seen" } dd { (opt(row.last_seen.clone())) }
                dt { "Last telemetry" } dd { (opt(last_telemetry)) }
                dt { "Scan ranges (relay setting)" } dd { (opt(scan.as_ref().and_then(|s| s.ranges.as_ref()).map(|r| r.join(", ")))) }
                dt { "Scan interval" } dd { (opt(scan.as_ref().and_then(|s| s.interval_secs).map(|s| format!("{s} s")))) }
                dt { "Agent's answer to the settings" } dd { code { (opt(applied)) } }
            }
            h2 { "Devices" }
            (device_table(&mine, &format!("Devices seen by {name}")))
        },
    ))
}

/// (unix seconds, total pages) points from readings, oldest first.
fn counter_points(readings: &[ReadingView]) -> Vec<(i64, u64, String)> {
    let mut pts: Vec<(i64, u64, String)> = readings
        .iter()
        .filter_map(|r| {
            let t = r.taken_at.as_str();
            let total = r.record["counters"]["total"].as_u64()?;
            let st = humantime::parse_rfc3339_weak(t.trim_end_matches('Z'))
                .or_else(|_| humantime::parse_rfc3339(t))
                .ok()?;
            let secs = st.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs() as i64;
            Some((secs, total, t.to_string()))
        })
        .collect();
    pts.sort_by_key(|p| p.0);
    pts
}

/// Total pages over time as an inline SVG line chart, with axis labels, a
/// title and description, and the data as a table (the text alternative).
pub fn counter_chart(pts: &[(i64, u64, String)]) -> Markup {
    if pts.len() < 2 {
        return html! { p { "Not enough readings with a page counter for a chart yet (" (pts.len()) ")." } };
    }
    let (w, h, left, bottom, top, right) = (600.0, 220.0, 70.0, 30.0, 10.0, 15.0);
    let (t0, t1) = (pts[0].0, pts[pts.len() - 1].0);
    let vmin = pts.iter().map(|p| p.1).min().unwrap_or(0);
    let vmax = pts.iter().map(|p| p.1).max().unwrap_or(0);
    let span_t = ((t1 - t0).max(1)) as f64;
    let span_v = ((vmax - vmin).max(1)) as f64;
    let x = |t: i64| left + (t - t0) as f64 / span_t * (w - left - right);
    let y = |v: u64| top + (1.0 - (v - vmin) as f64 / span_v) * (h - top - bottom);
    let points: Vec<String> = pts
        .iter()
        .map(|p| format!("{:.1},{:.1}", x(p.0), y(p.1)))
        .collect();
    let first = &pts[0];
    let last = &pts[pts.len() - 1];
    let desc = format!(
        "Total pages rose from {} on {} to {} on {} over {} readings.",
        first.1,
        first.2,
        last.1,
        last.2,
        pts.len()
    );
    html! {
        figure.chart {
            svg viewBox=(format!("0 0 {w} {h}")) role="img" aria-labelledby="chart-title chart-desc" {
                title id="chart-title" { "Total page counter over time" }
                desc id="chart-desc" { (desc) }
                line.axis x1=(left) y1=(top) x2=(left) y2=(h - bottom) {}
                line.axis x1=(left) y1=(h - bottom) x2=(w - right) y2=(h - bottom) {}
                text x=(left - 6.0) y=(top + 10.0) text-anchor="end" { (vmax) }
                text x=(left - 6.0) y=(h - bottom) text-anchor="end" { (vmin) }
                text x=(left) y=(h - 8.0) { (&first.2[..first.2.len().min(16)]) }
                text x=(w - right) y=(h - 8.0) text-anchor="end" { (&last.2[..last.2.len().min(16)]) }
                polyline.line points=(points.join(" ")) {}
            }
            figcaption { (desc) }
            details {
                summary { "Readings as a table" }
                div.table-wrap { table {
                    thead { tr { th scope="col" { "Taken at" } th.num scope="col" { "Total pages" } } }
                    tbody { @for p in pts.iter().rev() { tr { td { (p.2) } td.num { (p.1) } } } }
                } }
            }
        }
    }
}

/// The device page's CSP: as every page's, except that its "Open web page"
/// forms are answered with a redirect to a session host, and browsers hold
/// redirects after a form post to `form-action` too.
fn device_csp(relay: &Relay) -> PResult<axum::http::HeaderValue> {
    let port = if relay.https_port == 443 {
        String::new()
    } else {
        format!(":{}", relay.https_port)
    };
    axum::http::HeaderValue::from_str(&format!(
        "default-src 'self'; frame-ancestors 'none'; form-action 'self' https://*.{}{port}",
        relay.cfg().domain
    ))
    .map_err(|e| PortalError::from(RelayError::Invalid(e.to_string())))
}

pub async fn device(State(relay): State<Relay>, Portal(p): Portal, Path(id): Path<i64>) -> PResult {
    let csp = device_csp(&relay)?;
    let mut r = axum::response::IntoResponse::into_response(device_page(&relay, &p, id).await?);
    r.headers_mut()
        .insert(axum::http::header::CONTENT_SECURITY_POLICY, csp);
    Ok(r)
}

async fn device_page(relay: &Relay, p: &Principal, id: i64) -> PResult<Markup> {
    let d = inventory::get(relay, id)
        .await?
        .ok_or_else(|| not_found("such device"))?;
    p.require(Action::ViewTelemetry, Some(d.customer_id))?;
    let alerts = alerts::active_for_device(relay, id).await?;
    let readings = inventory::readings(relay, id, None, 200).await?;
    let pts = counter_points(&readings);
    let hello = relay
        .agents
        .get(&d.agent_id)
        .and_then(|c| c.native())
        .map(|n| n.hello);
    let r = d.record.as_ref();
    let can_web = p.require(Action::WebSession, Some(d.customer_id)).is_ok();
    let can_diag = p.require(Action::Diagnostics, Some(d.customer_id)).is_ok();
    let can_tunnel = p.require(Action::RawTunnel, Some(d.customer_id)).is_ok();
    let ports = hello.as_ref().map(|h| h.ports.clone()).unwrap_or_default();
    let web_ports: Vec<u16> = ports
        .iter()
        .copied()
        .filter(|p| !RAW_PORTS.contains(p))
        .collect();
    let name = device_name(&d);
    Ok(page(
        &name,
        Some(p),
        html! {
            section aria-labelledby="h-actions" {
                h2 id="h-actions" { "Actions" }
                @if hello.is_none() {
                    p.notice { "The agent is not connected: the device cannot be reached now." }
                } @else if !(can_web || can_diag || can_tunnel) {
                    p { "Your role may not open this device's web page, tunnels or diagnostics." }
                } @else {
                    div.actions {
                        @if can_web {
                            @for port in &web_ports {
                                form method="post" action=(format!("/devices/{id}/web")) {
                                    (super::layout::csrf_field(p))
                                    input type="hidden" name="port" value=(port);
                                    button type="submit" { "Open web page (port " (port) (if tls_port(*port) { ", HTTPS" } else { "" }) ")" }
                                }
                            }
                        }
                        @if can_diag {
                            form method="post" action=(format!("/devices/{id}/diagnostics")) {
                                (super::layout::csrf_field(p))
                                input type="hidden" name="kind" value="ping";
                                button type="submit" { "Ping" }
                            }
                            form method="post" action=(format!("/devices/{id}/diagnostics")) {
                                (super::layout::csrf_field(p))
                                label for="diag-kind" { "Probe"
                                    select id="diag-kind" name="kind" {
                                        option value="tcp" { "TCP connect" }
                                        option value="http" { "HTTP(S)" }
                                        option value="ipp" { "IPP printer attributes" }
                                        option value="pjl" { "PJL INFO" }
                                    }
                                }
                                label for="diag-port" { "Port"
                                    select id="diag-port" name="port" {
                                        @for port in &ports { option value=(port) { (port) } }
                                    }
                                }
                                button type="submit" { "Run probe" }
                            }
                        }
                        @if can_tunnel {
                            form method="post" action=(format!("/devices/{id}/tunnel")) {
                                (super::layout::csrf_field(p))
                                label for="tunnel-port" { "Tunnel port"
                                    select id="tunnel-port" name="port" {
                                        @for port in &ports { option value=(port) { (port) } }
                                    }
                                }
                                button type="submit" { "TCP tunnel" }
                            }
                        }
                    }
                }
            }
            section aria-labelledby="h-identity" {
                h2 id="h-identity" { "Identity" }
                dl.facts {
                    dt { "Status" } dd { (status_badge(&d.status())) }
                    dt { "Customer" } dd { a href=(format!("/customers/{}", d.customer_id)) { (d.customer) } }
                    dt { "Agent" } dd { a href=(format!("/agents/{}", d.agent_id)) { (d.agent_id) } }
                    dt { "Address" } dd { (d.address) }
                    dt { "Manufacturer" } dd { (opt(r.and_then(|r| r.manufacturer.clone()))) }
                    dt { "Model" } dd { (opt(r.and_then(|r| r.model.clone()))) }
                    dt { "Serial number" } dd { (opt(r.and_then(|r| r.serial.clone()))) }
                    dt { "MAC" } dd { (opt(r.and_then(|r| r.mac.clone()))) }
                    dt { "Firmware" } dd { (opt(r.and_then(|r| r.firmware.clone()))) }
                    dt { "Location" } dd { (opt(r.and_then(|r| r.sys_location.clone()))) }
                    dt { "First seen" } dd { (opt(d.first_seen.as_deref())) }
                    dt { "Last seen" } dd { (opt(d.last_seen.as_deref())) }
                    @if let Some(r) = r { @if !r.console.is_empty() {
                        dt { "Console" } dd { (r.console.join(" / ")) }
                    } }
                }
            }
            section aria-labelledby="h-supplies" {
                h2 id="h-supplies" { "Supplies" }
                @match r {
                    Some(r) if !r.supplies.is_empty() => {
                        ul {
                            @for s in &r.supplies {
                                li { (supply_bar(&alerts::supply_label(s), s.colour.as_deref(), s.percent.or(s.fullness_percent))) }
                            }
                        }
                    },
                    _ => { p { "No supply levels reported." } },
                }
            }
            section aria-labelledby="h-counters" {
                h2 id="h-counters" { "Page counters" }
                @if let Some(r) = r {
                    @let c = &r.counters;
                    div.table-wrap { table {
                        thead { tr { th scope="col" { "Counter" } th.num scope="col" { "Pages" } } }
                        tbody {
                            @for (label, v) in [("Total", c.total), ("Mono", c.mono), ("Colour", c.colour), ("Print", c.print), ("Copy", c.copy), ("Scan", c.scan), ("Fax", c.fax)] {
                                @if let Some(v) = v { tr { th scope="row" { (label) } td.num { (v) } } }
                            }
                        }
                    } }
                } @else {
                    p { "No reading yet." }
                }
                h2 { "Counter history" }
                (counter_chart(&pts))
            }
            section aria-labelledby="h-alerts" {
                h2 id="h-alerts" { "Active alerts" }
                @if alerts.is_empty() {
                    p { "No active alerts." }
                } @else {
                    ul {
                        @for a in &alerts {
                            li {
                                span.badge.st-err { (a.kind) } " "
                                (a.message) " (since " (a.raised_at) ")"
                            }
                        }
                    }
                }
            }
            p { a href=(format!("/audit?device={id}")) { "This device in the audit log" } }
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_counter_chart_has_axes_and_a_text_alternative() {
        let readings: Vec<ReadingView> = [
            ("2026-01-02T00:00:00.000Z", 1500),
            ("2026-01-01T00:00:00.000Z", 1000),
            ("2026-01-03T00:00:00.000Z", 2500),
        ]
        .iter()
        .map(|(t, n)| ReadingView {
            id: format!("r{n}"),
            scan: "s".into(),
            taken_at: t.to_string(),
            received_at: t.to_string(),
            address: "10.0.0.5".into(),
            identity: "serial:hp:A".into(),
            record: serde_json::json!({"counters": {"total": n}}),
        })
        .collect();
        let pts = counter_points(&readings);
        assert_eq!(
            pts.iter().map(|p| p.1).collect::<Vec<_>>(),
            [1000, 1500, 2500]
        );
        let svg = counter_chart(&pts).into_string();
        assert!(svg.contains("role=\"img\""), "{svg}");
        assert!(svg.contains("<title id=\"chart-title\">"), "{svg}");
        assert!(
            svg.contains("rose from 1000 on 2026-01-01T00:00:00.000Z to 2500"),
            "{svg}"
        );
        assert!(
            svg.contains("<polyline class=\"line\" points=\"70.0,"),
            "{svg}"
        );
        assert!(
            svg.contains(">2500</text>") && svg.contains(">1000</text>"),
            "{svg}"
        );
        assert!(
            svg.contains("<td class=\"num\">1500</td>"),
            "data table: {svg}"
        );
        let one = counter_chart(&pts[..1]).into_string();
        assert!(one.contains("Not enough readings"), "{one}");
    }

    #[test]
    fn supply_bars_carry_their_percentage_as_text() {
        let bar = super::super::layout::supply_bar("Black Toner", Some("black"), Some(42.4))
            .into_string();
        assert!(bar.contains("Black Toner: 42%"), "{bar}");
        assert!(bar.contains("width=\"42\""), "{bar}");
        assert!(bar.contains("aria-hidden=\"true\""), "{bar}");
        let low = super::super::layout::supply_bar("Cyan", Some("cyan"), Some(3.0)).into_string();
        assert!(low.contains("bar-low"), "{low}");
        let unknown = super::super::layout::supply_bar("Waste", None, None).into_string();
        assert!(unknown.contains("level unknown"), "{unknown}");
    }
}
