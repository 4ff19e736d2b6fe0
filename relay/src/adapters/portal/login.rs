//! Log-in and log-out pages. Both run the API's own code: the same
//! [`crate::services::accounts::login::login`] (password, two-factor, lockout, audit), the same
//! cookie, and [`crate::adapters::api::end_login`] (which also ends the user's web
//! sessions).

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::Extension;
use maud::html;
use serde::Deserialize;

use super::layout::page;
use super::{check_csrf, form, FormBody, PResult, Portal, PortalError};
use crate::adapters::http::reply::PeerAddr;
use crate::adapters::state::Relay;
use crate::services::accounts::AccountError;
use crate::services::auth::LoginRequest;

fn login_page(error: Option<&str>, username: &str) -> maud::Markup {
    page(
        "Log in",
        None,
        html! {
            @if let Some(e) = error {
                p.error role="alert" id="login-error" { (e) }
            }
            form.stack method="post" action="/login" {
                label for="username" { "User name"
                    input id="username" name="username" type="text" autocomplete="username"
                        required value=(username) autofocus;
                }
                label for="password" { "Password"
                    input id="password" name="password" type="password"
                        autocomplete="current-password" required;
                }
                label for="totp" { "Two-factor code (from your authenticator app)"
                    input id="totp" name="totp" type="text" inputmode="numeric"
                        autocomplete="one-time-code" pattern="[0-9]{6}" maxlength="6";
                }
                button type="submit" { "Log in" }
            }
        },
    )
}

pub async fn form_page() -> maud::Markup {
    login_page(None, "")
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    totp: String,
}

pub async fn submit(
    State(relay): State<Relay>,
    Extension(PeerAddr(peer)): Extension<PeerAddr>,
    headers: HeaderMap,
    body: FormBody<LoginForm>,
) -> PResult {
    let f = super::form(body)?;
    let fail = |status: StatusCode, msg: &str, user: &str| {
        (status, login_page(Some(msg), user)).into_response()
    };
    // Another site's form must not log the browser in (to the attacker's
    // account, say): the log-in carries no CSRF token yet, so the origin
    // decides.
    if crate::adapters::http::extract::cross_site(&relay, &headers) {
        return Ok(fail(
            StatusCode::FORBIDDEN,
            "This log-in came from another site and was refused; log in on the portal's own page.",
            "",
        ));
    }
    if relay.login_rate.check_key(&peer.ip()).is_err() {
        let mut r = fail(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many log-in attempts from your address; wait a minute and retry.",
            &f.username,
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
        return Ok(r);
    }
    let totp = f.totp.trim();
    let req = LoginRequest {
        username: f.username.trim().to_string(),
        password: f.password,
        totp: (!totp.is_empty()).then(|| totp.to_string()),
    };
    match crate::services::accounts::login::login(&relay, &req, &peer.to_string()).await {
        Ok(ok) => {
            // A one-time password is replaced first; a restricted log-in
            // can only enroll two-factor: go there.
            let next = if ok.principal.password_change {
                super::account::PASSWORD_PATH
            } else if ok.principal.restricted {
                super::account::PATH
            } else {
                "/"
            };
            let mut r = super::see_other(next);
            r.headers_mut().insert(
                header::SET_COOKIE,
                crate::adapters::api::login_cookie(&relay, &ok.cookie)?,
            );
            Ok(r)
        }
        Err(AccountError::Unauthorized(m)) => Ok(fail(StatusCode::UNAUTHORIZED, &m, &req.username)),
        Err(AccountError::TwoFactor { msg, .. }) => {
            Ok(fail(StatusCode::UNAUTHORIZED, &msg, &req.username))
        }
        Err(AccountError::Locked(m)) => Ok(fail(StatusCode::LOCKED, &m, &req.username)),
        Err(e @ AccountError::Refused(_)) => {
            Ok(fail(StatusCode::FORBIDDEN, &e.to_string(), &req.username))
        }
        Err(e) => Err(PortalError::from(e)),
    }
}

#[derive(Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    _csrf: String,
}

impl CsrfOnly {
    pub fn csrf(&self) -> &str {
        &self._csrf
    }
}

pub async fn logout(
    State(relay): State<Relay>,
    Portal(p): Portal,
    body: FormBody<CsrfOnly>,
) -> PResult {
    let f = form(body)?;
    check_csrf(&p, &f._csrf)?;
    crate::adapters::api::end_login(&relay, &p).await?;
    let mut r = super::see_other("/login");
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(crate::adapters::api::LOGOUT_COOKIE),
    );
    Ok(r)
}

/// For handlers that only need the caller's CSRF check.
pub fn csrf(p: &crate::services::auth::Principal, f: &CsrfOnly) -> PResult<()> {
    check_csrf(p, &f._csrf)
}
