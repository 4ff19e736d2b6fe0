//! Security headers of the portal host's responses (API and pages). Not
//! for web-session hosts: those carry printers' own pages, which need
//! their scripts, frames and forms.

use axum::http::{header, HeaderMap, HeaderValue};

pub const CSP: &str = "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'";
pub const HSTS: &str = "max-age=31536000; includeSubDomains";

/// Sets the headers unless the handler chose its own.
pub fn apply(h: &mut HeaderMap) {
    let set = |h: &mut HeaderMap, name: header::HeaderName, v: &'static str| {
        if !h.contains_key(&name) {
            h.insert(name, HeaderValue::from_static(v));
        }
    };
    set(h, header::CONTENT_SECURITY_POLICY, CSP);
    set(h, header::STRICT_TRANSPORT_SECURITY, HSTS);
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::REFERRER_POLICY, "no-referrer");
    set(h, header::X_FRAME_OPTIONS, "DENY");
}

#[cfg(test)]
mod tests {
    #[test]
    fn headers_are_set_once() {
        let mut h = axum::http::HeaderMap::new();
        h.insert(
            axum::http::header::REFERRER_POLICY,
            axum::http::HeaderValue::from_static("same-origin"),
        );
        super::apply(&mut h);
        assert!(h["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'"));
        assert_eq!(h["referrer-policy"], "same-origin");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert!(h.contains_key("strict-transport-security"));
    }
}
