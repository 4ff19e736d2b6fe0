//! TOTP (RFC 6238: SHA-1, 6 digits, 30 s steps, one step of skew either
//! way) through `totp-rs`, its enrollment QR code through `qrcode`, and the
//! one-time recovery codes.

use totp_rs::{Algorithm, Secret, TOTP};

use crate::services::error::{Class, Failure};
use crate::util::{random_secret, sha256_hex};

/// A secret or code the TOTP library cannot use.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TotpError(String);

impl Failure for TotpError {
    fn class(&self) -> Class {
        Class::Invalid
    }
}

type Result<T> = std::result::Result<T, TotpError>;

/// Whether `user_id` has two-factor enrolled.
pub async fn enrolled(
    svc: &crate::services::Services,
    user_id: i64,
) -> std::result::Result<bool, dwa_store::StoreError> {
    svc.store.has_totp(user_id).await
}

pub const STEP: u64 = 30;
pub const DIGITS: usize = 6;
pub const RECOVERY_CODES: usize = 10;
const ISSUER: &str = "DWA";

/// A new random secret (160 bits), base32 as stored and shown.
pub fn new_secret() -> String {
    Secret::generate_secret().to_encoded().to_string()
}

fn totp(secret_b32: &str, account: &str) -> Result<TOTP> {
    let bytes = Secret::Encoded(secret_b32.to_string())
        .to_bytes()
        .map_err(|e| TotpError(format!("stored TOTP secret: {e:?}")))?;
    // Authenticator apps split issuer and account at ':'.
    let account = account.replace(':', "_");
    TOTP::new(
        Algorithm::SHA1,
        DIGITS,
        1,
        STEP,
        bytes,
        Some(ISSUER.into()),
        account,
    )
    .map_err(|e| TotpError(format!("TOTP parameters: {e}")))
}

/// `otpauth://totp/DWA:<user>@<domain>?secret=...&issuer=DWA`.
pub fn otpauth_uri(secret_b32: &str, username: &str, domain: &str) -> Result<String> {
    Ok(totp(secret_b32, &format!("{username}@{domain}"))?.get_url())
}

/// The URI as a QR code, SVG text.
pub fn qr_svg(uri: &str) -> Result<String> {
    let code =
        qrcode::QrCode::new(uri.as_bytes()).map_err(|e| TotpError(format!("QR code: {e}")))?;
    Ok(code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .build())
}

/// The time step `code` belongs to, if it is valid at `now` (unix seconds)
/// within one step of skew and newer than `last_step` (a code is good once).
/// `Err(step)`: right code, but its step was already used.
pub fn check(
    secret_b32: &str,
    code: &str,
    last_step: Option<i64>,
    now: u64,
) -> Result<Option<std::result::Result<i64, i64>>> {
    let code = code.trim();
    if code.len() != DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    let t = totp(secret_b32, "check")?;
    let now_step = now / STEP;
    for step in [now_step.saturating_sub(1), now_step, now_step + 1] {
        let expected = t.generate(step * STEP);
        if subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), code.as_bytes()).into() {
            let step = step as i64;
            return Ok(Some(match last_step {
                Some(last) if step <= last => Err(step),
                _ => Ok(step),
            }));
        }
    }
    Ok(None)
}

/// The code for `now` (the CLI and tests).
pub fn code_at(secret_b32: &str, now: u64) -> Result<String> {
    Ok(totp(secret_b32, "code")?.generate(now))
}

/// Ten fresh recovery codes (`xxxx-xxxx-xxxx-xxxx`, 64 bits each) and
/// their hashes.
pub fn recovery_codes() -> Vec<(String, String)> {
    (0..RECOVERY_CODES)
        .map(|_| {
            let raw = random_secret(8);
            let shown = format!(
                "{}-{}-{}-{}",
                &raw[0..4],
                &raw[4..8],
                &raw[8..12],
                &raw[12..16]
            );
            (shown, hash_recovery(&raw))
        })
        .collect()
}

/// Hash of a recovery code as typed (dashes, spaces and case ignored).
pub fn hash_recovery(code: &str) -> String {
    let norm: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    sha256_hex(&format!("dwa-recovery:{norm}"))
}

/// Whether `s` looks like a recovery code rather than a TOTP code.
pub fn is_recovery_form(s: &str) -> bool {
    s.chars().filter(|c| c.is_ascii_hexdigit()).count() == 16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_check_once_within_skew() {
        let s = new_secret();
        let now = 1_800_000_000u64;
        let c = code_at(&s, now).unwrap();
        let step = (now / STEP) as i64;
        assert_eq!(check(&s, &c, None, now).unwrap(), Some(Ok(step)));
        assert_eq!(check(&s, &c, Some(step), now).unwrap(), Some(Err(step)));
        // One step late is fine, two are not.
        assert!(check(&s, &c, None, now + STEP).unwrap().is_some());
        assert_eq!(check(&s, &c, None, now + 2 * STEP + 1).unwrap(), None);
        assert_eq!(check(&s, "12345", None, now).unwrap(), None);
        let uri = otpauth_uri(&s, "ann", "dwa.localhost").unwrap();
        assert!(
            uri.starts_with("otpauth://totp/DWA:ann%40dwa.localhost?"),
            "{uri}"
        );
        assert!(qr_svg(&uri).unwrap().contains("<svg"));
        let codes = recovery_codes();
        assert_eq!(codes.len(), 10);
        assert_eq!(hash_recovery(&codes[0].0.to_uppercase()), codes[0].1);
        assert!(is_recovery_form(&codes[0].0));
    }
}
