//! Certificate pinning for the agent's TLS connections to the relay.
//!
//! The agent learns the relay certificate's SHA-256 from the enrollment
//! token, so even its first contact is authenticated; afterwards it keeps it
//! in agent.toml. Names are not checked — the pin is stronger than a name —
//! but the handshake signature is, with the crypto provider's algorithms.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

/// SHA-256 of a DER certificate, lowercase hex.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

#[derive(Debug)]
struct PinMismatch(String);

impl std::fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PinMismatch {}

/// Accepts the certificate with the pinned SHA-256, or any certificate when
/// there is no pin: printers serve self-signed ones with no name that could
/// be checked, and trust there is "the same certificate as last time",
/// decided by the relay. The handshake signature is verified either way, so
/// the session is bound to the certificate whose fingerprint is recorded.
#[derive(Debug)]
pub struct PinnedCert {
    pin: Option<String>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(pin) = &self.pin else {
            return Ok(ServerCertVerified::assertion());
        };
        let got = fingerprint(end_entity);
        if got.eq_ignore_ascii_case(pin) {
            Ok(ServerCertVerified::assertion())
        } else {
            // InvalidCertificate makes rustls send a bad_certificate alert,
            // which the relay can recognise and audit.
            let msg = format!(
                "relay certificate fingerprint is sha256:{got}, expected the pinned sha256:{} \
                 (wrong relay, interception, or the relay's certificate changed: re-enroll)",
                pin
            );
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Other(rustls::OtherError(std::sync::Arc::new(
                    PinMismatch(msg),
                ))),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Client config for a printer's HTTPS port: any certificate (see
/// [`PinnedCert`]), TLS 1.2 and 1.3.
pub fn any_cert_client_config() -> Result<rustls::ClientConfig, crate::LinkError> {
    let provider = provider();
    let verifier = Arc::new(PinnedCert {
        pin: None,
        provider: provider.clone(),
    });
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| crate::LinkError::Tls(e.to_string()))
        .map(|b| {
            b.dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth()
        })
}

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A client config that accepts exactly the certificate with this SHA-256
/// (hex). TLS 1.2 and 1.3 only (rustls never speaks older versions).
pub fn pinned_client_config(pin_hex: &str) -> Result<rustls::ClientConfig, crate::LinkError> {
    let provider = provider();
    let verifier = Arc::new(PinnedCert {
        pin: Some(
            pin_hex
                .trim()
                .trim_start_matches("sha256:")
                .to_ascii_lowercase(),
        ),
        provider: provider.clone(),
    });
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| crate::LinkError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(cfg)
}
