//! SNMPv3 (USM) credentials: protocol names as net-snmp spells them, the
//! consistency rules shared by agent.toml and the command line, and the
//! mapping onto `snmp2::v3`. Passwords are [`Secret`]s: never printed.

use std::fmt;
use std::str::FromStr;

use crate::config::Secret;

/// net-snmp refuses shorter pass phrases (RFC 3414 recommends 8 or more).
pub const MIN_PASSWORD_LEN: usize = 8;
/// SnmpAdminString (SIZE(1..32)) for usmUserName.
const MAX_USER_LEN: usize = 32;

/// USM security level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityLevel {
    NoAuthNoPriv,
    AuthNoPriv,
    AuthPriv,
}

/// Authentication (HMAC) protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthProtocol {
    Md5,
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

/// Privacy (encryption) protocol. AES-192/256 keys longer than the auth
/// digest are extended as net-snmp does: Blumenthal for `aes192`/`aes256`,
/// Reeder ("Cisco") for `aes192c`/`aes256c`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrivProtocol {
    Des,
    Aes128,
    Aes192,
    Aes256,
    Aes192C,
    Aes256C,
}

/// Lower case without `-`/`_`, so `SHA-256`, `sha_256` and `sha256` match.
fn normalize(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '-' && *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

impl FromStr for SecurityLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match normalize(s).as_str() {
            "noauthnopriv" => Ok(Self::NoAuthNoPriv),
            "authnopriv" => Ok(Self::AuthNoPriv),
            "authpriv" => Ok(Self::AuthPriv),
            _ => Err(format!(
                "unknown security level {s:?}: expected noAuthNoPriv, authNoPriv or authPriv"
            )),
        }
    }
}

impl FromStr for AuthProtocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match normalize(s).as_str() {
            "md5" => Ok(Self::Md5),
            "sha" | "sha1" => Ok(Self::Sha1),
            "sha224" => Ok(Self::Sha224),
            "sha256" => Ok(Self::Sha256),
            "sha384" => Ok(Self::Sha384),
            "sha512" => Ok(Self::Sha512),
            _ => Err(format!(
                "unknown auth protocol {s:?}: expected md5, sha, sha224, sha256, sha384 or sha512"
            )),
        }
    }
}

impl FromStr for PrivProtocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match normalize(s).as_str() {
            "des" => Ok(Self::Des),
            "aes" | "aes128" => Ok(Self::Aes128),
            "aes192" => Ok(Self::Aes192),
            "aes256" => Ok(Self::Aes256),
            "aes192c" => Ok(Self::Aes192C),
            "aes256c" => Ok(Self::Aes256C),
            _ => Err(format!(
                "unknown priv protocol {s:?}: expected des, aes, aes192, aes256, aes192c or aes256c"
            )),
        }
    }
}

impl fmt::Display for SecurityLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NoAuthNoPriv => "noAuthNoPriv",
            Self::AuthNoPriv => "authNoPriv",
            Self::AuthPriv => "authPriv",
        })
    }
}

impl AuthProtocol {
    fn to_snmp2(self) -> snmp2::v3::AuthProtocol {
        use snmp2::v3::AuthProtocol as A;
        match self {
            Self::Md5 => A::Md5,
            Self::Sha1 => A::Sha1,
            Self::Sha224 => A::Sha224,
            Self::Sha256 => A::Sha256,
            Self::Sha384 => A::Sha384,
            Self::Sha512 => A::Sha512,
        }
    }
}

impl PrivProtocol {
    fn to_snmp2(self) -> (snmp2::v3::Cipher, snmp2::v3::KeyExtension) {
        use snmp2::v3::{Cipher as C, KeyExtension as K};
        match self {
            Self::Des => (C::Des, K::Blumenthal),
            Self::Aes128 => (C::Aes128, K::Blumenthal),
            Self::Aes192 => (C::Aes192, K::Blumenthal),
            Self::Aes256 => (C::Aes256, K::Blumenthal),
            Self::Aes192C => (C::Aes192, K::Reeder),
            Self::Aes256C => (C::Aes256, K::Reeder),
        }
    }
}

/// A protocol with its pass phrase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key<P> {
    pub protocol: P,
    password: Secret,
}

/// The level and the keys it needs, so an inconsistent combination cannot
/// be represented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Level {
    NoAuthNoPriv,
    AuthNoPriv(Key<AuthProtocol>),
    AuthPriv(Key<AuthProtocol>, Key<PrivProtocol>),
}

/// One SNMPv3 user's credentials, checked (see [`V3Input::build`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V3Security {
    user: String,
    level: Level,
}

/// Which input a [`V3InputError`] is about; agent.toml and the command
/// line map it onto their own key or flag name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum V3Field {
    User,
    AuthProtocol,
    AuthPassword,
    PrivProtocol,
    PrivPassword,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V3InputError {
    pub field: V3Field,
    pub message: String,
}

/// Unchecked credentials as they come from agent.toml or the command line.
#[derive(Debug, Clone, Default)]
pub struct V3Input {
    pub user: String,
    /// `None`: inferred from the keys given (the command line's default).
    pub level: Option<SecurityLevel>,
    pub auth_protocol: Option<AuthProtocol>,
    pub auth_password: Option<Secret>,
    pub priv_protocol: Option<PrivProtocol>,
    pub priv_password: Option<Secret>,
}

impl V3Input {
    /// Check the combination: a level has exactly the keys it uses, and
    /// pass phrases are at least [`MIN_PASSWORD_LEN`] bytes.
    pub fn build(self) -> Result<V3Security, V3InputError> {
        let err = |field, message: String| Err(V3InputError { field, message });
        if self.user.is_empty() || self.user.len() > MAX_USER_LEN {
            return err(V3Field::User, format!("must be 1 to {MAX_USER_LEN} bytes"));
        }
        let has_priv = self.priv_protocol.is_some() || self.priv_password.is_some();
        let has_auth = self.auth_protocol.is_some() || self.auth_password.is_some();
        let level = self.level.unwrap_or(if has_priv {
            SecurityLevel::AuthPriv
        } else if has_auth {
            SecurityLevel::AuthNoPriv
        } else {
            SecurityLevel::NoAuthNoPriv
        });
        let unused = |field, what: &str| {
            err(
                field,
                format!("{what} is not used with level {level}; remove it or raise the level"),
            )
        };
        if level != SecurityLevel::AuthPriv {
            if self.priv_protocol.is_some() {
                return unused(V3Field::PrivProtocol, "a priv protocol");
            }
            if self.priv_password.is_some() {
                return unused(V3Field::PrivPassword, "a priv password");
            }
        }
        if level == SecurityLevel::NoAuthNoPriv {
            if self.auth_protocol.is_some() {
                return unused(V3Field::AuthProtocol, "an auth protocol");
            }
            if self.auth_password.is_some() {
                return unused(V3Field::AuthPassword, "an auth password");
            }
            return Ok(V3Security {
                user: self.user,
                level: Level::NoAuthNoPriv,
            });
        }
        let auth = key(
            self.auth_protocol,
            self.auth_password,
            level,
            (V3Field::AuthProtocol, V3Field::AuthPassword),
        )?;
        if level == SecurityLevel::AuthNoPriv {
            return Ok(V3Security {
                user: self.user,
                level: Level::AuthNoPriv(auth),
            });
        }
        let privacy = key(
            self.priv_protocol,
            self.priv_password,
            level,
            (V3Field::PrivProtocol, V3Field::PrivPassword),
        )?;
        Ok(V3Security {
            user: self.user,
            level: Level::AuthPriv(auth, privacy),
        })
    }
}

fn key<P>(
    protocol: Option<P>,
    password: Option<Secret>,
    level: SecurityLevel,
    (pfield, wfield): (V3Field, V3Field),
) -> Result<Key<P>, V3InputError> {
    let missing = |field| V3InputError {
        field,
        message: format!("required for level {level}"),
    };
    let protocol = protocol.ok_or_else(|| missing(pfield))?;
    let password = password.ok_or_else(|| missing(wfield))?;
    if password.0.len() < MIN_PASSWORD_LEN {
        return Err(V3InputError {
            field: wfield,
            message: format!("must be at least {MIN_PASSWORD_LEN} characters (net-snmp's minimum)"),
        });
    }
    Ok(Key { protocol, password })
}

impl V3Security {
    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn level(&self) -> SecurityLevel {
        match self.level {
            Level::NoAuthNoPriv => SecurityLevel::NoAuthNoPriv,
            Level::AuthNoPriv(_) => SecurityLevel::AuthNoPriv,
            Level::AuthPriv(..) => SecurityLevel::AuthPriv,
        }
    }

    /// The same user at a lower level (keeps the auth key): used to find
    /// out which part of a refused request was wrong.
    pub(crate) fn downgraded(&self, to: SecurityLevel) -> V3Security {
        let level = match (&self.level, to) {
            (Level::AuthPriv(a, _) | Level::AuthNoPriv(a), SecurityLevel::AuthNoPriv) => {
                Level::AuthNoPriv(a.clone())
            }
            (_, SecurityLevel::NoAuthNoPriv) => Level::NoAuthNoPriv,
            (l, _) => l.clone(),
        };
        V3Security {
            user: self.user.clone(),
            level,
        }
    }

    /// The `snmp2` security context. Pass phrases are never empty here
    /// (checked by [`V3Input::build`]); `snmp2` would panic on one.
    pub(crate) fn to_snmp2(&self) -> snmp2::v3::Security {
        use snmp2::v3::{Auth, Security};
        let user = self.user.as_bytes();
        match &self.level {
            Level::NoAuthNoPriv => Security::new(user, b"").with_auth(Auth::NoAuthNoPriv),
            Level::AuthNoPriv(a) => Security::new(user, a.password.0.as_bytes())
                .with_auth_protocol(a.protocol.to_snmp2())
                .with_auth(Auth::AuthNoPriv),
            Level::AuthPriv(a, p) => {
                let (cipher, extension) = p.protocol.to_snmp2();
                Security::new(user, a.password.0.as_bytes())
                    .with_auth_protocol(a.protocol.to_snmp2())
                    .with_auth(Auth::AuthPriv {
                        cipher,
                        privacy_password: p.password.0.as_bytes().to_vec(),
                    })
                    .with_key_extension_method(extension)
            }
        }
    }
}

/// Why an SNMPv3 agent refused us, as far as the answers tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum V3Failure {
    /// The agent does not know the user name (usmStatsUnknownUserNames).
    UnknownUser,
    /// The user exists; the digest was wrong (usmStatsWrongDigests).
    WrongAuth,
    /// Refused as unauthenticated; the agent did not tell which part.
    AuthRefused,
    /// Authentication works, encrypted requests do not (wrong priv key or
    /// protocol: agents drop such requests or report decryption errors).
    Privacy,
    /// The agent answered, with authorizationError (VACM).
    AccessDenied,
    /// Engine boots/time outside the 150 s window even after rediscovery.
    NotInTimeWindow,
    /// Engine discovery answered, requests for this user did not.
    NoAnswer,
    /// Anything else `snmp2` reported.
    Other(String),
}

impl V3Failure {
    /// One line, naming the user and the likely cause.
    pub fn describe(&self, sec: &V3Security) -> String {
        let user = sec.user();
        let level = sec.level();
        match self {
            Self::UnknownUser => format!("SNMPv3 user {user:?} is unknown to the agent"),
            Self::WrongAuth => format!(
                "SNMPv3 authentication failed for user {user:?}: wrong auth password or protocol"
            ),
            Self::AuthRefused => format!(
                "SNMPv3 authentication failed for user {user:?}: unknown user, or wrong auth password or protocol"
            ),
            Self::Privacy => format!(
                "SNMPv3 privacy failed for user {user:?}: wrong priv password or protocol, or no privacy key for this user (authenticated requests work, encrypted ones fail)"
            ),
            Self::AccessDenied => format!(
                "SNMPv3 access denied for user {user:?} at level {level} (authorizationError): check the agent's access rules"
            ),
            Self::NotInTimeWindow => format!(
                "SNMPv3 request for user {user:?} not in the agent's time window (engine boots/time mismatch)"
            ),
            Self::NoAnswer => format!(
                "SNMPv3 engine discovery answered, but requests for user {user:?} at level {level} got no answer"
            ),
            Self::Other(e) => format!("SNMPv3 error for user {user:?}: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(level: Option<SecurityLevel>) -> V3Input {
        V3Input {
            user: "printer-ro".into(),
            level,
            auth_protocol: Some(AuthProtocol::Sha256),
            auth_password: Some(Secret("auth-s3cret".into())),
            priv_protocol: Some(PrivProtocol::Aes128),
            priv_password: Some(Secret("priv-s3cret".into())),
        }
    }

    #[test]
    fn protocol_names_as_net_snmp_spells_them() {
        assert_eq!("SHA".parse(), Ok(AuthProtocol::Sha1));
        assert_eq!("sha1".parse(), Ok(AuthProtocol::Sha1));
        assert_eq!("SHA-256".parse(), Ok(AuthProtocol::Sha256));
        assert_eq!("sha512".parse(), Ok(AuthProtocol::Sha512));
        assert_eq!("MD5".parse(), Ok(AuthProtocol::Md5));
        assert_eq!("AES".parse(), Ok(PrivProtocol::Aes128));
        assert_eq!("AES-256".parse(), Ok(PrivProtocol::Aes256));
        assert_eq!("AES-256-C".parse(), Ok(PrivProtocol::Aes256C));
        assert_eq!("des".parse(), Ok(PrivProtocol::Des));
        assert_eq!("authPriv".parse(), Ok(SecurityLevel::AuthPriv));
        assert_eq!("AUTHNOPRIV".parse(), Ok(SecurityLevel::AuthNoPriv));
        let e = "sha3".parse::<AuthProtocol>().unwrap_err();
        assert!(e.contains("sha3") && e.contains("sha256"), "{e}");
        assert!("3des".parse::<PrivProtocol>().is_err());
        assert!("authpriv2".parse::<SecurityLevel>().is_err());
    }

    #[test]
    fn level_is_inferred_or_checked() {
        let s = input(None).build().unwrap();
        assert_eq!(s.level(), SecurityLevel::AuthPriv);
        let mut i = input(None);
        i.priv_protocol = None;
        i.priv_password = None;
        assert_eq!(i.build().unwrap().level(), SecurityLevel::AuthNoPriv);
        let i = V3Input {
            user: "u".into(),
            ..Default::default()
        };
        assert_eq!(i.build().unwrap().level(), SecurityLevel::NoAuthNoPriv);

        // Keys a level does not use are refused, naming the key.
        let e = input(Some(SecurityLevel::AuthNoPriv)).build().unwrap_err();
        assert_eq!(e.field, V3Field::PrivProtocol);
        let e = input(Some(SecurityLevel::NoAuthNoPriv))
            .build()
            .unwrap_err();
        assert_eq!(e.field, V3Field::PrivProtocol);
        let mut i = input(Some(SecurityLevel::AuthPriv));
        i.priv_password = None;
        let e = i.build().unwrap_err();
        assert_eq!(e.field, V3Field::PrivPassword);
        assert!(e.message.contains("required"), "{e:?}");
        let mut i = input(Some(SecurityLevel::AuthNoPriv));
        i.priv_protocol = None;
        i.priv_password = None;
        i.auth_protocol = None;
        assert_eq!(i.build().unwrap_err().field, V3Field::AuthProtocol);
    }

    #[test]
    fn short_passwords_and_bad_users_are_refused() {
        let mut i = input(None);
        i.auth_password = Some(Secret("short".into()));
        let e = i.build().unwrap_err();
        assert_eq!(e.field, V3Field::AuthPassword);
        assert!(e.message.contains("at least 8"), "{e:?}");
        let mut i = input(None);
        i.priv_password = Some(Secret(String::new()));
        assert_eq!(i.build().unwrap_err().field, V3Field::PrivPassword);
        let mut i = input(None);
        i.user = String::new();
        assert_eq!(i.build().unwrap_err().field, V3Field::User);
        let mut i = input(None);
        i.user = "x".repeat(33);
        assert_eq!(i.build().unwrap_err().field, V3Field::User);
    }

    #[test]
    fn debug_output_hides_passwords() {
        let s = input(None).build().unwrap();
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("s3cret"), "{dbg}");
        assert!(
            dbg.contains("printer-ro") && dbg.contains("redacted"),
            "{dbg}"
        );
    }

    #[test]
    fn downgrade_keeps_the_auth_key() {
        let s = input(None).build().unwrap();
        let d = s.downgraded(SecurityLevel::AuthNoPriv);
        match (&s.level, &d.level) {
            (Level::AuthPriv(a, _), Level::AuthNoPriv(b)) => assert_eq!(a, b),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            s.downgraded(SecurityLevel::NoAuthNoPriv).level,
            Level::NoAuthNoPriv
        );
    }

    #[test]
    fn messages_name_user_and_cause() {
        let s = input(None).build().unwrap();
        let m = V3Failure::WrongAuth.describe(&s);
        assert!(
            m.contains("\"printer-ro\"") && m.contains("wrong auth password"),
            "{m}"
        );
        assert!(V3Failure::Privacy
            .describe(&s)
            .contains("wrong priv password"));
        for f in [
            V3Failure::UnknownUser,
            V3Failure::WrongAuth,
            V3Failure::AuthRefused,
            V3Failure::Privacy,
            V3Failure::AccessDenied,
            V3Failure::NotInTimeWindow,
            V3Failure::NoAnswer,
            V3Failure::Other("x".into()),
        ] {
            let m = f.describe(&s);
            assert!(!m.contains('\n') && !m.contains("s3cret"), "{m}");
        }
    }
}
