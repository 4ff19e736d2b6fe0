//! The OpenAPI 3 document of every HTTP route the relay serves, generated
//! from the handlers' `#[utoipa::path]` annotations and served
//! unauthenticated at `GET /api/v1/openapi.json`.
//!
//! Adding a module's routes: annotate each handler with `#[utoipa::path]`
//! (visible to the crate: `pub(crate)` at least), then add ONE line per
//! handler to its module's group in `paths(...)` below. The unit test
//! `every_registered_route_is_documented` scans the sources for the
//! routers' route registrations and names any that the document lacks.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::adapters::http::reply::ErrorBody;
use crate::adapters::state::Relay;

/// The document's path.
pub const OPENAPI_PATH: &str = "/api/v1/openapi.json";

/// Names of the security schemes, as handlers' `security(...)` cite them.
pub const COOKIE: &str = "cookie";
pub const BEARER: &str = "bearer";
pub const AGENT_SIGNATURE: &str = "agent_signature";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "DWA relay API",
        description = "The relay's JSON API for dealers (portal session cookie `__Host-dwa_session` or a \
            per-user API token, `Authorization: Bearer dwat_...`), the agents' endpoints \
            (enrollment, signed telemetry upload, SSH over WebSocket) and health. Errors are \
            `{\"error\": \"...\", \"code\": \"...\"}`; 429 answers carry `Retry-After`. \
            Authorization is per role and customer: admin (everything), technician (telemetry, \
            web sessions, raw tunnels, diagnostics for the customers assigned), viewer \
            (telemetry and reports), customer (their own customer's devices, read-only)."
    ),
    paths(
        // Meta.
        openapi_json,
        crate::adapters::http::healthz,
        // Agent-facing (crate::adapters::http, crate::adapters::http::ingest).
        crate::adapters::http::enroll,
        crate::adapters::http::agent_ws,
        crate::adapters::http::ingest::handler,
        // Log-in, API tokens, web sessions (crate::adapters::api).
        crate::adapters::api::login,
        crate::adapters::api::logout,
        crate::adapters::api::me,
        crate::adapters::api::create_token,
        crate::adapters::api::revoke_token,
        crate::adapters::api::create_web_session,
        crate::adapters::api::list_web_sessions,
        crate::adapters::api::get_web_session,
        crate::adapters::api::delete_web_session,
        // Telemetry (crate::adapters::api::telemetry).
        crate::adapters::api::telemetry::devices,
        crate::adapters::api::telemetry::devices_csv,
        crate::adapters::api::telemetry::device,
        crate::adapters::api::telemetry::readings,
        crate::adapters::api::telemetry::agents,
        crate::adapters::api::telemetry::put_scan,
        crate::adapters::api::telemetry::scan_now,
        crate::adapters::api::telemetry::list_alerts,
        crate::adapters::api::telemetry::get_rules,
        crate::adapters::api::telemetry::billing_report,
        crate::adapters::api::telemetry::get_schedule,
        crate::adapters::api::telemetry::put_schedule,
        crate::adapters::api::telemetry::delete_schedule,
        crate::adapters::api::telemetry::put_rules,
        // Diagnostics (crate::services::diagnostics).
        crate::adapters::api::diagnostics::run_diagnostic,
        // Single sign-on (crate::services::sso).
        crate::adapters::http::sso::login,
        crate::adapters::http::sso::callback,
        // Accounts: two-factor, users, customers, enrollment tokens
        // (crate::adapters::api::accounts).
        crate::adapters::api::accounts::begin_totp,
        crate::adapters::api::accounts::confirm_totp,
        crate::adapters::api::accounts::list_users,
        crate::adapters::api::accounts::create_user,
        crate::adapters::api::accounts::get_user,
        crate::adapters::api::accounts::update_user,
        crate::adapters::api::accounts::unlock_user,
        crate::adapters::api::accounts::reset_totp,
        crate::adapters::api::accounts::reset_password,
        crate::adapters::api::accounts::change_password,
        crate::adapters::api::accounts::list_customers,
        crate::adapters::api::accounts::create_customer,
        crate::adapters::api::accounts::list_enrollment_tokens,
        crate::adapters::api::accounts::create_enrollment_token,
        // Raw TCP tunnels (crate::services::tunnels).
        crate::adapters::api::tunnels::create,
        crate::adapters::api::devices::add,
        crate::adapters::api::devices::remove,
        crate::adapters::api::devices::erase_customer,
        crate::adapters::api::tunnels::list,
        crate::adapters::api::tunnels::revoke,
        // The audit log (crate::adapters::api::audit).
        crate::adapters::api::audit::audit,
    ),
    components(schemas(ErrorBody)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "meta", description = "The API document and health"),
        (name = "agent", description = "Agent-facing: enrollment, telemetry upload, SSH over WebSocket"),
        (name = "auth", description = "Log-in, log-out, the caller, API tokens"),
        (name = "web-sessions", description = "Device Web Access sessions"),
        (name = "telemetry", description = "Devices, readings, the CSV report, alerts"),
        (name = "agents", description = "Agents and their scan settings"),
        (name = "diagnostics", description = "Ping, TCP, HTTP, IPP and PJL probes run by the agent"),
        (name = "sso", description = "Single sign-on with OpenID Connect"),
        (name = "accounts", description = "Two-factor, users, customers, enrollment tokens"),
        (name = "tunnels", description = "Raw TCP tunnels to a device port"),
        (name = "audit", description = "The audit log"),
    )
)]
pub struct ApiDoc;

/// Declares the three ways in: the portal's cookie, a bearer API token, and
/// the agents' signed requests.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let c = doc.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            COOKIE,
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                crate::services::auth::SESSION_COOKIE,
                "The portal's log-in session (POST /api/v1/login). State-changing requests \
                 must come from the portal's origin.",
            ))),
        );
        c.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A per-user API token (POST /api/v1/tokens), dwat_..."))
                    .build(),
            ),
        );
        c.add_security_scheme(
            AGENT_SIGNATURE,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                "`DWA-Agent <agent-id> <unix-seconds> <base64 SSHSIG>`: the agent signs the \
                 method, path, its id, the time and the body's SHA-256 with its enrolled \
                 ed25519 key (namespace dwa-agent-request@v1; 300 s clock skew at most).",
            ))),
        );
    }
}

/// The document as served.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

pub fn routes() -> Router<Relay> {
    Router::new().route(OPENAPI_PATH, get(openapi_json))
}

/// This document (OpenAPI 3.1, JSON).
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "meta",
    security(()),
    responses(
        (status = 200, description = "The OpenAPI document", body = Object,
         content_type = "application/json"),
    )
)]
pub(crate) async fn openapi_json() -> Response {
    use std::sync::OnceLock;
    // Built once: it depends only on the code.
    static DOC: OnceLock<String> = OnceLock::new();
    let body = DOC.get_or_init(|| {
        document().to_json().unwrap_or_else(|e| {
            format!("{{\"error\": \"OpenAPI document: {e}\", \"code\": \"internal\"}}")
        })
    });
    let mut r = body.clone().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    use super::*;

    /// Constants that routes are registered with, by name.
    fn constant(name: &str) -> Option<&'static str> {
        Some(match name {
            "dwa_proto::telemetry::INGEST_PATH" | "INGEST_PATH" => {
                dwa_proto::telemetry::INGEST_PATH
            }
            "WS_PATH" | "dwa_link::ws::WS_PATH" => dwa_link::ws::WS_PATH,
            "OPENAPI_PATH" | "crate::adapters::openapi::OPENAPI_PATH" => OPENAPI_PATH,
            "LOGIN_PATH" | "crate::services::sso::LOGIN_PATH" => crate::services::sso::LOGIN_PATH,
            "CALLBACK_PATH" | "crate::services::sso::CALLBACK_PATH" => {
                crate::services::sso::CALLBACK_PATH
            }
            _ => return None,
        })
    }

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).expect("read relay/src").flatten() {
            let p = e.path();
            if p.is_dir() {
                rust_files(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }

    /// The text from an opening parenthesis at `open` to its match.
    fn balanced(s: &str, open: usize) -> Option<&str> {
        let mut depth = 0usize;
        for (i, c) in s[open..].char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(&s[open + 1..open + i]);
                    }
                }
                _ => {}
            }
        }
        None
    }

    /// `(METHOD, path)` of every `.route(PATH, get(..).post(..))` in `src`
    /// (outside `#[cfg(test)]` modules); errors name what could not be read.
    fn registrations(file: &str, src: &str) -> Result<Vec<(String, String)>, String> {
        let src = src.split("#[cfg(test)]").next().unwrap_or("");
        let mut out = vec![];
        let mut at = 0;
        while let Some(i) = src[at..].find(".route(") {
            let open = at + i + ".route".len();
            at = open;
            let args = balanced(src, open).ok_or(format!("{file}: unbalanced .route("))?;
            let (first, rest) = args
                .split_once(',')
                .ok_or(format!("{file}: .route({args}) without a handler"))?;
            let first = first.trim();
            // A router's path is a literal or a CONSTANT; anything else
            // (`routes.route(req.port, ..)`) is another type's method.
            let last = first.rsplit("::").next().unwrap_or("");
            let is_const = !last.is_empty()
                && last
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            let path = if let Some(lit) = first.strip_prefix('"') {
                lit.trim_end_matches('"').to_string()
            } else if !is_const {
                continue;
            } else {
                constant(first)
                    .ok_or(format!(
                        "{file}: route path {first:?} is a constant the test does not know; \
                         add it to openapi::tests::constant"
                    ))?
                    .to_string()
            };
            let mut methods = 0;
            for m in ["get", "post", "put", "delete", "patch", "head", "options"] {
                // `get(`, `.get(`, `routing::get(` but not `forget(`.
                let mut from = 0;
                while let Some(j) = rest[from..].find(&format!("{m}(")) {
                    let k = from + j;
                    let before = rest[..k].chars().next_back();
                    if !before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                        out.push((m.to_uppercase(), path.clone()));
                        methods += 1;
                    }
                    from = k + m.len();
                }
            }
            if methods == 0 {
                return Err(format!("{file}: no method for route {path}"));
            }
        }
        Ok(out)
    }

    fn documented() -> BTreeSet<(String, String)> {
        let doc = document();
        let mut set = BTreeSet::new();
        for (path, item) in doc.paths.paths {
            let ops = [
                ("GET", item.get.is_some()),
                ("POST", item.post.is_some()),
                ("PUT", item.put.is_some()),
                ("DELETE", item.delete.is_some()),
                ("PATCH", item.patch.is_some()),
                ("HEAD", item.head.is_some()),
                ("OPTIONS", item.options.is_some()),
            ];
            for (m, present) in ops {
                if present {
                    set.insert((m.to_string(), path.clone()));
                }
            }
        }
        set
    }

    #[test]
    fn every_registered_route_is_documented() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = vec![];
        rust_files(&root, &mut files);
        let mut registered = BTreeSet::new();
        for f in &files {
            let src = std::fs::read_to_string(f).expect("read source");
            let name = f.strip_prefix(&root).unwrap_or(f).display().to_string();
            // The portal's HTML pages are not the JSON API; their
            // permissions are walked by tests/tests/portal_access.rs.
            if name.starts_with("adapters/portal/") {
                continue;
            }
            match registrations(&name, &src) {
                Ok(r) => registered.extend(r),
                Err(e) => panic!("{e}"),
            }
        }
        // Sanity: the scan found the routes it must (else it proves nothing).
        for must in [
            ("POST", "/api/v1/login"),
            ("GET", OPENAPI_PATH),
            ("POST", dwa_proto::telemetry::INGEST_PATH),
            ("DELETE", "/api/v1/web-sessions/{id}"),
            ("PUT", "/api/v1/customers/{id}/alert-rules"),
        ] {
            assert!(
                registered.contains(&(must.0.to_string(), must.1.to_string())),
                "the source scan missed {} {}: {registered:?}",
                must.0,
                must.1
            );
        }
        let documented = documented();
        let missing: Vec<String> = registered
            .difference(&documented)
            .map(|(m, p)| format!("{m} {p}"))
            .collect();
        assert!(
            missing.is_empty(),
            "routes registered but missing from the OpenAPI document (add #[utoipa::path] \
             and list the handler in openapi::ApiDoc): {missing:#?}"
        );
        let stale: Vec<String> = documented
            .difference(&registered)
            .map(|(m, p)| format!("{m} {p}"))
            .collect();
        assert!(
            stale.is_empty(),
            "documented but never registered: {stale:#?}"
        );
    }

    #[test]
    fn the_route_scanner_reads_chains_constants_and_multiline_calls() {
        let src = r#"
            Router::new()
                .route("/a", get(a))
                .route(
                    "/b/{id}",
                    get(b).delete(c),
                )
                .route(WS_PATH, axum::routing::post(|| async { forget(1) }))
            #[cfg(test)]
            .route("/ignored", get(x))
        "#;
        let r = registrations("x.rs", src).expect("scan");
        assert_eq!(
            r,
            vec![
                ("GET".to_string(), "/a".to_string()),
                ("GET".to_string(), "/b/{id}".to_string()),
                ("DELETE".to_string(), "/b/{id}".to_string()),
                ("POST".to_string(), dwa_link::ws::WS_PATH.to_string()),
            ]
        );
        assert!(registrations("x.rs", ".route(SOME_CONST, get(a))").is_err());
        // Not a router: skipped.
        assert_eq!(
            registrations("x.rs", "conn.routes.route(req.port, w)"),
            Ok(vec![])
        );
    }

    #[test]
    fn the_document_is_openapi_3_with_security_schemes() {
        let json = document().to_json().expect("serialise");
        let v: serde_json::Value = serde_json::from_str(&json).expect("JSON");
        let version = v["openapi"].as_str().unwrap_or("");
        assert!(version.starts_with("3."), "openapi version {version:?}");
        for s in [COOKIE, BEARER, AGENT_SIGNATURE] {
            assert!(
                v["components"]["securitySchemes"][s].is_object(),
                "scheme {s} missing"
            );
        }
        // Every operation says who may call it and how it fails.
        for (path, item) in v["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("path item") {
                assert!(op["tags"].is_array(), "{method} {path}: no tag");
                assert!(op.get("security").is_some(), "{method} {path}: no security");
                assert!(op["responses"].is_object(), "{method} {path}: no responses");
            }
        }
    }
}
