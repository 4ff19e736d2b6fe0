//! The e-mail alerts' SMTP client (lettre over tokio and rustls): sends one
//! message per call to `[smtp]`, STARTTLS against `smtp.ca_file` unless
//! configured otherwise, bounded by `smtp.timeout`. The outbox, digests
//! and retries are `services::telemetry::email`.

use std::sync::Arc;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use crate::adapters::state::Relay;
use crate::config::{SmtpSection, StartTls};
use crate::services::telemetry::email::{self, Mailer, Message};
use crate::services::telemetry::webhook::SendFuture;
use crate::util::random_secret;

/// Why the SMTP client could not be set up (at start: the relay stops).
#[derive(Debug, thiserror::Error)]
pub enum SmtpError {
    #[error("smtp.ca_file {path}: {why}")]
    Roots { path: String, why: String },
    #[error("smtp: {0}")]
    Setup(String),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// Starts the delivery task when `[smtp]` is configured.
pub fn spawn(relay: &Relay) -> Result<(), SmtpError> {
    if let Some(smtp) = &relay.cfg().smtp {
        let client = Client::new(smtp, &relay.cfg().domain)?;
        email::spawn(&relay.svc, Arc::new(client));
    }
    Ok(())
}

/// Sends through one server.
pub struct Client {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// Right-hand side of Message-IDs: the relay's domain.
    domain: String,
    timeout: Duration,
}

impl Client {
    pub fn new(cfg: &SmtpSection, domain: &str) -> Result<Client, SmtpError> {
        let tls = match cfg.starttls {
            StartTls::Off => Tls::None,
            mode => {
                let pem = std::fs::read(&cfg.ca_file).map_err(|e| SmtpError::Roots {
                    path: cfg.ca_file.display().to_string(),
                    why: e.to_string(),
                })?;
                let roots = Certificate::from_pem(&pem).map_err(|e| SmtpError::Roots {
                    path: cfg.ca_file.display().to_string(),
                    why: e.to_string(),
                })?;
                // Only the configured roots: the same rule as the webhook.
                let params = TlsParameters::builder(cfg.host.clone())
                    .certificate_store(CertificateStore::None)
                    .add_root_certificate(roots)
                    .build_rustls()
                    .map_err(|e| SmtpError::Setup(format!("TLS: {e}")))?;
                if mode == StartTls::Required {
                    Tls::Required(params)
                } else {
                    Tls::Opportunistic(params)
                }
            }
        };
        let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&cfg.host)
            .port(cfg.port)
            .tls(tls)
            .hello_name(ClientId::Domain(domain.to_string()))
            .timeout(Some(cfg.timeout));
        if let (Some(user), Some(password)) = (&cfg.username, cfg.password()?) {
            b = b.credentials(Credentials::new(
                user.clone(),
                password.expose().to_string(),
            ));
        }
        let from: Mailbox = cfg
            .from
            .parse()
            .map_err(|e| SmtpError::Setup(format!("from: {e}")))?;
        Ok(Client {
            transport: b.build(),
            from,
            domain: domain.to_string(),
            timeout: cfg.timeout,
        })
    }

    async fn deliver(&self, m: Message) -> Result<(), String> {
        let mut b = lettre::Message::builder()
            .from(self.from.clone())
            .subject(m.subject)
            .message_id(Some(format!("<{}@{}>", random_secret(12), self.domain)));
        for to in &m.to {
            let mb: Mailbox = to.parse().map_err(|e| format!("recipient {to:?}: {e}"))?;
            b = b.to(mb);
        }
        let msg = match m.attachment {
            None => b.header(ContentType::TEXT_PLAIN).body(m.body),
            // The text, then the file: multipart/mixed, base64 by lettre.
            Some(a) => {
                let ct = ContentType::parse(&a.content_type)
                    .map_err(|e| format!("attachment type {:?}: {e}", a.content_type))?;
                b.multipart(
                    MultiPart::mixed()
                        .singlepart(SinglePart::plain(m.body))
                        .singlepart(lettre::message::Attachment::new(a.name).body(a.bytes, ct)),
                )
            }
        }
        .map_err(|e| format!("message: {e}"))?;
        // lettre bounds each command; this bounds the whole conversation.
        match tokio::time::timeout(self.timeout * 4, self.transport.send(msg)).await {
            // The error text is the server's answer or the I/O error; the
            // credentials are not in it.
            Ok(r) => r.map(|_| ()).map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer within {:?}", self.timeout * 4)),
        }
    }
}

impl Mailer for Client {
    fn send(&self, m: Message) -> SendFuture<'_> {
        Box::pin(self.deliver(m))
    }
}
