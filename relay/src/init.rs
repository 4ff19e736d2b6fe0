//! `dwa-relay init`: a new data directory with config, SSH host key, TLS
//! certificate, database and first admin user. Also the loaders `serve` uses.

use std::net::SocketAddr;
use std::sync::Arc;

use dwa_proto::audit::{AdminCommand, Event};
use serde::Serialize;

use crate::config::{
    DataDir, RelayConfig, CONFIG_FILE, HOST_KEY_FILE, TLS_CERT_FILE, TLS_KEY_FILE,
};
use crate::error::{RelayError, Result};
use crate::services::audit::Audit;
use crate::util::{random_password, write_private};

#[derive(Debug, Serialize)]
pub struct InitReport {
    pub data_dir: String,
    pub domain: String,
    pub ssh_listen: SocketAddr,
    pub https_listen: SocketAddr,
    pub ssh_host_key_fingerprint: String,
    pub tls_fingerprint: String,
    pub admin_user: String,
    /// Shown once; only its argon2id hash is stored.
    pub admin_password: String,
    /// The admin's TOTP enrollment (otpauth URI), shown once; absent when
    /// the admin role does not require two-factor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_totp_uri: Option<String>,
}

/// Hashes a password as accounts do (argon2id).
pub fn hash_password(password: &str) -> Result<String> {
    crate::services::accounts::users::hash_password(password)
        .map_err(|e| RelayError::Invalid(e.to_string()))
}

pub async fn init(
    dir: &DataDir,
    domain: &str,
    ssh: SocketAddr,
    https: SocketAddr,
) -> Result<InitReport> {
    let cfg = RelayConfig::new(domain.to_string(), ssh, https);
    cfg.validate()?;
    if dir.path(CONFIG_FILE).exists() {
        return Err(RelayError::Conflict(format!(
            "{} already holds a relay (relay.toml exists); refusing to overwrite it",
            dir.0.display()
        )));
    }
    std::fs::create_dir_all(&dir.0).map_err(|e| RelayError::file(&dir.0, e))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| RelayError::file(&dir.0, e))?;
    }

    let key = dwa_link::ssh::generate_ed25519();
    let pem = key
        .to_openssh(russh::keys::ssh_key::LineEnding::LF)
        .map_err(|e| RelayError::Key(e.to_string()))?;
    write_private(&dir.path(HOST_KEY_FILE), pem.as_bytes())?;

    let names = vec![domain.to_string(), format!("*.{domain}")];
    let ck =
        rcgen::generate_simple_self_signed(names).map_err(|e| RelayError::Tls(e.to_string()))?;
    write_private(
        &dir.path(TLS_KEY_FILE),
        ck.signing_key.serialize_pem().as_bytes(),
    )?;
    write_private(&dir.path(TLS_CERT_FILE), ck.cert.pem().as_bytes())?;
    let tls_fingerprint = dwa_link::tls::fingerprint(ck.cert.der());

    let store = dwa_store::Store::open_sqlite(&dir.path(crate::config::DB_FILE), true).await?;
    let password = random_password();
    let time = crate::services::clock::Time::system();
    let admin_id = store
        .add_user(&dwa_store::users::NewUser {
            username: "admin",
            password_hash: &hash_password(&password)?,
            role: "admin",
            customers: &[],
            created_at: &time.rfc3339(),
            last_active: None,
            password_change_required: false,
        })
        .await?;
    let admin_totp_uri = if cfg.accounts.require_totp.iter().any(|r| r == "admin") {
        Some(
            crate::services::accounts::users::provision_totp(&store, admin_id, "admin", domain)
                .await
                .map_err(|e| RelayError::Invalid(e.to_string()))?,
        )
    } else {
        None
    };
    // Nobody scrapes `init`: its counts are thrown away.
    let metrics = std::sync::Arc::new(crate::services::metrics::Metrics::new());
    Audit::new(store.clone(), time, metrics)
        .append(
            Event::AdminCommand(AdminCommand::Init {
                domain: domain.to_string(),
            }),
            &crate::util::local_actor(),
            None,
        )
        .await?;

    // Written last: its presence means the directory is complete.
    let text = toml::to_string(&cfg).map_err(|e| RelayError::Config(e.to_string()))?;
    write_private(&dir.path(CONFIG_FILE), text.as_bytes())?;

    Ok(InitReport {
        data_dir: dir.0.display().to_string(),
        domain: domain.to_string(),
        ssh_listen: ssh,
        https_listen: https,
        ssh_host_key_fingerprint: dwa_link::ssh::fingerprint(key.public_key()),
        tls_fingerprint,
        admin_user: "admin".into(),
        admin_password: password,
        admin_totp_uri,
    })
}

pub fn load_host_key(dir: &DataDir) -> Result<russh::keys::PrivateKey> {
    let p = dir.path(HOST_KEY_FILE);
    russh::keys::load_secret_key(&p, None)
        .map_err(|e| RelayError::Key(format!("{}: {e}", p.display())))
}

pub struct TlsMaterial {
    pub config: Arc<rustls::ServerConfig>,
    pub fingerprint: String,
}

pub fn load_tls(dir: &DataDir) -> Result<TlsMaterial> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let cp = dir.path(TLS_CERT_FILE);
    let kp = dir.path(TLS_KEY_FILE);
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cp)
        .and_then(|i| i.collect::<Result<_, _>>())
        .map_err(|e| RelayError::Tls(format!("{}: {e}", cp.display())))?;
    let first = certs
        .first()
        .ok_or_else(|| RelayError::Tls(format!("{}: no certificate", cp.display())))?;
    let fingerprint = dwa_link::tls::fingerprint(first);
    let key = PrivateKeyDer::from_pem_file(&kp)
        .map_err(|e| RelayError::Tls(format!("{}: {e}", kp.display())))?;
    // TLS 1.2+ only; rustls has no older versions at all.
    let mut config = rustls::ServerConfig::builder_with_provider(dwa_link::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| RelayError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| RelayError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsMaterial {
        config: Arc::new(config),
        fingerprint,
    })
}
