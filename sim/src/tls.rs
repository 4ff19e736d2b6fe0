//! Each printer's self-signed certificate, made fresh at every start.

use std::net::IpAddr;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};
use tokio_rustls::TlsAcceptor;

use crate::SimError;

/// A TLS acceptor for `addr`, and the SHA-256 (lowercase hex) of its DER
/// certificate. A new key every call, like a printer reset to factory
/// defaults: a restarted fleet presents new fingerprints.
pub(crate) fn acceptor_for(addr: IpAddr) -> Result<(TlsAcceptor, String), SimError> {
    // rcgen turns a name that parses as an IP into an IP-address SAN.
    let ck = rcgen::generate_simple_self_signed(vec![addr.to_string()])
        .map_err(|e| SimError::Tls(format!("certificate for {addr}: {e}")))?;
    let der = ck.cert.der().clone();
    let fingerprint = hex::encode(Sha256::digest(der.as_ref()));
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SimError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(vec![CertificateDer::from(der.to_vec())], key)
        .map_err(|e| SimError::Tls(e.to_string()))?;
    // Printers' embedded servers speak HTTP/1.1 only.
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((TlsAcceptor::from(Arc::new(cfg)), fingerprint))
}
