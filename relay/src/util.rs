//! Small helpers: time stamps, random ids, private files.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rand::Rng;

use crate::services::error::{Class, Failure};

/// A value a user typed that does not parse; the text says how to write it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

impl Failure for BadInput {
    fn class(&self) -> Class {
        Class::Invalid
    }
}

/// A file that could not be written.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct FileError {
    pub path: std::path::PathBuf,
    pub source: std::io::Error,
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `prefix` + 16 random base32 characters (80 bits): agent ids and the like.
pub fn random_id(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut rng = rand::thread_rng();
    let s: String = (0..16)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{prefix}{s}")
}

/// A random password for printing once: 20 characters, ~119 bits.
pub fn random_password() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut rng = rand::thread_rng();
    (0..20)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Writes a secret file owner-only and atomically (see `dwa_link::fs`).
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), FileError> {
    dwa_link::fs::write_private(path, contents).map_err(|(path, source)| FileError {
        path: path.to_path_buf(),
        source,
    })
}

/// Parses "1h", "30m", "2d" into a Duration, with a one-line error.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, BadInput> {
    humantime::parse_duration(s).map_err(|e| {
        BadInput(format!(
            "invalid duration {s:?}: {e} (use e.g. 30m, 24h, 7d)"
        ))
    })
}

/// `bytes` random bytes from the OS CSPRNG, lowercase hex: session ids,
/// tickets, cookies and API tokens (16 bytes = 128 bits at least).
pub fn random_secret(bytes: usize) -> String {
    use rand::RngCore;
    let mut b = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

/// SHA-256 of a secret, lowercase hex: what the store keeps instead of it.
pub fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

/// The value of cookie `name` in a request's Cookie headers, when it is
/// there exactly once.
pub fn cookie_value<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    match cookie_values(headers, name) {
        Cookie::One(v) => Some(v),
        Cookie::Absent | Cookie::Twice => None,
    }
}

/// How often a request carries one cookie.
#[derive(Debug, PartialEq, Eq)]
pub enum Cookie<'a> {
    Absent,
    One(&'a str),
    /// More than once: another page planted one beside ours (a session
    /// host may write cookies for its parent domain), so neither is
    /// trusted.
    Twice,
}

/// Cookie `name` in a request's Cookie headers, counted.
pub fn cookie_values<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Cookie<'a> {
    let mut found = headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .filter(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim());
    match (found.next(), found.next()) {
        (None, _) => Cookie::Absent,
        (Some(v), None) => Cookie::One(v),
        (Some(_), Some(_)) => Cookie::Twice,
    }
}

/// "Who" for commands run on the relay host.
pub fn local_actor() -> String {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
    let user = std::env::var("USER").unwrap_or_default();
    match uid {
        Some(uid) if !user.is_empty() => format!("cli:{user}(uid {uid})"),
        Some(uid) => format!("cli:uid {uid}"),
        None => format!("cli:{user}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{header, HeaderMap, HeaderValue};

    fn with(cookies: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for c in cookies {
            h.append(header::COOKIE, HeaderValue::from_static(c));
        }
        h
    }

    #[test]
    fn a_cookie_counts_only_when_it_is_there_once() {
        let name = "__Host-dwa_session";
        assert_eq!(cookie_values(&with(&[]), name), Cookie::Absent);
        assert_eq!(
            cookie_values(&with(&["a=1; __Host-dwa_session=ours; b=2"]), name),
            Cookie::One("ours")
        );
        // The unprefixed name a printer's page can plant is another cookie.
        assert_eq!(
            cookie_values(
                &with(&["dwa_session=planted; __Host-dwa_session=ours"]),
                name
            ),
            Cookie::One("ours")
        );
        let twice = with(&["__Host-dwa_session=planted", "__Host-dwa_session=ours"]);
        assert_eq!(cookie_values(&twice, name), Cookie::Twice);
        assert_eq!(cookie_value(&twice, name), None);
        assert_eq!(
            cookie_values(&with(&["__Host-dwa_session =x ; y=1"]), name),
            Cookie::One("x")
        );
    }
}
