//! Who is connecting and what they may see: JWT verification and minting.
//!
//! One key source is configured per gateway: an HS256 secret, or a PEM or
//! JWKS file of RS256/ES256 public keys. The accepted algorithms follow from
//! the key, never from the token, which is what rules out `alg: none` and
//! algorithm confusion (an HS256 token "signed" with an RSA public key).
//!
//! A token is refused unless every claim is something we can stand behind:
//! `sub` and `account` must each be one NATS subject token (the account
//! becomes part of the subjects the client's data is read from, so `*` or
//! `a.b` would widen it to other accounts); `channels: null` is not "all";
//! a `crit` header extension we do not implement is refused, as RFC 7515
//! asks; a lifetime past `MAX_TOKEN_LIFETIME_SECS` is refused. A JWKS file
//! is re-read when it changes or on SIGHUP ([`Verifier::reload`]); if the
//! new file is unusable the last good keys stay.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use protocol::{Channel, ErrorCode};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no token")]
    Missing,
    #[error("token expired")]
    Expired,
    #[error("invalid token: {0}")]
    Invalid(String),
}

impl AuthError {
    /// The code a client sees (`connect_error` message, `error.code`).
    pub fn code(&self) -> ErrorCode {
        match self {
            AuthError::Expired => ErrorCode::TokenExpired,
            AuthError::Missing | AuthError::Invalid(_) => ErrorCode::Unauthorized,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("no JWT key configured: set JWT_SECRET or JWT_PUBLIC_KEY_FILE")]
    NotConfigured,
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{path} holds no usable RS256/ES256 key: {reason}")]
    Unusable { path: String, reason: String },
    #[error("cannot sign: {0}")]
    Sign(String),
}

/// The claims we read. Unknown claims are ignored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user.
    pub sub: String,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issued at, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// The MT5 account it may see (default: the gateway's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// Channel allow-list: absent means all six; `null` is refused
    /// (`Some(None)`), so that a bug that nulls the list grants nothing.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub channels: Option<Option<Vec<String>>>,
    /// Token id, for revocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// Issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Audience.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

/// A claim that may be absent, `null`, or a value: `Some(None)` is `null`.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// What a verified token entitles a connection to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The token's `sub`.
    pub user: String,
    /// The MT5 account whose data it sees (a valid subject token).
    pub account: protocol::Account,
    /// Channels the token allows; all six when the token does not say.
    pub allowed: Vec<Channel>,
    /// Seconds since the epoch when the token stops being valid.
    pub expires_at: i64,
    /// The token's `jti`, if any (what `gateway revoke --jti` names).
    pub jti: Option<String>,
    /// The token's `iat`, if any (what `gateway revoke --sub --before` compares).
    pub issued_at: Option<i64>,
}

impl Identity {
    pub fn may_see(&self, channel: Channel) -> bool {
        self.allowed.contains(&channel)
    }
}

enum Keys {
    /// An HS256 shared secret.
    Secret(DecodingKey),
    /// From a PEM file: one key, used whatever the token's `kid`.
    Single(DecodingKey, Algorithm),
    /// From a JWKS file: picked by the token's `kid`.
    ByKid(HashMap<String, (DecodingKey, Algorithm)>),
}

/// Checks tokens against the configured key(s) and claims.
pub struct Verifier {
    /// The key source, which fixes the accepted algorithms (swapped whole
    /// when the key file is reloaded).
    keys: RwLock<Arc<Keys>>,
    /// The key file, for reloads (none for a secret).
    source: Option<PathBuf>,
    /// Clock skew allowed on `exp` and `nbf`, seconds.
    leeway: u64,
    /// Longest token lifetime accepted, seconds.
    max_lifetime: i64,
    /// Required `iss`, when set.
    issuer: Option<String>,
    /// Required `aud`, when set.
    audience: Option<String>,
    /// The account of tokens without an `account` claim.
    default_account: String,
}

impl Verifier {
    pub fn from_secret(secret: &[u8], default_account: &str) -> Self {
        Verifier::with_keys(
            Keys::Secret(DecodingKey::from_secret(secret)),
            None,
            default_account,
        )
    }

    fn with_keys(keys: Keys, source: Option<PathBuf>, default_account: &str) -> Self {
        Verifier {
            keys: RwLock::new(Arc::new(keys)),
            source,
            leeway: 5,
            max_lifetime: 86_400,
            issuer: None,
            audience: None,
            default_account: default_account.to_owned(),
        }
    }

    /// Loads a PEM public key (RSA or EC P-256) or a JWKS document.
    pub fn from_public_key_file(path: &Path, default_account: &str) -> Result<Self, KeyError> {
        let keys = read_keys(path)?;
        Ok(Verifier::with_keys(
            keys,
            Some(path.to_owned()),
            default_account,
        ))
    }

    /// Re-reads the key file (a rotated JWKS). On an unusable file the
    /// current keys stay and the error is returned. A no-op for a secret.
    pub fn reload(&self) -> Result<(), KeyError> {
        let Some(path) = &self.source else {
            return Ok(());
        };
        let keys = read_keys(path)?;
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
        Ok(())
    }

    /// The key file this verifier reads, if any.
    pub fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }

    pub fn with_leeway(mut self, secs: u64) -> Self {
        self.leeway = secs;
        self
    }

    pub fn with_max_lifetime(mut self, secs: u64) -> Self {
        self.max_lifetime = i64::try_from(secs).unwrap_or(i64::MAX);
        self
    }
}

/// Reads a PEM public key (RSA or EC P-256) or a JWKS document.
fn read_keys(path: &Path) -> Result<Keys, KeyError> {
    {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| KeyError::Read {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        let unusable = |reason: String| KeyError::Unusable {
            path: shown.clone(),
            reason,
        };
        let keys = if bytes.trim_ascii_start().starts_with(b"{") {
            let set: JwkSet =
                serde_json::from_slice(&bytes).map_err(|e| unusable(e.to_string()))?;
            let mut by_kid = HashMap::new();
            for jwk in &set.keys {
                let alg = match &jwk.algorithm {
                    jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => Algorithm::RS256,
                    jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
                    _ => continue,
                };
                let key = DecodingKey::from_jwk(jwk).map_err(|e| unusable(e.to_string()))?;
                let kid = jwk.common.key_id.clone().unwrap_or_default();
                by_kid.insert(kid, (key, alg));
            }
            if by_kid.is_empty() {
                return Err(unusable("no RSA or EC key in the JWKS".into()));
            }
            Keys::ByKid(by_kid)
        } else if let Ok(key) = DecodingKey::from_rsa_pem(&bytes) {
            Keys::Single(key, Algorithm::RS256)
        } else {
            let key = DecodingKey::from_ec_pem(&bytes).map_err(|e| unusable(e.to_string()))?;
            Keys::Single(key, Algorithm::ES256)
        };
        Ok(keys)
    }
}

impl Verifier {
    pub fn with_issuer(mut self, issuer: Option<String>) -> Self {
        self.issuer = issuer;
        self
    }

    pub fn with_audience(mut self, audience: Option<String>) -> Self {
        self.audience = audience;
        self
    }

    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| AuthError::Invalid(e.to_string()))?;
        if header.crit.is_some() {
            return Err(AuthError::Invalid(
                "a `crit` header extension this gateway does not implement".into(),
            ));
        }
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner()).clone();
        let (key, alg) = match keys.as_ref() {
            Keys::Secret(key) => (key, Algorithm::HS256),
            Keys::Single(key, alg) => (key, *alg),
            Keys::ByKid(keys) => {
                let kid = header.kid.clone().unwrap_or_default();
                // `kid` is the client's text: quoted escaped, never raw.
                let (key, alg) = keys
                    .get(&kid)
                    .ok_or_else(|| AuthError::Invalid(format!("unknown kid {kid:?}")))?;
                (key, *alg)
            }
        };
        let mut validation = Validation::new(alg);
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&[iss]);
            validation.required_spec_claims.insert("iss".into());
        }
        match &self.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                validation.required_spec_claims.insert("aud".into());
            }
            None => validation.validate_aud = false,
        }
        let data = jsonwebtoken::decode::<Claims>(token, key, &validation).map_err(|e| match e
            .kind()
        {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
            _ => AuthError::Invalid(e.to_string()),
        })?;
        let now = chrono::Utc::now().timestamp();
        let from = data.claims.iat.unwrap_or(now).min(now);
        if data.claims.exp.saturating_sub(from) > self.max_lifetime {
            return Err(AuthError::Invalid(format!(
                "the token lives longer than MAX_TOKEN_LIFETIME_SECS ({} s)",
                self.max_lifetime
            )));
        }
        self.identity(data.claims)
    }

    fn identity(&self, claims: Claims) -> Result<Identity, AuthError> {
        let user = protocol::Account::new(claims.sub)
            .map_err(|e| AuthError::Invalid(format!("`sub` {e}")))?
            .into_string();
        let account = claims
            .account
            .unwrap_or_else(|| self.default_account.clone());
        let account = protocol::Account::new(account)
            .map_err(|e| AuthError::Invalid(format!("`account` {e}")))?;
        let allowed = match &claims.channels {
            None => Channel::ALL.to_vec(),
            Some(None) => {
                return Err(AuthError::Invalid(
                    "`channels` is null (leave it out to allow all six)".into(),
                ))
            }
            // Names we do not know are ignored: a token may be shared with
            // newer services that have more channels.
            Some(Some(list)) => Channel::ALL
                .into_iter()
                .filter(|c| list.iter().any(|n| n == c.name()))
                .collect(),
        };
        Ok(Identity {
            user,
            account,
            allowed,
            expires_at: claims.exp,
            jti: claims.jti,
            issued_at: claims.iat,
        })
    }
}

/// Signs tokens: for `gateway token`, standalone mode and tests.
pub struct Minter {
    /// The signing key.
    key: EncodingKey,
    /// Its algorithm.
    alg: Algorithm,
    /// The `kid` header to set.
    kid: Option<String>,
}

impl Minter {
    pub fn from_secret(secret: &[u8]) -> Self {
        Minter {
            key: EncodingKey::from_secret(secret),
            alg: Algorithm::HS256,
            kid: None,
        }
    }

    pub fn from_private_key_file(path: &Path, kid: Option<String>) -> Result<Self, KeyError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| KeyError::Read {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        let (key, alg) = if let Ok(key) = EncodingKey::from_rsa_pem(&bytes) {
            (key, Algorithm::RS256)
        } else {
            let key = EncodingKey::from_ec_pem(&bytes).map_err(|e| KeyError::Unusable {
                path: shown,
                reason: e.to_string(),
            })?;
            (key, Algorithm::ES256)
        };
        Ok(Minter { key, alg, kid })
    }

    pub fn mint(&self, claims: &Claims) -> Result<String, KeyError> {
        let mut header = Header::new(self.alg);
        header.kid = self.kid.clone();
        jsonwebtoken::encode(&header, claims, &self.key).map_err(|e| KeyError::Sign(e.to_string()))
    }

    /// A token for `sub` valid for `ttl_secs` from now (negative: expired).
    pub fn mint_for(
        &self,
        sub: &str,
        account: Option<&str>,
        channels: Option<Vec<String>>,
        ttl_secs: i64,
    ) -> Result<String, KeyError> {
        let now = chrono::Utc::now().timestamp();
        self.mint(&Claims {
            sub: sub.to_owned(),
            exp: now + ttl_secs,
            iat: Some(now),
            account: account.map(str::to_owned),
            channels: channels.map(Some),
            // Every minted token can be revoked on its own.
            jti: Some(uuid::Uuid::new_v4().simple().to_string()),
            iss: None,
            aud: None,
        })
    }
}

/// A random secret for standalone mode, printable and long enough for HS256.
pub fn random_secret() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), 48)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn pair() -> (Verifier, Minter) {
        (
            Verifier::from_secret(b"s3cret-0123456789abcdef0123456789", "demo"),
            Minter::from_secret(b"s3cret-0123456789abcdef0123456789"),
        )
    }

    #[test]
    fn accepts_a_good_token_with_defaults() {
        let (v, m) = pair();
        let id = v
            .verify(&m.mint_for("alice", None, None, 60).unwrap())
            .unwrap();
        assert_eq!(id.user, "alice");
        assert_eq!(id.account, "demo");
        assert_eq!(id.allowed, Channel::ALL.to_vec());
    }

    #[test]
    fn channels_claim_is_an_allow_list() {
        let (v, m) = pair();
        let t = m
            .mint_for(
                "bob",
                Some("acc2"),
                Some(vec!["quotes".into(), "bogus".into()]),
                60,
            )
            .unwrap();
        let id = v.verify(&t).unwrap();
        assert_eq!(id.account, "acc2");
        assert_eq!(id.allowed, vec![Channel::Quotes]);
        assert!(!id.may_see(Channel::Logs));
    }

    #[test]
    fn refuses_expired_wrong_key_garbage_and_missing() {
        let (v, m) = pair();
        let expired = m.mint_for("a", None, None, -60).unwrap();
        assert!(matches!(v.verify(&expired), Err(AuthError::Expired)));
        assert_eq!(
            v.verify(&expired).unwrap_err().code(),
            ErrorCode::TokenExpired
        );
        let other = Minter::from_secret(b"other")
            .mint_for("a", None, None, 60)
            .unwrap();
        assert!(matches!(v.verify(&other), Err(AuthError::Invalid(_))));
        assert!(matches!(v.verify("garbage"), Err(AuthError::Invalid(_))));
        assert!(matches!(v.verify(""), Err(AuthError::Missing)));
    }

    fn signed(claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"s3cret-0123456789abcdef0123456789"),
        )
        .unwrap()
    }

    #[test]
    fn accounts_and_subs_must_be_one_subject_token() {
        let (v, _) = pair();
        let exp = chrono::Utc::now().timestamp() + 60;
        for account in ["*", ">", "a.b", "mt5.>", "", " demo", "demo\n"] {
            let t = signed(serde_json::json!({"sub": "alice", "account": account, "exp": exp}));
            assert_eq!(
                v.verify(&t).unwrap_err().code(),
                ErrorCode::Unauthorized,
                "{account:?}"
            );
        }
        for sub in ["*", "a.b", "", "alice\nINFO forged", "\u{1b}[2J"] {
            let t = signed(serde_json::json!({"sub": sub, "exp": exp}));
            let err = v.verify(&t).unwrap_err();
            assert_eq!(err.code(), ErrorCode::Unauthorized, "{sub:?}");
            assert!(!err.to_string().contains('\n'), "{err}");
        }
    }

    #[test]
    fn null_channels_crit_and_long_lifetimes_are_refused() {
        let (v, _) = pair();
        let v = v.with_max_lifetime(3600);
        let now = chrono::Utc::now().timestamp();
        let null = signed(serde_json::json!({"sub": "a", "exp": now + 60, "channels": null}));
        assert!(v.verify(&null).is_err());
        let long = signed(serde_json::json!({"sub": "a", "iat": now, "exp": now + 7200}));
        assert!(v.verify(&long).is_err());
        let long_no_iat = signed(serde_json::json!({"sub": "a", "exp": now + 7200}));
        assert!(v.verify(&long_no_iat).is_err());
        let ok = signed(serde_json::json!({"sub": "a", "iat": now, "exp": now + 3600}));
        assert!(v.verify(&ok).is_ok());
        let mut header = Header::new(Algorithm::HS256);
        header.crit = Some(vec!["b64".into()]);
        let crit = jsonwebtoken::encode(
            &header,
            &serde_json::json!({"sub": "a", "exp": now + 60}),
            &EncodingKey::from_secret(b"s3cret-0123456789abcdef0123456789"),
        )
        .unwrap();
        assert!(v.verify(&crit).is_err());
    }

    #[test]
    fn leeway_is_configurable() {
        let now = chrono::Utc::now().timestamp();
        let late = signed(serde_json::json!({"sub": "a", "iat": now - 100, "exp": now - 20}));
        let (v, _) = pair();
        assert!(matches!(
            v.with_leeway(0).verify(&late),
            Err(AuthError::Expired)
        ));
        let (v, _) = pair();
        assert!(v.with_leeway(60).verify(&late).is_ok());
    }

    #[test]
    fn refuses_alg_none() {
        let (v, _) = pair();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let exp = chrono::Utc::now().timestamp() + 60;
        let body = b64.encode(format!(r#"{{"sub":"a","exp":{exp}}}"#));
        for token in [format!("{header}.{body}."), format!("{header}.{body}")] {
            let err = v.verify(&token).unwrap_err();
            assert_eq!(err.code(), ErrorCode::Unauthorized, "{token}");
        }
    }

    #[test]
    fn requires_exp_and_checks_issuer_and_audience() {
        let m = Minter::from_secret(b"k");
        let mut claims = Claims {
            sub: "a".into(),
            exp: chrono::Utc::now().timestamp() + 60,
            iat: None,
            account: None,
            channels: None,
            jti: None,
            iss: Some("me".into()),
            aud: Some("dash".into()),
        };
        let v = Verifier::from_secret(b"k", "demo")
            .with_issuer(Some("me".into()))
            .with_audience(Some("dash".into()));
        assert!(v.verify(&m.mint(&claims).unwrap()).is_ok());
        claims.iss = Some("someone-else".into());
        assert!(v.verify(&m.mint(&claims).unwrap()).is_err());
        let no_exp = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"sub": "a", "iss": "me", "aud": "dash"}),
            &EncodingKey::from_secret(b"k"),
        )
        .unwrap();
        assert!(v.verify(&no_exp).is_err());
    }
}
