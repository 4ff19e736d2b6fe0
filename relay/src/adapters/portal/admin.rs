//! Admin pages (role `admin` only, checked on every request): users (list,
//! create), roles (read-only, from `dwa_policy::roles`), customers (list,
//! add), enrollment tokens (create; shown once), alert rules per customer.
//! Every change goes through the same accounts service as the JSON API,
//! which checks the role, validates and audits it (`user.admin`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use dwa_policy::roles::{permit, Action, Role, Scope};
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{csrf_field, opt, page};
use super::{check_csrf, form, query, FormBody, PResult, Portal, PortalError, QueryArgs};
use crate::adapters::state::Relay;
use crate::error::RelayError;
use crate::services::accounts::users;
use crate::services::auth::Principal;
use crate::services::telemetry::alerts;

fn admin(p: &Principal) -> PResult<()> {
    p.require(Action::Administer, None)?;
    Ok(())
}

fn invalid(m: impl Into<String>) -> PortalError {
    PortalError::from(RelayError::Invalid(m.into()))
}

/// Every customer's id and name, by name.
async fn customer_list(relay: &Relay) -> PResult<Vec<(i64, String)>> {
    let mut v: Vec<(i64, String)> = relay
        .store
        .customers()
        .await?
        .into_iter()
        .map(|c| (c.id, c.name))
        .collect();
    v.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(v)
}

// ---- users ----

/// One admin action on a user, as a small form (CSRF-protected POST).
fn user_button(p: &Principal, id: i64, action: &str, label: &str) -> Markup {
    html! {
        form.inline method="post" action=(format!("/admin/users/{id}/{action}")) {
            (csrf_field(p))
            button type="submit" { (label) }
        }
    }
}

async fn users_page(relay: &Relay, p: &Principal, created: Option<Markup>) -> PResult<Markup> {
    let rows = users::user_list(relay, p).await?;
    let customers = customer_list(relay).await?;
    Ok(page(
        "Users",
        Some(p),
        html! {
            @if let Some(c) = created { (c) }
            div.table-wrap { table {
                thead { tr {
                    th scope="col" { "User" } th scope="col" { "Role" } th scope="col" { "Customers" }
                    th scope="col" { "Created" } th scope="col" { "Last log-in" } th scope="col" { "Actions" }
                } }
                tbody {
                    @for r in &rows {
                        tr {
                            td { (r.username) }
                            td { (r.role) }
                            td { (opt(r.customers.clone())) }
                            td { (r.created_at) }
                            td { (opt(r.last_login.clone())) }
                            td {
                                @let id = r.id;
                                @let active = r.active;
                                @if r.locked_at.is_some() {
                                    (user_button(p, id, "unlock", "Unlock (locked)"))
                                }
                                (user_button(p, id, "reset-totp", "Reset two-factor"))
                                (user_button(p, id, "reset-password", "Reset password"))
                                @if active {
                                    (user_button(p, id, "deactivate", "Deactivate"))
                                } @else {
                                    (user_button(p, id, "activate", "Reactivate (inactive)"))
                                }
                            }
                        }
                    }
                }
            } }
            h2 { "Add a user" }
            form.stack method="post" action="/admin/users" {
                (csrf_field(p))
                label for="new-username" { "User name"
                    input id="new-username" name="username" type="text" required maxlength="64";
                }
                label for="new-role" { "Role"
                    select id="new-role" name="role" {
                        @for r in Role::ALL { option value=(r.as_str()) { (r.as_str()) } }
                    }
                }
                label for="new-customer" { "Customer (required for technician, viewer and customer users)"
                    select id="new-customer" name="customer" {
                        option value="" { "None" }
                        @for (id, name) in &customers { option value=(id) { (name) } }
                    }
                }
                button type="submit" { "Add user" }
            }
        },
    ))
}

pub async fn users(State(relay): State<Relay>, Portal(p): Portal) -> PResult<Markup> {
    admin(&p)?;
    users_page(&relay, &p, None).await
}

#[derive(Deserialize)]
pub struct UserForm {
    #[serde(default)]
    _csrf: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    customer: String,
}

pub async fn add_user(
    State(relay): State<Relay>,
    Portal(p): Portal,
    body: FormBody<UserForm>,
) -> PResult {
    let f = form(body)?;
    check_csrf(&p, &f._csrf)?;
    admin(&p)?;
    let customer = f.customer.trim();
    let customers: Vec<i64> = if customer.is_empty() {
        vec![]
    } else {
        vec![customer
            .parse()
            .map_err(|_| invalid("customer: expected an id"))?]
    };
    // The accounts service: validation, one-time password, audit.
    let req = users::NewUser {
        username: f.username.clone(),
        role: f.role.clone(),
        customers,
    };
    let v = users::create_user(&relay, &p, &req).await?;
    let created = html! {
        div.notice role="status" {
            p { "User " strong { (v.user.username) } " added. One-time password, shown only now:" }
            p.secret { (v.password) }
            p { "It works for one log-in, which must choose the user's own password; two-factor, where the role requires it, is then the user's to enroll." }
        }
    };
    Ok((
        StatusCode::CREATED,
        users_page(&relay, &p, Some(created)).await?,
    )
        .into_response())
}

/// Unlock, reset two-factor or the password, deactivate or reactivate a
/// user.
pub async fn user_action(
    State(relay): State<Relay>,
    Portal(p): Portal,
    Path((id, action)): Path<(i64, String)>,
    body: FormBody<super::login::CsrfOnly>,
) -> PResult {
    let f = form(body)?;
    check_csrf(&p, f.csrf())?;
    admin(&p)?;
    use users as u;
    if action == "reset-password" {
        let v = u::reset_password(&relay, &p, id).await?;
        let note = html! { div.notice role="status" {
            p { "New one-time password for " strong { (v.user.username) } ", shown only now (their log-ins and API tokens have ended):" }
            p.secret { (v.password) }
        } };
        return Ok(users_page(&relay, &p, Some(note)).await?.into_response());
    }
    let done = match action.as_str() {
        "unlock" => u::unlock_user(&relay, &p, id).await.map(|_| "unlocked"),
        "reset-totp" => u::reset_totp(&relay, &p, id)
            .await
            .map(|_| "two-factor reset"),
        "deactivate" | "activate" => {
            let patch = u::UserPatch {
                active: Some(action == "activate"),
                ..Default::default()
            };
            u::update_user(&relay, &p, id, &patch).await.map(|_| {
                if action == "activate" {
                    "reactivated"
                } else {
                    "deactivated"
                }
            })
        }
        other => return Err(invalid(format!("unknown user action {other:?}"))),
    }?;
    let note = html! { div.notice role="status" { p { "User " (id) " " (done) "." } } };
    Ok(users_page(&relay, &p, Some(note)).await?.into_response())
}

// ---- roles ----

const ACTIONS: [(Action, &str); 5] = [
    (Action::ViewTelemetry, "View devices, readings and reports"),
    (Action::WebSession, "Open device web pages"),
    (Action::RawTunnel, "Open TCP tunnels (9100, 631, ...)"),
    (Action::Diagnostics, "Run diagnostics; change scan settings"),
    (
        Action::Administer,
        "Administer users, customers, tokens, alert rules",
    ),
];

pub async fn roles(Portal(p): Portal) -> PResult<Markup> {
    admin(&p)?;
    // Asked of the policy itself for an assigned customer (1) with the role
    // assigned to it: the table cannot drift from what the relay enforces.
    let scope = [1];
    Ok(page(
        "Roles",
        Some(&p),
        html! {
            p { "What each role may do for the customers assigned to it (admins: every customer). Generated from the relay's policy." }
            div.table-wrap { table {
                thead { tr {
                    th scope="col" { "Action" }
                    @for r in Role::ALL { th scope="col" { (r.as_str()) } }
                } }
                tbody {
                    @for (a, label) in ACTIONS {
                        tr {
                            th scope="row" { (label) }
                            @for r in Role::ALL {
                                @let ok = permit(r, &Scope { customers: &scope }, a, Some(1)).allowed;
                                td { @if ok { span.badge.st-ok { "yes" } } @else { span.badge.st-unknown { "no" } } }
                            }
                        }
                    }
                }
            } }
        },
    ))
}

// ---- customers ----

async fn customers_page(relay: &Relay, p: &Principal, note: Option<String>) -> PResult<Markup> {
    let rows = relay.store.customer_summaries().await?;
    Ok(page(
        "Customers (admin)",
        Some(p),
        html! {
            @if let Some(n) = note { p.notice role="status" { (n) } }
            div.table-wrap { table {
                thead { tr { th scope="col" { "Id" } th scope="col" { "Customer" } th scope="col" { "Created" } th.num scope="col" { "Agents" } th scope="col" { "Alert rules" } } }
                tbody {
                    @for r in &rows {
                        @let id = r.id;
                        tr {
                            td.num { (id) }
                            td { a href=(format!("/customers/{id}")) { (r.name) } }
                            td { (r.created_at) }
                            td.num { (r.agents) }
                            td { a href=(format!("/admin/alert-rules?customer={id}")) { "Alert rules" } }
                        }
                    }
                }
            } }
            h2 { "Add a customer" }
            form.stack method="post" action="/admin/customers" {
                (csrf_field(p))
                label for="customer-name" { "Name"
                    input id="customer-name" name="name" type="text" required maxlength="200";
                }
                button type="submit" { "Add customer" }
            }
        },
    ))
}

pub async fn customers(State(relay): State<Relay>, Portal(p): Portal) -> PResult<Markup> {
    admin(&p)?;
    customers_page(&relay, &p, None).await
}

#[derive(Deserialize)]
pub struct NameForm {
    #[serde(default)]
    _csrf: String,
    #[serde(default)]
    name: String,
}

pub async fn add_customer(
    State(relay): State<Relay>,
    Portal(p): Portal,
    body: FormBody<NameForm>,
) -> PResult {
    let f = form(body)?;
    check_csrf(&p, &f._csrf)?;
    admin(&p)?;
    // The accounts service, as the API: validation and audit.
    let c = users::create_customer(&relay, &p, &f.name).await?;
    let note = format!("Customer {} added (id {}).", c.name, c.id);
    Ok((
        StatusCode::CREATED,
        customers_page(&relay, &p, Some(note)).await?,
    )
        .into_response())
}

// ---- enrollment tokens ----

async fn tokens_page(relay: &Relay, p: &Principal, created: Option<Markup>) -> PResult<Markup> {
    // The newest hundred.
    let rows: Vec<_> = relay
        .store
        .enroll_tokens()
        .await?
        .into_iter()
        .rev()
        .take(100)
        .collect();
    let customers = customer_list(relay).await?;
    let now = relay.time.unix();
    Ok(page(
        "Enrollment tokens",
        Some(p),
        html! {
            @if let Some(c) = created { (c) }
            h2 { "Create a token" }
            form.stack method="post" action="/admin/tokens" {
                (csrf_field(p))
                label for="token-customer" { "Customer"
                    select id="token-customer" name="customer" required {
                        @for (id, name) in &customers { option value=(id) { (name) } }
                    }
                }
                label for="token-uses" { "Uses (1 to 5)"
                    input id="token-uses" name="uses" type="number" min="1" max="5" value="5" required;
                }
                label for="token-ttl" { "Valid for (e.g. 1h, 24h, 7d; at most 30d)"
                    input id="token-ttl" name="ttl" type="text" value="24h" required;
                }
                button type="submit" { "Create token" }
            }
            h2 { "Recent tokens" }
            div.table-wrap { table {
                thead { tr { th scope="col" { "Id" } th scope="col" { "Customer" } th.num scope="col" { "Used" } th scope="col" { "Expires" } th scope="col" { "Created by" } } }
                tbody {
                    @for r in &rows {
                        @let exp = r.expires_at;
                        tr {
                            td.num { (r.id) }
                            td { (r.customer) }
                            td.num { (r.uses) " of " (r.max_uses) }
                            td { (unix_text(exp)) @if exp <= now { " " span.badge.st-unknown { "expired" } } }
                            td { (r.created_by) }
                        }
                    }
                }
            } }
        },
    ))
}

fn unix_text(t: i64) -> String {
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.max(0) as u64),
    )
    .to_string()
}

pub async fn tokens(State(relay): State<Relay>, Portal(p): Portal) -> PResult<Markup> {
    admin(&p)?;
    tokens_page(&relay, &p, None).await
}

#[derive(Deserialize)]
pub struct TokenForm {
    #[serde(default)]
    _csrf: String,
    #[serde(default)]
    customer: String,
    #[serde(default)]
    uses: String,
    #[serde(default)]
    ttl: String,
}

pub async fn add_token(
    State(relay): State<Relay>,
    Portal(p): Portal,
    body: FormBody<TokenForm>,
) -> PResult {
    let f = form(body)?;
    check_csrf(&p, &f._csrf)?;
    admin(&p)?;
    let customer: i64 = f
        .customer
        .trim()
        .parse()
        .map_err(|_| invalid("customer: expected an id"))?;
    let uses: u8 = f
        .uses
        .trim()
        .parse()
        .map_err(|_| invalid("uses must be 1..=5"))?;
    let ttl = crate::util::parse_duration(f.ttl.trim())?;
    // The accounts service, as the API: limits, token, audit.
    let req = users::NewEnrollmentToken {
        customer_id: customer,
        uses: Some(uses),
        ttl_secs: Some(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX)),
    };
    let t = users::create_enrollment_token(&relay, &p, &req).await?;
    let (token, expires) = (t.token, t.expires_at);
    let name = relay
        .store
        .customer(customer)
        .await?
        .map_or_else(|| customer.to_string(), |c| c.name);
    let created = html! {
        div.notice role="status" {
            p { "Enrollment token for " strong { (name) } " (" (uses) " uses, expires " (unix_text(expires)) "). Shown only now:" }
            p.secret { (token) }
            p { "On the customer's PC: " code { "dwa-agent enroll --relay " (relay.portal_origin()) " --token <token>" } }
        }
    };
    Ok((
        StatusCode::CREATED,
        tokens_page(&relay, &p, Some(created)).await?,
    )
        .into_response())
}

// ---- alert rules ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerArg {
    customer: Option<String>,
}

pub async fn alert_rules(
    State(relay): State<Relay>,
    Portal(p): Portal,
    q: QueryArgs<CustomerArg>,
) -> PResult<Markup> {
    admin(&p)?;
    let q = query(q)?;
    let customers = customer_list(&relay).await?;
    let chosen = match q
        .customer
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty())
    {
        Some(c) => Some(
            c.parse::<i64>()
                .map_err(|_| invalid("customer: expected an id"))?,
        ),
        None => customers.first().map(|c| c.0),
    };
    let rules = match chosen {
        Some(c) => {
            if !customers.iter().any(|x| x.0 == c) {
                return Err(PortalError::from(RelayError::NotFound(format!(
                    "no customer {c}"
                ))));
            }
            Some(alerts::rules(&relay, c).await?.view())
        }
        None => None,
    };
    Ok(page(
        "Alert rules",
        Some(&p),
        html! {
            form.filters method="get" action="/admin/alert-rules" {
                label for="rules-customer" { "Customer"
                    select id="rules-customer" name="customer" {
                        @for (id, name) in &customers { option value=(id) selected[chosen == Some(*id)] { (name) } }
                    }
                }
                button type="submit" { "Show" }
            }
            @if let (Some(c), Some(rules)) = (chosen, rules) {
                form method="post" action=(format!("/admin/alert-rules/{c}")) {
                    (csrf_field(&p))
                    div.table-wrap { table {
                        thead { tr { th scope="col" { "Alert" } th scope="col" { "Enabled" } th scope="col" { "Threshold" } th scope="col" { "E-mail to" } th scope="col" { "E-mail" } } }
                        tbody {
                            @for r in &rules {
                                @let k = r.kind;
                                @let has_threshold = alerts::KINDS.iter().any(|(kk, t)| *kk == k && t.is_some());
                                tr {
                                    th scope="row" { (k) }
                                    td { label for=(format!("en-{k}")) { span { "Enabled" }
                                        input id=(format!("en-{k}")) type="checkbox" name=(format!("enabled.{k}")) value="on" checked[r.enabled];
                                    } }
                                    td {
                                        @if has_threshold {
                                            label for=(format!("th-{k}")) { span { (match k { alerts::SILENT => "Missed scans", alerts::COUNTER_JUMP => "Pages a day", _ => "Percent" }) }
                                                input id=(format!("th-{k}")) type="number" step="any" name=(format!("threshold.{k}"))
                                                    value=(r.threshold.map(|t| t.to_string()).unwrap_or_default());
                                            }
                                        } @else { "—" }
                                    }
                                    td { label for=(format!("to-{k}")) { span { "Recipients, comma-separated" }
                                        input id=(format!("to-{k}")) type="text" name=(format!("email_to.{k}"))
                                            value=(r.email_to.join(", "));
                                    } }
                                    td { label for=(format!("mode-{k}")) { span { "Mode" }
                                        select id=(format!("mode-{k}")) name=(format!("email_mode.{k}")) {
                                            option value="immediate" selected[r.email_mode == alerts::EmailMode::Immediate] { "immediate" }
                                            option value="digest" selected[r.email_mode == alerts::EmailMode::Digest] { "digest" }
                                        }
                                    } }
                                }
                            }
                        }
                    } }
                    p { button type="submit" { "Save rules" } }
                }
            } @else {
                p { "No customers yet." }
            }
        },
    ))
}

pub async fn save_alert_rules(
    State(relay): State<Relay>,
    Portal(p): Portal,
    Path(customer): Path<i64>,
    body: FormBody<Vec<(String, String)>>,
) -> PResult {
    let fields = form(body)?;
    let csrf = fields
        .iter()
        .find(|(k, _)| k == "_csrf")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    check_csrf(&p, csrf)?;
    p.require(Action::Administer, Some(customer))?;
    if !customer_list(&relay).await?.iter().any(|c| c.0 == customer) {
        return Err(PortalError::from(RelayError::NotFound(format!(
            "no customer {customer}"
        ))));
    }
    let get = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_string())
    };
    let mut rules = vec![];
    for (k, default) in alerts::KINDS {
        let threshold = match (default, get(&format!("threshold.{k}"))) {
            (Some(_), Some(t)) if !t.is_empty() => Some(
                t.parse::<f64>()
                    .map_err(|_| invalid(format!("{k}: threshold is not a number")))?,
            ),
            _ => None,
        };
        let email_to = get(&format!("email_to.{k}"))
            .unwrap_or_default()
            .split([',', ';', ' '])
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect();
        let email_mode = match get(&format!("email_mode.{k}")).as_deref() {
            None | Some("immediate") => alerts::EmailMode::Immediate,
            Some("digest") => alerts::EmailMode::Digest,
            Some(_) => return Err(invalid(format!("{k}: e-mail mode is immediate or digest"))),
        };
        rules.push(alerts::RuleInput {
            kind: k.to_string(),
            enabled: get(&format!("enabled.{k}")).is_some(),
            threshold,
            email_to,
            email_mode,
        });
    }
    alerts::replace_rules(&relay, customer, &rules, &p.actor(), Some("portal")).await?;
    Ok(super::see_other(&format!(
        "/admin/alert-rules?customer={customer}"
    )))
}
