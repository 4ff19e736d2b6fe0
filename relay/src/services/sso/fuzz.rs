//! Property-based fuzzing of what an identity provider sends back: its
//! discovery document, keys, token response, ID token claims and userinfo.
//! Each answer ends in a log-in or a typed refusal — never a panic — and a
//! refused answer creates no user. The provider here is in-process
//! ([`ProviderHttp`]); its ID tokens are signed with HS256 under the client
//! secret, so that arbitrary claims get past the signature and reach the
//! group mapping and the user store.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Value};

use super::*;
use crate::config::oidc::fixtures::section;

const ISSUER: &str = "https://idp.example.com/realms/x";
const SECRET: &str = "s3cret-value";

/// The provider's answers, by endpoint.
#[derive(Debug, Clone)]
struct Answers {
    metadata: Vec<u8>,
    jwks: Vec<u8>,
    token_status: u16,
    token: Vec<u8>,
    userinfo: Vec<u8>,
}

struct FakeIdp(Answers);

impl ProviderHttp for FakeIdp {
    fn call(&self, req: openidconnect::HttpRequest) -> ProviderFuture<'_> {
        let a = &self.0;
        let (status, body) = match req.uri().path() {
            "/realms/x/.well-known/openid-configuration" => (200, a.metadata.clone()),
            "/realms/x/jwks" => (200, a.jwks.clone()),
            "/realms/x/token" => (a.token_status, a.token.clone()),
            "/realms/x/userinfo" => (200, a.userinfo.clone()),
            _ => (404, Vec::new()),
        };
        Box::pin(async move {
            // Built without naming the HTTP crate: services do not (the
            // layering test), and this stands in for the adapter.
            let mut r = openidconnect::HttpResponse::new(body);
            *r.status_mut() = status
                .try_into()
                .map_err(|_| ProviderHttpError(format!("status {status}")))?;
            let json = "application/json"
                .parse()
                .map_err(|_| ProviderHttpError("content type".into()))?;
            r.headers_mut().insert("content-type", json);
            Ok(r)
        })
    }
}

fn metadata() -> Vec<u8> {
    json!({
        "issuer": ISSUER,
        "authorization_endpoint": format!("{ISSUER}/auth"),
        "token_endpoint": format!("{ISSUER}/token"),
        "userinfo_endpoint": format!("{ISSUER}/userinfo"),
        "jwks_uri": format!("{ISSUER}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["HS256"],
    })
    .to_string()
    .into_bytes()
}

fn sign(claims: &Value) -> String {
    let enc = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let input = format!(
        "{}.{}",
        enc(&json!({"alg": "HS256", "typ": "JWT"})),
        enc(claims)
    );
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key size");
    mac.update(input.as_bytes());
    format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

fn token_response(id_token: &str) -> Vec<u8> {
    json!({"access_token": "at", "token_type": "Bearer", "id_token": id_token})
        .to_string()
        .into_bytes()
}

/// JSON of any shape, with the mapped group among the strings now and then.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|n| json!(n)),
        ".{0,40}".prop_map(Value::String),
        Just(json!("dwa-techs")),
    ];
    leaf.prop_recursive(3, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Bytes that are sometimes JSON, sometimes near-JSON, sometimes noise.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        json_value().prop_map(|v| v.to_string().into_bytes()),
        prop::collection::vec(any::<u8>(), 0..256),
        Just(b"{\"keys\": [{\"kty\": \"RSA\", \"n\": \"AQAB\", \"e\": \"\"}]}".to_vec()),
        Just(token_response("a.b.c")),
        Just(token_response("eyJhbGciOiJub25lIn0.e30.")),
        (json_value(), 0..64usize).prop_map(|(v, cut)| {
            let s = v.to_string();
            s.as_bytes()[..cut.min(s.len())].to_vec()
        }),
    ]
}

struct Rig {
    rt: tokio::runtime::Runtime,
    _tmp: tempfile::TempDir,
    svc: Arc<Services>,
    n: AtomicU64,
}

fn rig() -> Rig {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (tmp, mut svc) = rt.block_on(crate::testutil::svc());
    Arc::get_mut(&mut svc).expect("sole owner").oidc = Some(Arc::new(Oidc::new(&section())));
    Rig {
        rt,
        _tmp: tmp,
        svc,
        n: AtomicU64::new(0),
    }
}

impl Rig {
    /// One log-in from start to finish against `answers`; the result and
    /// how many directory users the store then holds.
    fn log_in(&self, answers: Answers, nonce: &str) -> (Result<LoggedIn, SsoError>, usize) {
        let i = self.n.fetch_add(1, Ordering::Relaxed);
        let svc = &self.svc;
        self.rt.block_on(async {
            let state = format!("state-{i}");
            let binding = keep_pending(
                svc,
                &state,
                "verifier-0123456789-0123456789-0123456789",
                nonce,
            )
            .await
            .expect("pending");
            let q = Callback {
                state: Some(state),
                code: Some("code".into()),
                error: None,
                error_description: None,
                iss: None,
            };
            // The metadata is cached per provider: start cold every time,
            // as if each case were another provider.
            if let Some(o) = &svc.oidc {
                o.forget_metadata().await;
            }
            let r = finish(svc, &FakeIdp(answers), &q, Some(&binding), "127.0.0.1").await;
            (r, self.users().await)
        })
    }

    async fn users(&self) -> usize {
        self.svc.store.users().await.expect("users").len()
    }
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

#[test]
fn arbitrary_provider_answers_are_refused_cleanly() {
    let rig = rig();
    let answers = (
        prop_oneof![Just(metadata()), body()],
        body(),
        prop_oneof![Just(200u16), Just(400u16), 100u16..600],
        body(),
        body(),
    )
        .prop_map(|(metadata, jwks, token_status, token, userinfo)| Answers {
            metadata,
            jwks,
            token_status,
            token,
            userinfo,
        });
    let before = rig.rt.block_on(rig.users());
    runner(96)
        .run(&answers, |a| {
            let (r, users) = rig.log_in(a, "nonce-x");
            // Nothing here carries a valid signature: every answer is refused.
            match r {
                Err(SsoError::Provider(_)) => {}
                other => {
                    return Err(TestCaseError::fail(format!(
                        "expected a provider error, got {:?}",
                        other.map(|l| l.user)
                    )))
                }
            }
            prop_assert_eq!(users, before, "a refused answer created a user");
            Ok(())
        })
        .expect("no answer is accepted or panics");
}

#[test]
fn signed_tokens_with_arbitrary_claims_map_or_refuse_cleanly() {
    let rig = rig();
    let groups = prop_oneof![
        json_value(),
        prop::collection::vec(".{0,10}", 0..5).prop_map(|mut v| {
            v.push("dwa-techs".into());
            json!(v)
        }),
    ];
    let claims = (
        ".{0,80}",
        prop::option::weighted(0.8, groups),
        prop::option::of(".{0,120}"),
        prop::option::of(".{0,120}"),
        json_value(),
        prop::bool::weighted(0.8),
    );
    let seen = std::cell::Cell::new((0u32, 0u32));
    let userinfo = body();
    runner(96)
        .run(
            &(claims, userinfo),
            |((sub, groups, name, email, extra, right_nonce), ui)| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let nonce = "nonce-signed";
                let mut c = json!({
                    "iss": ISSUER, "sub": sub, "aud": "dwa",
                    "iat": now, "exp": now + 300,
                    "nonce": if right_nonce { nonce } else { "another-nonce" },
                    "extra": extra,
                });
                if let Some(g) = &groups {
                    c["groups"] = g.clone();
                }
                if let Some(n) = &name {
                    c["preferred_username"] = json!(n);
                }
                if let Some(e) = &email {
                    c["email"] = json!(e);
                }
                let answers = Answers {
                    metadata: metadata(),
                    jwks: b"{\"keys\": []}".to_vec(),
                    token_status: 200,
                    token: token_response(&sign(&c)),
                    userinfo: ui,
                };
                let before = rig.rt.block_on(rig.users());
                let (r, users) = rig.log_in(answers, nonce);
                let mapped = groups
                    .as_ref()
                    .is_some_and(|g| groups_from(Some(g)).iter().any(|g| g == "dwa-techs"));
                let logged_in = r.is_ok();
                let (ok, no_role) = seen.get();
                seen.set((
                    ok + u32::from(logged_in),
                    no_role + u32::from(matches!(r, Err(SsoError::NoRole))),
                ));
                match r {
                    Ok(l) => {
                        prop_assert!(right_nonce, "logged in with another log-in's nonce");
                        prop_assert!(mapped || groups.is_none(), "unmapped groups logged in");
                        prop_assert_eq!(l.role, "technician");
                        prop_assert!(
                            l.user
                                .chars()
                                .all(|ch| ch.is_ascii_alphanumeric() || "._@-+~".contains(ch)),
                            "unsafe user name {:?}",
                            l.user
                        );
                        prop_assert!(l.user.len() <= 64 + 9);
                    }
                    Err(SsoError::NoRole) => prop_assert!(!mapped, "mapped groups refused"),
                    Err(SsoError::Provider(_)) => {}
                    Err(e) => {
                        return Err(TestCaseError::fail(format!("unexpected refusal: {e:?}")))
                    }
                }
                // A log-in adds at most its own user; a refusal none.
                prop_assert!(users <= before + usize::from(logged_in));
                Ok(())
            },
        )
        .expect("every signed answer maps or is refused cleanly");
    // The cases reached both ends of the mapping, not only the crate's checks.
    let (ok, no_role) = seen.get();
    assert!(
        ok > 0 && no_role > 0,
        "log-ins {ok}, no-role refusals {no_role}"
    );
}

/// The rig's well-formed answer logs in: the fuzzing above reaches the
/// mapping and the store, not only the crate's first check.
#[test]
fn a_signed_answer_with_the_mapped_group_logs_in() {
    let rig = rig();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let claims = json!({
        "iss": ISSUER, "sub": "u-1", "aud": "dwa", "iat": now, "exp": now + 300,
        "nonce": "n-1", "groups": ["dwa-techs"], "preferred_username": "tina <t>",
    });
    let answers = Answers {
        metadata: metadata(),
        jwks: b"{\"keys\": []}".to_vec(),
        token_status: 200,
        token: token_response(&sign(&claims)),
        userinfo: Vec::new(),
    };
    let (r, _) = rig.log_in(answers, "n-1");
    match r {
        Ok(l) => {
            assert_eq!(l.user, "tinat");
            assert_eq!(l.role, "technician");
        }
        Err(e) => panic!("refused: {e:?}"),
    }
}
