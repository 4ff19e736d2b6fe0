//! A lean HTTP/1.1 client for the web bench (hyper's connection API, no
//! pool, no redirects): plain HTTP or TLS to any address, with the Host
//! header, TLS name and cookie chosen by the caller, so that session hosts
//! resolve to the relay without DNS and the client's own cost stays small.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{header, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::Barrier;
use tokio_rustls::TlsConnector;

/// Size of `/small`'s body.
pub const SMALL: u64 = 1024;

/// A client TLS configuration trusting only the certificates in `pem`.
pub fn tls_trusting(pem: &Path) -> Result<TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    for c in
        CertificateDer::pem_file_iter(pem).with_context(|| format!("read {}", pem.display()))?
    {
        roots
            .add(c.with_context(|| format!("parse {}", pem.display()))?)
            .context("add the relay's certificate")?;
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(cfg)))
}

/// Where requests go and how they are addressed.
#[derive(Clone)]
pub struct Endpoint {
    /// What the TCP socket connects to.
    pub addr: SocketAddr,
    /// The Host header (with the port when not the default).
    pub host: String,
    /// TLS with this connector (the TLS name is `host` without its port).
    pub tls: Option<TlsConnector>,
    /// A `Cookie` header sent on every request.
    pub cookie: Option<String>,
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One keep-alive HTTP/1.1 connection.
pub struct Conn {
    tx: SendRequest<Full<Bytes>>,
    ep: Endpoint,
}

/// A response whose body was read to the end.
pub struct Answer {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "not JSON ({}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

impl Endpoint {
    pub fn plain(addr: SocketAddr) -> Self {
        Self {
            addr,
            host: addr.to_string(),
            tls: None,
            cookie: None,
        }
    }

    pub async fn connect(&self) -> Result<Conn> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .with_context(|| format!("connect {}", self.addr))?;
        tcp.set_nodelay(true)?;
        let io: Box<dyn Io> = match &self.tls {
            None => Box::new(tcp),
            Some(c) => {
                let name = self
                    .host
                    .rsplit_once(':')
                    .map_or(self.host.as_str(), |(h, _)| h);
                let name = ServerName::try_from(name.to_string())
                    .with_context(|| format!("TLS name {name:?}"))?;
                Box::new(
                    c.connect(name, tcp)
                        .await
                        .with_context(|| format!("TLS to {} ({})", self.host, self.addr))?,
                )
            }
        };
        let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .context("HTTP handshake")?;
        // The connection task ends when `tx` is dropped or the peer closes.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn {
            tx,
            ep: self.clone(),
        })
    }
}

impl Conn {
    /// The cookie sent from now on (after a ticket exchange).
    pub fn set_cookie(&mut self, cookie: Option<String>) {
        self.ep.cookie = cookie;
    }

    /// Sends one request (Host and cookie added) and returns its response
    /// head; the body is the caller's to read before the next request.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(header::HeaderName, &str)],
        body: Option<Bytes>,
    ) -> Result<Response<Incoming>> {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.ep.host);
        if let Some(c) = &self.ep.cookie {
            b = b.header(header::COOKIE, c);
        }
        for (k, v) in headers {
            b = b.header(k, *v);
        }
        let req = b.body(Full::new(body.unwrap_or_default()))?;
        self.tx.ready().await.context("connection closed")?;
        self.tx
            .send_request(req)
            .await
            .with_context(|| format!("{path} on {}", self.ep.host))
    }

    /// A whole exchange, body read.
    pub async fn call(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(header::HeaderName, &str)],
        body: Option<Bytes>,
    ) -> Result<Answer> {
        let r = self.send(method, path, headers, body).await?;
        let (parts, body) = r.into_parts();
        let body = body.collect().await.context("read body")?.to_bytes();
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// GET `path`, expecting 200; returns the body's length (and, with
    /// `hash`, feeds the body to it).
    pub async fn get_count(&mut self, path: &str, mut hash: Option<&mut Sha256>) -> Result<u64> {
        let r = self.send(Method::GET, path, &[], None).await?;
        if r.status() != StatusCode::OK {
            let status = r.status();
            let body = r.into_body().collect().await.map(|b| b.to_bytes());
            bail!(
                "GET {path}: {status}: {}",
                body.map(|b| String::from_utf8_lossy(&b)
                    .chars()
                    .take(300)
                    .collect::<String>())
                    .unwrap_or_default()
            );
        }
        let mut body = r.into_body();
        let mut n = 0u64;
        while let Some(f) = body.frame().await {
            let f = f.context("body")?;
            if let Some(d) = f.data_ref() {
                n += d.len() as u64;
                if let Some(h) = hash.as_deref_mut() {
                    h.update(d);
                }
            }
        }
        Ok(n)
    }
}

/// Time to download `size` bytes from `/download` on a fresh connection,
/// from connect to the last byte; with `verify`, the body's SHA-256 is
/// checked against the simulator's (outside the timed figures only: the
/// hash would cost more CPU than the transfer).
pub async fn download(ep: &Endpoint, size: u64, verify: bool) -> Result<Duration> {
    let start = Instant::now();
    let mut c = ep.connect().await?;
    let mut h = verify.then(Sha256::new);
    let n = c
        .get_count(&format!("/download?size={size}"), h.as_mut())
        .await?;
    let t = start.elapsed();
    if n != size {
        bail!("download: got {n} of {size} bytes");
    }
    if let Some(h) = h {
        let got = hex::encode(h.finalize());
        if got != dwa_sim::download_sha256(size) {
            bail!("download: {size} bytes arrived, but not the printer's (SHA-256 differs)");
        }
    }
    Ok(t)
}

/// One `GET /small`, checked, in nanoseconds.
async fn small(c: &mut Conn) -> Result<u64> {
    let t = Instant::now();
    let n = c.get_count("/small", None).await?;
    let ns = t.elapsed().as_nanos() as u64;
    if n != SMALL {
        bail!("/small: got {n} bytes, expected {SMALL}");
    }
    Ok(ns)
}

/// `count` sequential `GET /small` on one keep-alive connection, after
/// `warmup` unrecorded ones; latencies in nanoseconds.
pub async fn small_sequential(ep: &Endpoint, count: usize, warmup: usize) -> Result<Vec<u64>> {
    let mut c = ep.connect().await?;
    let mut out = Vec::with_capacity(count);
    for i in 0..warmup + count {
        let ns = small(&mut c).await?;
        if i >= warmup {
            out.push(ns);
        }
    }
    Ok(out)
}

/// `conns` keep-alive connections, each doing one unrecorded request, then
/// all at once `per` requests each; all latencies in nanoseconds and the
/// wall time of the timed phase.
pub async fn small_concurrent(
    ep: &Endpoint,
    conns: usize,
    per: usize,
) -> Result<(Vec<u64>, Duration)> {
    let mut cs = Vec::with_capacity(conns);
    for _ in 0..conns {
        let mut c = ep.connect().await?;
        small(&mut c).await?;
        cs.push(c);
    }
    let barrier = Arc::new(Barrier::new(conns + 1));
    let mut tasks = Vec::with_capacity(conns);
    for mut c in cs {
        let b = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let mut v = Vec::with_capacity(per);
            b.wait().await;
            for _ in 0..per {
                v.push(small(&mut c).await?);
            }
            anyhow::Ok(v)
        }));
    }
    barrier.wait().await;
    let start = Instant::now();
    let mut all = Vec::with_capacity(conns * per);
    for t in tasks {
        all.extend(t.await.context("request task")??);
    }
    Ok((all, start.elapsed()))
}
