//! The page shell (skip link, navigation, the user's log-out), the one
//! stylesheet, and widgets shared by pages: status badges, supply bars.

use std::sync::LazyLock;

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use dwa_policy::roles::Role;
use maud::{html, Markup, DOCTYPE};

use crate::services::auth::Principal;

pub const CSS_PATH: &str = "/static/portal.css";

/// Colours are chosen for at least 4.5:1 contrast on their backgrounds;
/// status colour always comes with its text.
const CSS: &str = r#"
*{box-sizing:border-box}
html{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;font-size:16px;line-height:1.45;color:#1a1a1a;background:#f6f7f9}
body{margin:0}
a{color:#0b57d0}
a:hover{color:#083b8f}
:focus-visible{outline:3px solid #b45309;outline-offset:2px}
.skip{position:absolute;left:-999px;top:0;background:#fff;padding:.5rem 1rem;z-index:10}
.skip:focus{left:.5rem}
header.top{background:#14213d;color:#fff;display:flex;flex-wrap:wrap;align-items:center;gap:.5rem 1.5rem;padding:.6rem 1rem}
header.top a{color:#fff}
header.top .brand{font-weight:700;text-decoration:none;font-size:1.1rem}
header.top nav ul{list-style:none;display:flex;flex-wrap:wrap;gap:.25rem 1rem;margin:0;padding:0}
header.top .who{margin-left:auto;display:flex;gap:.75rem;align-items:center;flex-wrap:wrap}
header.top button{background:#fff;color:#14213d;border:0}
main{max-width:80rem;margin:0 auto;padding:1rem}
h1{font-size:1.6rem;margin:.5rem 0 1rem}
h2{font-size:1.25rem;margin:1.5rem 0 .5rem}
.table-wrap{overflow-x:auto;background:#fff;border:1px solid #d0d4dc;border-radius:6px}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:.45rem .6rem;border-bottom:1px solid #e3e6eb;vertical-align:top}
th{background:#eef0f4;font-weight:600}
caption{text-align:left;font-weight:600;padding:.5rem .6rem}
.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:.05rem .5rem;border-radius:1rem;font-size:.9rem;font-weight:600;border:1px solid currentColor}
.st-ok{background:#dcf5e1;color:#0b4d1a}
.st-warn{background:#fff1c2;color:#5c4200}
.st-err{background:#fde0e0;color:#8a1111}
.st-unknown{background:#e8e8ee;color:#333}
.supply{display:flex;align-items:center;gap:.4rem;margin:.1rem 0;white-space:nowrap}
.supply svg{width:6rem;height:.8rem;flex:none}
.bar-bg{fill:#e3e6eb}
.bar-fill{fill:#4b5563}
.c-black{fill:#111}.c-cyan{fill:#0891b2}.c-magenta{fill:#be185d}.c-yellow{fill:#ca8a04}
.bar-low{fill:#b91c1c}
form.inline{display:inline}
form.filters,form.stack{display:flex;flex-wrap:wrap;gap:.75rem;align-items:flex-end;background:#fff;border:1px solid #d0d4dc;border-radius:6px;padding:.75rem;margin-bottom:1rem}
form.stack{flex-direction:column;align-items:stretch;max-width:28rem}
label{display:flex;flex-direction:column;font-weight:600;font-size:.95rem;gap:.2rem}
::placeholder{color:#595959;opacity:1}
input,select,button{font:inherit;padding:.4rem .55rem;border:1px solid #6b7280;border-radius:4px;background:#fff;color:#1a1a1a}
button{background:#0b57d0;color:#fff;border-color:#0b57d0;cursor:pointer}
button:hover{background:#083b8f}
.actions{display:flex;flex-wrap:wrap;gap:.75rem;align-items:flex-end}
.actions form{display:flex;gap:.5rem;align-items:flex-end;flex-wrap:wrap}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:.3rem 1rem;background:#fff;border:1px solid #d0d4dc;border-radius:6px;padding:.75rem;margin:0}
dl.facts dt{font-weight:600}
dl.facts dd{margin:0;overflow-wrap:anywhere}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(16rem,1fr));gap:1rem}
.card{background:#fff;border:1px solid #d0d4dc;border-radius:6px;padding:.75rem}
.error{background:#fde0e0;color:#8a1111;border:1px solid #8a1111;border-radius:4px;padding:.5rem .75rem}
.notice{background:#e0ecff;color:#0b3a8f;border:1px solid #0b3a8f;border-radius:4px;padding:.5rem .75rem}
.secret{font-family:ui-monospace,monospace;background:#fff;border:1px dashed #6b7280;padding:.5rem;overflow-wrap:anywhere}
figure.chart{margin:0;background:#fff;border:1px solid #d0d4dc;border-radius:6px;padding:.5rem}
figure.chart svg{width:100%;height:auto;max-height:16rem}
.axis{stroke:#4b5563;stroke-width:1}
.line{fill:none;stroke:#0b57d0;stroke-width:2}
.chart text{font-size:11px;fill:#1a1a1a}
code,pre{font-family:ui-monospace,monospace;font-size:.85rem;overflow-wrap:anywhere;white-space:pre-wrap}
@media (max-width:40rem){
 main{padding:.5rem}
 h1{font-size:1.3rem}
 dl.facts{grid-template-columns:1fr}
 header.top .who{margin-left:0}
}
"#;

/// A short content hash: the stylesheet's URL changes when it does.
static CSS_HREF: LazyLock<String> =
    LazyLock::new(|| format!("{CSS_PATH}?v={}", &crate::util::sha256_hex(CSS)[..12]));

pub async fn stylesheet() -> Response {
    let mut r = CSS.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// A whole page: `title` is the `<title>` and the `<h1>`.
pub fn page(title: &str, user: Option<&Principal>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · DWA" }
                link rel="stylesheet" href=(CSS_HREF.as_str());
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/" { "DWA portal" }
                    @if let Some(p) = user {
                        nav aria-label="Main" {
                            ul {
                                li { a href="/" { "Customers" } }
                                li { a href="/devices" { "Devices" } }
                                li { a href="/audit" { "Audit log" } }
                                @if p.role == Role::Admin {
                                    li { a href="/admin/users" { "Users" } }
                                    li { a href="/admin/roles" { "Roles" } }
                                    li { a href="/admin/customers" { "Customers (admin)" } }
                                    li { a href="/admin/tokens" { "Enrollment tokens" } }
                                    li { a href="/admin/alert-rules" { "Alert rules" } }
                                }
                            }
                        }
                        div.who {
                            span { (p.username) " (" (p.role.as_str()) ")" }
                            a href=(super::account::PASSWORD_PATH) { "Password" }
                            form.inline method="post" action="/logout" {
                                (csrf_field(p))
                                button type="submit" { "Log out" }
                            }
                        }
                    }
                }
                main id="main" tabindex="-1" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// The hidden anti-CSRF field of a state-changing form.
pub fn csrf_field(p: &Principal) -> Markup {
    html! {
        input type="hidden" name="_csrf" value=(p.csrf_token().unwrap_or_default());
    }
}

/// The colour class of a device status (the text is always shown too).
pub fn status_class(status: &str) -> &'static str {
    match status {
        "idle" | "printing" | "running" | "warmup" => "st-ok",
        "warning" | "silent" | "testing" | "other" => "st-warn",
        "error" | "down" | "displaced" => "st-err",
        _ => "st-unknown",
    }
}

pub fn status_badge(status: &str) -> Markup {
    html! { span class={ "badge " (status_class(status)) } { (status) } }
}

/// One supply: label, a bar (inline SVG, hidden from screen readers) and
/// the percentage as text.
pub fn supply_bar(label: &str, colour: Option<&str>, percent: Option<f32>) -> Markup {
    let colour_class = match colour.map(str::to_ascii_lowercase).as_deref() {
        Some("black") => "c-black",
        Some("cyan") => "c-cyan",
        Some("magenta") => "c-magenta",
        Some("yellow") => "c-yellow",
        _ => "",
    };
    let pct = percent.map(|p| p.clamp(0.0, 100.0));
    let fill_class = match pct {
        Some(p) if p < 10.0 => "bar-fill bar-low".to_string(),
        _ => format!("bar-fill {colour_class}"),
    };
    html! {
        div.supply {
            svg viewBox="0 0 100 8" preserveAspectRatio="none" aria-hidden="true" focusable="false" {
                rect.bar-bg width="100" height="8" {}
                @if let Some(p) = pct {
                    rect class=(fill_class) width=(format!("{p:.0}")) height="8" {}
                }
            }
            span {
                (label) ": "
                @match pct {
                    Some(p) => { (format!("{p:.0}%")) },
                    None => { "level unknown" },
                }
            }
        }
    }
}

/// "—" for a missing value.
pub fn opt(v: Option<impl std::fmt::Display>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "—".into())
}
