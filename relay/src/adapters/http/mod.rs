//! The relay's HTTPS endpoint (rustls, hyper): enrollment, the agents'
//! SSH-over-WebSocket, health. The dealer API and portal join it later.

use std::time::Duration;

pub mod client;
pub mod extract;
pub mod headers;
pub mod ingest;
pub mod reply;
pub mod sso;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use dwa_link::ws::{ws_config, WsStream, WS_PATH};
use dwa_proto::enroll::EnrollRequest;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;
use tower::ServiceExt;
use tracing::Instrument;

use crate::adapters::state::Relay;
use crate::adapters::web::proxy;
use reply::{api_error, failure_response, PeerAddr};

use crate::services::web_sessions::session_id_from_host;

const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECTION_LIFETIME: Duration = Duration::from_secs(120);

pub fn router(relay: Relay) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/v1/enroll", post(enroll))
        // Reads its own body, up to MAX_BATCH_BYTES (not the 16 KiB below).
        .route(dwa_proto::telemetry::INGEST_PATH, post(ingest::handler))
        .route(WS_PATH, get(agent_ws))
        .merge(crate::adapters::api::routes())
        .fallback(|| async { api_error(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .layer(DefaultBodyLimit::max(16 * 1024))
        .with_state(relay)
}

/// Liveness, for load balancers and monitoring.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "meta",
    security(()),
    responses((status = 200, description = "`ok`", body = String, content_type = "text/plain"))
)]
pub(crate) async fn healthz() -> &'static str {
    "ok\n"
}

/// The host a request names (Host header, else the URI's authority),
/// lowercased.
fn request_host(req: &hyper::Request<hyper::body::Incoming>) -> Option<String> {
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .map(str::to_ascii_lowercase)
}

/// Redeem an enrollment token: register the agent's key, get what to pin.
/// The token (in the body) is the credential.
#[utoipa::path(
    post,
    path = "/api/v1/enroll",
    tag = "agent",
    security(()),
    request_body(content = Object, description = "`{secret, public_key, hostname, agent_version}`"),
    responses(
        (status = 200, description = "`{agent_id, agent_name, customer, ssh_host_key, ssh_port}`",
         body = Object),
        (status = 400, description = "Invalid request", body = crate::adapters::http::reply::ErrorBody),
        (status = 403, description = "Token unknown, expired or used up; bad key or hostname",
         body = crate::adapters::http::reply::ErrorBody),
        crate::adapters::http::reply::E429,
    )
)]
pub(crate) async fn enroll(
    State(relay): State<Relay>,
    axum::Extension(PeerAddr(peer)): axum::Extension<PeerAddr>,
    body: Result<Json<EnrollRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if relay.enroll_rate.check_key(&peer.ip()).is_err() {
        let mut r = api_error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many enrollment attempts; retry later",
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
        return r;
    }
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => return api_error(StatusCode::BAD_REQUEST, "invalid", e.body_text()),
    };
    match crate::services::enrollment::enroll(&relay, req, &peer.to_string()).await {
        Ok(resp) => Json(resp).into_response(),
        Err(e) => failure_response(&e),
    }
}

fn header_has(h: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    h.get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// Upgrades to a WebSocket and runs an SSH session over it.
#[utoipa::path(
    get,
    path = "/agent/ws",
    tag = "agent",
    description = "SSH carried over a WebSocket, for agents where TCP 22 is blocked. The agent \
        authenticates inside, with SSH public-key authentication by its enrolled key; the HTTP \
        layer only checks the upgrade.",
    security(()),
    responses(
        (status = 101, description = "Switching to the WebSocket"),
        (status = 400, description = "Not a WebSocket upgrade", body = crate::adapters::http::reply::ErrorBody),
        (status = 503, description = "Connection limit reached", body = crate::adapters::http::reply::ErrorBody),
    )
)]
pub(crate) async fn agent_ws(State(relay): State<Relay>, mut req: Request) -> Response {
    let h = req.headers();
    let key = h.get(header::SEC_WEBSOCKET_KEY).cloned();
    let ok = header_has(h, header::UPGRADE, "websocket")
        && header_has(h, header::CONNECTION, "upgrade")
        && h.get(header::SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) == Some(b"13");
    let (Some(key), true) = (key, ok) else {
        return api_error(
            StatusCode::BAD_REQUEST,
            "invalid",
            "expected a WebSocket upgrade",
        );
    };
    let Some(PeerAddr(peer)) = req.extensions().get::<PeerAddr>().copied() else {
        return api_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "no peer address",
        );
    };
    // The WebSocket outlives this HTTP exchange: it holds its own slot.
    let Ok(slot) = relay.connections.clone().try_acquire_owned() else {
        return api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "connection limit reached",
        );
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let relay = relay.clone();
    relay.tracker.spawn(
        {
            let relay = relay.clone();
            async move {
                let upgraded = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, on_upgrade).await {
                    Ok(Ok(u)) => u,
                    _ => return,
                };
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(ws_config()),
                )
                .await;
                crate::adapters::ssh::serve_connection(
                    relay,
                    Box::new(WsStream::new(ws)),
                    peer,
                    "websocket",
                )
                .await;
                drop(slot);
            }
        }
        .instrument(tracing::info_span!("ws_conn", %peer)),
    );
    let accept = derive_accept_key(key.as_bytes());
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(axum::body::Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Accepts TLS connections until shutdown.
pub async fn listen(relay: Relay, listener: TcpListener) {
    let app = router(relay.clone());
    let acceptor = tokio_rustls::TlsAcceptor::from(relay.tls.clone());
    while let Some(a) = relay.accept(&listener).await {
        let (sock, peer, permit) = (a.sock, a.peer, a.slot);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let shutdown = relay.shutdown.clone();
        let relay2 = relay.clone();
        // Until its first request a connection holds one of its address's
        // few handshake places: slow TLS and slow headers from one address
        // cannot hold every connection the relay has.
        let Some(opening) = relay.tls_handshake_sources.try_take(peer.ip()) else {
            tracing::warn!(%peer, "too many TLS handshakes from this address; dropping connection");
            continue;
        };
        let silent_for = relay.cfg().limits.version_timeout;
        relay.tracker.spawn(
            async move {
                // A client speaks first (its ClientHello): a silent one goes
                // soon, before the TLS handshake's own, longer budget.
                let mut first = [0u8; 1];
                match tokio::time::timeout(silent_for, sock.peek(&mut first)).await {
                    Ok(Ok(n)) if n > 0 => {}
                    _ => return,
                }
                let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(sock)).await {
                    Ok(Ok(t)) => t,
                    Ok(Err(e)) => {
                        let text = e.to_string();
                        tracing::debug!(error = %text, "TLS handshake failed");
                        // A client that rejects our certificate holds a pin
                        // (an enrollment token or agent.toml) for another one.
                        // Anyone can cause one: digested per source.
                        if text.contains("BadCertificate") || text.contains("CertificateUnknown") {
                            crate::services::refusals::record(
                                &relay2,
                                Some(peer.ip()),
                                dwa_proto::audit::Event::TlsCertRejected { error: text },
                                &format!("peer:{peer}"),
                                None,
                            )
                            .await;
                        }
                        return;
                    }
                    Err(_) => return,
                };
                // A connection whose TLS name is a session host belongs to
                // that session: it lives as long as the session, no longer.
                let domain = relay2.cfg().domain.clone();
                let bound = tls
                    .get_ref()
                    .1
                    .server_name()
                    .and_then(|h| session_id_from_host(&h.to_ascii_lowercase(), &domain));
                let session = bound.as_ref().and_then(|id| relay2.web.get(id));
                let relay3 = relay2.clone();
                let opening = std::sync::Mutex::new(Some(opening));
                let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                    // Its first request's headers are in: the handshake
                    // place goes back.
                    drop(opening.lock().unwrap_or_else(|e| e.into_inner()).take());
                    req.extensions_mut().insert(PeerAddr(peer));
                    let app = app.clone();
                    let relay = relay3.clone();
                    let named = request_host(&req).and_then(|h| session_id_from_host(&h, &relay.cfg().domain));
                    let bound = bound.clone();
                    async move {
                        match (named, bound) {
                            (Some(id), None) => {
                                let s = relay.web.get(&id);
                                Ok(proxy::serve(relay, s, req.map(axum::body::Body::new)).await)
                            }
                            (Some(id), Some(b)) if b == id => {
                                let s = relay.web.get(&id);
                                Ok(proxy::serve(relay, s, req.map(axum::body::Body::new)).await)
                            }
                            (_, Some(_)) => Ok(proxy::page(
                                StatusCode::MISDIRECTED_REQUEST,
                                "Misdirected request",
                                "This connection belongs to another host.",
                            )),
                            (None, None) => {
                                // A body that trickles in (or never comes)
                                // cannot hold a connection slot for long.
                                let call = app.oneshot(req.map(axum::body::Body::new));
                                let mut r = match tokio::time::timeout(REQUEST_TIMEOUT, call).await {
                                    Ok(r) => r,
                                    Err(_) => Ok(api_error(StatusCode::REQUEST_TIMEOUT, "timeout", "request not completed in time")),
                                };
                                // The portal host: its own security headers
                                // (session hosts above carry printers' pages).
                                if let Ok(resp) = &mut r {
                                    crate::adapters::http::headers::apply(resp.headers_mut());
                                }
                                r
                            }
                        }
                    }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(TokioIo::new(tls), svc)
                    .with_upgrades();
                // A plain HTTP connection (keep-alive included) holds its slot
                // for at most CONNECTION_LIFETIME; an upgraded one leaves this
                // future at the upgrade and holds its own slot.
                let (lifetime, ended) = match &session {
                    Some(s) if s.ended().is_none() => (None, s.cancel.clone()),
                    _ => (Some(CONNECTION_LIFETIME), tokio_util::sync::CancellationToken::new()),
                };
                let lifetime = async move {
                    match lifetime {
                        Some(l) => tokio::time::sleep(l).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    r = conn => if let Err(e) = r { tracing::debug!(error = %e, "HTTP connection ended with an error") },
                    _ = lifetime => {}
                    _ = ended.cancelled() => {}
                    _ = shutdown.cancelled() => {}
                }
                drop(permit);
            }
            .instrument(tracing::info_span!("https_conn", %peer)),
        );
    }
}
