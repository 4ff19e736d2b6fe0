//! Raw TCP tunnels end to end: the real relay and agent, an echo target and
//! a small IPP responder; the API request and the tunnel's client come from
//! one loopback address, an intruder from another.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use dwa_e2e_tests::browser::{Api, Browser};
use dwa_e2e_tests::*;
use ipp::operation::IppOperation as _;
use ipp::prelude::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const RAW: u16 = 9100;
const IPP: u16 = 631;

struct Fixture {
    relay: Relay,
    _agent: Agent,
    ip: String,
    device: i64,
    /// The requester's address (`.50`) and another one (`.51`).
    client: IpAddr,
    intruder: IpAddr,
    api: Api,
}

async fn fixture() -> Fixture {
    let (relay, agent, ip) = Relay::with_agent_config(
        |cfg| {
            // `init` writes every section; short tunnels for the expiry test.
            assert!(cfg.contains("min_ttl = \"1m\""), "{cfg}");
            *cfg = cfg.replace("min_ttl = \"1m\"", "min_ttl = \"1s\"");
        },
        &[RAW, IPP],
    );
    let device = relay.add_device(&agent, &ip);
    let client: IpAddr = relay.ip(50).parse().expect("client ip");
    let intruder: IpAddr = relay.ip(51).parse().expect("intruder ip");
    let code = relay.totp.code("admin").await;
    let api = Api::from_source(&relay, client)
        .log_in_with("admin", &relay.admin_password, code.as_deref())
        .await;
    Fixture {
        relay,
        _agent: agent,
        ip,
        device,
        client,
        intruder,
        api,
    }
}

impl Fixture {
    async fn tunnel(&self, body: Value) -> Value {
        let (status, v) = self
            .api
            .call(
                Method::POST,
                &format!("/devices/{}/tunnels", self.device),
                Some(body),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::CREATED,
            "tunnel: {v}\n{}",
            self.relay.logs()
        );
        v
    }
}

fn listen_of(v: &Value) -> SocketAddr {
    format!(
        "{}:{}",
        v["host"].as_str().expect("host"),
        v["listen_port"].as_u64().expect("listen_port")
    )
    .parse()
    .expect("listen address")
}

async fn connect_from(source: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(SocketAddr::new(source, 0))?;
    tokio::time::timeout(Duration::from_secs(10), s.connect(to))
        .await
        .map_err(|_| std::io::Error::other("connect timed out"))?
}

/// Reads until EOF or error; returns the bytes and whether it ended within `t`.
async fn read_to_end_within(s: &mut TcpStream, t: Duration) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let r = tokio::time::timeout(t, async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    (out, r.is_ok())
}

fn details(relay: &Relay, kind: &str) -> Vec<Value> {
    relay
        .audit_kind(kind)
        .into_iter()
        .map(|r| r["detail"].clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_serves_only_its_client_and_ends_on_time() {
    let f = fixture().await;
    let _echo = echo_target(&format!("{}:{RAW}", f.ip)).await;
    let t = f.tunnel(json!({"port": RAW, "ttl": 6})).await;
    assert_eq!(t["client"], f.client.to_string(), "{t}");
    assert_eq!(t["port"], RAW);
    let listen = listen_of(&t);
    assert!((20000..=20999).contains(&listen.port()), "{t}");
    let opened_at = Instant::now();

    // The requester's address: bytes go through the agent to the echo target.
    let mut c = connect_from(f.client, listen).await.expect("connect");
    let data = pattern(100_000, 0);
    c.write_all(&data).await.expect("write");
    let mut back = vec![0u8; data.len()];
    tokio::time::timeout(Duration::from_secs(10), c.read_exact(&mut back))
        .await
        .expect("echo in time")
        .expect("echo");
    assert_eq!(back, data);

    // Another source address: closed at once, nothing carried, audited.
    let mut other = connect_from(f.intruder, listen).await.expect("tcp accept");
    let _ = other.write_all(b"hello?").await;
    let (got, closed) = read_to_end_within(&mut other, Duration::from_secs(5)).await;
    assert!(closed && got.is_empty(), "intruder got {got:?}");
    let refused = details(&f.relay, "tunnel.source_refused");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(
        refused[0]["source"]
            .as_str()
            .is_some_and(|s| s.starts_with(&f.intruder.to_string())),
        "{refused:?}"
    );

    // Listed while live.
    let (status, list) = f.api.call(Method::GET, "/tunnels", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");

    // Expiry closes the live connection and the listener, on time.
    let (_, closed) = read_to_end_within(&mut c, Duration::from_secs(15)).await;
    assert!(closed, "the live connection was not closed at expiry");
    let lived = opened_at.elapsed();
    assert!(
        lived >= Duration::from_secs(5) && lived < Duration::from_secs(12),
        "closed after {lived:?}"
    );
    assert!(
        connect_from(f.client, listen).await.is_err(),
        "the listener outlived its tunnel"
    );
    assert_eventually!(
        !details(&f.relay, "tunnel.close").is_empty(),
        Duration::from_secs(5),
        "no close record"
    );
    let close = &details(&f.relay, "tunnel.close")[0];
    assert_eq!(close["reason"], "expired", "{close}");
    assert_eq!(close["refused"], 1, "{close}");
    assert_eventually!(
        !details(&f.relay, "tunnel.connection").is_empty(),
        Duration::from_secs(5),
        "no connection record"
    );
    let conn = &details(&f.relay, "tunnel.connection")[0];
    assert_eq!(conn["bytes_up"], 100_000, "{conn}");
    assert_eq!(conn["bytes_down"], 100_000, "{conn}");
    let open = &details(&f.relay, "tunnel.open")[0];
    assert_eq!(open["client"], f.client.to_string());
    assert_eq!(open["port"], RAW);
    let (_, list) = f.api.call(Method::GET, "/tunnels", None).await;
    assert_eq!(list, json!([]));
}

/// A minimal IPP printer: reads one HTTP request with a Content-Length
/// body, answers successful-ok with the request's id.
async fn ipp_responder(addr: &str) -> Target {
    serve_target(addr, |mut s| async move {
        let mut buf = Vec::new();
        let mut b = [0u8; 4096];
        loop {
            let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                match s.read(&mut b).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&b[..n]),
                }
                continue;
            };
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                match s.read(&mut b).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&b[..n]),
                }
            }
            let body = &buf[end + 4..end + 4 + len];
            let id = match body.get(4..8) {
                Some(b) => i32::from_be_bytes([b[0], b[1], b[2], b[3]]),
                None => 0,
            };
            let resp = IppRequestResponse::new_response(
                IppVersion::v1_1(),
                ipp::model::StatusCode::SuccessfulOk,
                id,
            )
            .expect("response")
            .to_bytes();
            let mut out = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/ipp\r\nContent-Length: {}\r\n\r\n",
                resp.len()
            )
            .into_bytes();
            out.extend_from_slice(&resp);
            let _ = s.write_all(&out).await;
            buf.drain(..end + 4 + len);
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnels_are_revoked_refused_audited_for_ipp_and_end_at_logout() {
    let f = fixture().await;
    let _echo = echo_target(&format!("{}:{RAW}", f.ip)).await;
    let _ipp = ipp_responder(&format!("{}:{IPP}", f.ip)).await;

    // DELETE closes the listener and the live connection.
    let t = f.tunnel(json!({"port": RAW})).await;
    let listen = listen_of(&t);
    let mut c = connect_from(f.client, listen).await.expect("connect");
    c.write_all(b"ping").await.expect("write");
    let mut four = [0u8; 4];
    c.read_exact(&mut four).await.expect("echo");
    let (status, v) = f
        .api
        .call(
            Method::DELETE,
            &format!("/tunnels/{}", t["id"].as_str().expect("id")),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (_, closed) = read_to_end_within(&mut c, Duration::from_secs(5)).await;
    assert!(closed, "revocation left the connection open");
    assert_eventually!(
        details(&f.relay, "tunnel.close")
            .iter()
            .any(|d| d["reason"] == "revoked"),
        Duration::from_secs(5),
        "no revoked close record"
    );
    assert!(connect_from(f.client, listen).await.is_err());

    // Bad requests and other customers' technicians.
    let url = format!("/devices/{}/tunnels", f.device);
    let (status, _) = f
        .api
        .call(Method::POST, &url, Some(json!({"port": 22})))
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a port the agent does not allow"
    );
    let (status, _) = f
        .api
        .call(Method::POST, &url, Some(json!({"port": RAW, "ttl": "9h"})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    f.relay.ok(&["customer", "add", "other"]);
    let tech = f
        .relay
        .add_user(&["tina", "--role", "technician", "--customer", "other"])
        .await;
    // With her two-factor code, so the refusal below is the customer
    // check, not the enrollment restriction.
    let code = f.relay.totp.code("tina").await;
    assert!(
        code.is_some(),
        "tina enrolled two-factor at her first log-in"
    );
    let tina = Api::from_source(&f.relay, f.client)
        .log_in_with(
            "tina",
            tech["password"].as_str().expect("password"),
            code.as_deref(),
        )
        .await;
    let (status, v) = tina
        .call(Method::POST, &url, Some(json!({"port": RAW})))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert!(details(&f.relay, "tunnel.refused")
        .iter()
        .any(|d| d["port"] == RAW && d["reason"].as_str().is_some_and(|r| r.contains("customer"))));

    // IPP through a tunnel to 631: audited per operation.
    let t = f.tunnel(json!({"port": IPP})).await;
    let mut c = connect_from(f.client, listen_of(&t))
        .await
        .expect("connect");
    let uri: Uri = format!("ipp://{}/ipp/print", f.ip).parse().expect("uri");
    for id in 0..2 {
        let mut req = IppOperationBuilder::get_printer_attributes(uri.clone())
            .attributes(["printer-state", "printer-make-and-model"])
            .build()
            .expect("operation")
            .into_ipp_request();
        req.header_mut().request_id = 7 + id;
        let body = req.to_bytes();
        let mut out = format!(
            "POST /ipp/print HTTP/1.1\r\nHost: {}\r\nContent-Type: application/ipp\r\nContent-Length: {}\r\n\r\n",
            f.ip,
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(&body);
        c.write_all(&out).await.expect("write");
        let mut got = Vec::new();
        let mut b = [0u8; 1024];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") || got.len() < 40 {
            let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut b))
                .await
                .expect("IPP answer in time")
                .expect("read");
            assert!(n > 0, "IPP responder closed");
            got.extend_from_slice(&b[..n]);
        }
        assert!(got.starts_with(b"HTTP/1.1 200"));
    }
    assert_eventually!(
        details(&f.relay, "ipp.operation").len() == 2,
        Duration::from_secs(10),
        "IPP operations not audited: {:?}",
        details(&f.relay, "ipp.operation")
    );
    let ops = details(&f.relay, "ipp.operation");
    assert_eq!(ops[0]["operation"], "Get-Printer-Attributes", "{ops:?}");
    assert_eq!(
        ops[0]["requested_attributes"],
        json!(["printer-state", "printer-make-and-model"])
    );
    assert_eq!(ops[1]["request_id"], 8);
    assert_eq!(ops[0]["tunnel"], t["id"]);

    // IPP through a web session to 631: audited the same way.
    let (status, ws) = f
        .api
        .call(
            Method::POST,
            &format!("/devices/{}/web-sessions", f.device),
            Some(json!({"port": IPP, "tls": false})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{ws}");
    let mut b = Browser::new(&f.relay);
    b.get(ws["url"].as_str().expect("url")).await;
    let page = b.page.clone().expect("on the session host");
    let req = IppOperationBuilder::get_jobs(uri.clone())
        .build()
        .expect("operation")
        .into_ipp_request();
    let resp = b
        .client
        .post(page.join("/ipp/print").expect("url"))
        .header("content-type", "application/ipp")
        .body(req.to_bytes().to_vec())
        .send()
        .await
        .expect("IPP through the web session");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eventually!(
        details(&f.relay, "ipp.operation")
            .iter()
            .any(|d| d["operation"] == "Get-Jobs" && d["session"] == ws["id"]),
        Duration::from_secs(10),
        "web-session IPP not audited: {:?}",
        details(&f.relay, "ipp.operation")
    );

    // Log-out ends the user's tunnels.
    let (status, v) = f.api.call(Method::POST, "/logout", None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (_, closed) = read_to_end_within(&mut c, Duration::from_secs(5)).await;
    assert!(closed, "log-out left the connection open");
    assert_eventually!(
        details(&f.relay, "tunnel.close")
            .iter()
            .any(|d| d["reason"] == "logout" && d["tunnel"] == t["id"]),
        Duration::from_secs(5),
        "no logout close record"
    );
}
