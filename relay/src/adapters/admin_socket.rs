//! The local admin socket (`admin.sock` in the data directory, mode 0600):
//! how CLI commands reach the running server for things only it can do —
//! carry a stream (`connect`, `forward`), drop a revoked agent's session,
//! list live sessions. One JSON request line, one JSON answer line, then
//! (for streams) raw bytes. The caller's uid, from the kernel, is the actor.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use dwa_proto::audit::{AdminCommand, Event};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, UnixListener, UnixStream};
use tracing::Instrument;

use crate::adapters::state::Relay;
use crate::error::{RelayError, Result};
use crate::services::streams::{carry, open_stream, StreamRequest};

pub use crate::util::local_actor;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum AdminRequest {
    Connect {
        agent: String,
        host: String,
        port: u16,
    },
    Forward {
        agent: String,
        host: String,
        port: u16,
        listen: String,
    },
    Disconnect {
        agent: String,
    },
    Status,
}

#[derive(Debug, Serialize, Deserialize, Default)]
pub struct AdminResponse {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agents: Option<serde_json::Value>,
}

impl AdminResponse {
    fn ok() -> Self {
        Self {
            ok: true,
            ..Default::default()
        }
    }
    fn err(e: impl ToString) -> Self {
        Self {
            ok: false,
            error: Some(e.to_string()),
            ..Default::default()
        }
    }
}

async fn send(s: &mut UnixStream, r: &AdminResponse) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(r).unwrap_or_default();
    line.push(b'\n');
    s.write_all(&line).await
}

/// Reads one line of at most `max` bytes.
pub async fn read_line<R: AsyncRead + Unpin>(r: &mut BufReader<R>, max: usize) -> Result<String> {
    let mut line = Vec::new();
    let n = tokio::time::timeout(
        Duration::from_secs(15),
        (&mut *r).take(max as u64).read_until(b'\n', &mut line),
    )
    .await
    .map_err(|_| RelayError::Unavailable("admin socket: timed out".into()))??;
    if n == 0 || line.last() != Some(&b'\n') {
        return Err(RelayError::Invalid(
            "admin socket: incomplete or oversized line".into(),
        ));
    }
    String::from_utf8(line).map_err(|_| RelayError::Invalid("admin socket: not UTF-8".into()))
}

pub async fn listen(relay: Relay, path: &Path) -> Result<()> {
    // A stale socket from a killed server would block the bind.
    let _ = std::fs::remove_file(path);
    let l = UnixListener::bind(path).map_err(|e| RelayError::file(path, e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| RelayError::file(path, e))?;
    let r = relay.clone();
    relay.tracker.spawn(
        async move {
            loop {
                let s = tokio::select! {
                    a = l.accept() => match a { Ok((s, _)) => s, Err(_) => continue },
                    _ = r.shutdown.cancelled() => break,
                };
                let r2 = r.clone();
                r.tracker
                    .spawn(handle(r2, s).instrument(tracing::info_span!("admin_conn")));
            }
        }
        .instrument(tracing::info_span!("admin_listener")),
    );
    Ok(())
}

async fn handle(relay: Relay, stream: UnixStream) {
    let uid = stream.peer_cred().map(|c| c.uid()).unwrap_or(u32::MAX);
    let actor = format!("cli:uid {uid}");
    let mut reader = BufReader::new(stream);
    let req = match read_line(&mut reader, 4096).await {
        Ok(l) => {
            serde_json::from_str::<AdminRequest>(&l).map_err(|e| RelayError::Invalid(e.to_string()))
        }
        Err(e) => Err(e),
    };
    // No bytes are buffered past the request line: the client waits for our answer.
    let mut stream = reader.into_inner();
    let req = match req {
        Ok(r) => r,
        Err(e) => {
            let _ = send(&mut stream, &AdminResponse::err(e)).await;
            return;
        }
    };
    match req {
        AdminRequest::Connect { agent, host, port } => {
            let sreq = StreamRequest {
                agent,
                host,
                port,
                actor,
                tls: false,
            };
            match open_stream(&relay, &sreq).await {
                Ok(mut s) => {
                    if send(&mut stream, &AdminResponse::ok()).await.is_err() {
                        s.finish(&relay, Some("client went away".into())).await;
                        return;
                    }
                    let copy = tokio::io::copy_bidirectional_with_sizes(
                        &mut stream,
                        &mut s.stream,
                        64 * 1024,
                        64 * 1024,
                    );
                    // At shutdown the close record is written before the
                    // database closes, even if the client sits idle.
                    let r = tokio::select! {
                        r = copy => r,
                        _ = relay.shutdown.cancelled() => Err(std::io::Error::other("relay shutting down")),
                    };
                    s.finish(&relay, r.err().map(|e| e.to_string())).await;
                }
                Err(e) => {
                    let _ = send(&mut stream, &AdminResponse::err(e)).await;
                }
            }
        }
        AdminRequest::Forward {
            agent,
            host,
            port,
            listen,
        } => {
            let sreq = StreamRequest {
                agent,
                host,
                port,
                actor: actor.clone(),
                tls: false,
            };
            // Fail early (unknown agent, relay-side denial) before listening.
            if let Err(e) = relay.store.find_agent(&sreq.agent).await {
                let _ = send(&mut stream, &AdminResponse::err(e)).await;
                return;
            }
            // Anyone who can reach the listener rides the stream: loopback only.
            match listen.parse::<std::net::SocketAddr>() {
                Ok(a) if a.ip().is_loopback() => {}
                _ => {
                    let msg = format!(
                        "--listen {listen}: must be a loopback address and port (e.g. 127.0.0.1:0)"
                    );
                    let _ = send(&mut stream, &AdminResponse::err(msg)).await;
                    return;
                }
            }
            let l = match TcpListener::bind(&listen).await {
                Ok(l) => l,
                Err(e) => {
                    let _ = send(
                        &mut stream,
                        &AdminResponse::err(format!("listen on {listen}: {e}")),
                    )
                    .await;
                    return;
                }
            };
            let bound = l.local_addr().map(|a| a.to_string()).unwrap_or(listen);
            relay
                .audit
                .record(
                    Event::AdminCommand(AdminCommand::Forward {
                        listen: bound.clone(),
                        agent: sreq.agent.clone(),
                        target: format!("{}:{}", sreq.host, sreq.port),
                    }),
                    &actor,
                    None,
                )
                .await;
            let mut resp = AdminResponse::ok();
            resp.listen = Some(bound);
            if send(&mut stream, &resp).await.is_err() {
                return;
            }
            // Serve until the CLI goes away (its end of the socket closes).
            let mut probe = [0u8; 1];
            loop {
                tokio::select! {
                    a = l.accept() => {
                        let Ok((sock, peer)) = a else { continue };
                        let _ = sock.set_nodelay(true);
                        let (r, q) = (relay.clone(), sreq.clone());
                        relay.tracker.spawn(async move {
                            if let Err(e) = carry(&r, &q, sock).await {
                                tracing::info!(%peer, error = %e, "forwarded connection refused");
                            }
                        }.instrument(tracing::info_span!("forward_conn")));
                    }
                    n = stream.read(&mut probe) => if matches!(n, Ok(0) | Err(_)) { break },
                    _ = relay.shutdown.cancelled() => break,
                }
            }
        }
        AdminRequest::Disconnect { agent } => {
            let resp = match relay.agents.get(&agent) {
                Some(c) => {
                    c.disconnect("disconnected by an administrator").await;
                    AdminResponse::ok()
                }
                None => AdminResponse::err(format!("agent {agent} is not connected")),
            };
            let _ = send(&mut stream, &resp).await;
        }
        AdminRequest::Status => {
            let agents: Vec<_> = relay
                .agents
                .list()
                .iter()
                .map(|c| {
                    let n = c.native();
                    json!({"id": c.agent_id, "name": c.agent_name, "customer": c.customer,
                       "peer": c.peer.to_string(), "transport": c.transport,
                       "connected_since": humantime::format_rfc3339_seconds(c.connected_at).to_string(),
                       "agent_version": n.as_ref().map(|n| n.hello.agent_version.clone()),
                       "control": n.is_some(), "open_streams": c.open_streams(),
                       "forwards": c.forwards()})
                })
                .collect();
            let mut resp = AdminResponse::ok();
            resp.agents = Some(serde_json::Value::Array(agents));
            let _ = send(&mut stream, &resp).await;
        }
    }
}

/// Client side: sends a request, returns the answer and the open socket.
pub async fn request(socket: &Path, req: &AdminRequest) -> Result<(AdminResponse, UnixStream)> {
    let mut s = UnixStream::connect(socket).await.map_err(|e| {
        RelayError::Unavailable(format!(
            "cannot reach the running relay at {}: {e} (is `dwa-relay serve` running with this data directory?)",
            socket.display()
        ))
    })?;
    let mut line = serde_json::to_vec(req).unwrap_or_default();
    line.push(b'\n');
    s.write_all(&line).await?;
    // Read the answer byte by byte so no stream bytes after it are consumed.
    let mut buf = Vec::new();
    let mut b = [0u8; 1];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut b))
            .await
            .map_err(|_| RelayError::Unavailable("the relay did not answer".into()))??;
        if n == 0 {
            return Err(RelayError::Unavailable(
                "the relay closed the admin connection".into(),
            ));
        }
        if b[0] == b'\n' {
            break;
        }
        buf.push(b[0]);
        if buf.len() > 1 << 20 {
            return Err(RelayError::Invalid(
                "oversized answer from the relay".into(),
            ));
        }
    }
    let resp: AdminResponse = serde_json::from_slice(&buf)
        .map_err(|e| RelayError::Invalid(format!("bad answer from the relay: {e}")))?;
    Ok((resp, s))
}
