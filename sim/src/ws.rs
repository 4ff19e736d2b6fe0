//! `GET /ws`: the live status feed printers push to their status pages.
//! Sends `{"status":"ready","pages":N}` at once and every second, and echoes
//! every text or binary message back.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tracing::Instrument;

use crate::app::{empty, finish, text, Body, Site};

/// How long the client has to start speaking WebSocket after the 101.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);
const STATUS_EVERY: Duration = Duration::from_secs(1);

fn has_token(h: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    h.get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// Answers the handshake with 101 and hands the upgraded connection to a
/// task that lives until either side closes or the fleet shuts down.
pub(crate) fn upgrade(site: Arc<Site>, mut req: Request<Incoming>) -> Response<Body> {
    let h = req.headers();
    let is_ws = has_token(h, header::UPGRADE, "websocket")
        && has_token(h, header::CONNECTION, "upgrade")
        && h.get(header::SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) == Some(b"13");
    let Some(key) = h.get(header::SEC_WEBSOCKET_KEY).filter(|_| is_ws) else {
        return text(StatusCode::BAD_REQUEST, "expected a WebSocket upgrade\n");
    };
    let accept = derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(&mut req);
    let printer = site.printer.clone();
    let cancel = printer.cancel.clone();
    site.printer.tracker.spawn(
        async move {
            let upgraded = match tokio::time::timeout(UPGRADE_TIMEOUT, on_upgrade).await {
                Ok(Ok(u)) => u,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "upgrade failed");
                    return;
                }
                Err(_) => return,
            };
            let mut ws =
                WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
            // The first tick is immediate: the status goes out at once.
            let mut tick = tokio::time::interval(STATUS_EVERY);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => {
                        let _ = ws.close(None).await;
                        break;
                    }
                    _ = tick.tick() => {
                        let pages = printer.pages.load(Ordering::Relaxed);
                        let msg = serde_json::json!({"status": "ready", "pages": pages}).to_string();
                        if ws.send(Message::text(msg)).await.is_err() {
                            break;
                        }
                    }
                    msg = ws.next() => match msg {
                        Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => {
                            if ws.send(m).await.is_err() {
                                break;
                            }
                        }
                        // Pings are answered by tungstenite itself.
                        Some(Ok(Message::Close(_))) | None => break,
                        Some(Ok(_)) => {}
                        Some(Err(e)) => {
                            tracing::debug!(error = %e, "websocket ended");
                            break;
                        }
                    }
                }
            }
        }
        .instrument(tracing::debug_span!("ws", printer = %site.printer.addr, tls = site.tls)),
    );
    finish(
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::UPGRADE, "websocket")
            .header(header::CONNECTION, "Upgrade")
            .header(header::SEC_WEBSOCKET_ACCEPT, accept),
        empty(),
    )
}
