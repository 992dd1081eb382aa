//! Who is connecting and what they may see: JWT verification and minting.
//!
//! One key source is configured per gateway: an HS256 secret, or a PEM or
//! JWKS file of RS256/ES256 public keys. The accepted algorithms follow from
//! the key, never from the token, which is what rules out `alg: none` and
//! algorithm confusion (an HS256 token "signed" with an RSA public key).

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use protocol::{Channel, ErrorCode};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// Small clock skew allowance for `exp` and `nbf`.
const LEEWAY_SECS: u64 = 5;

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
    /// Channel allow-list (default: all six).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<String>>,
    /// Issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Audience.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

/// What a verified token entitles a connection to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The token's `sub`.
    pub user: String,
    /// The MT5 account whose data it sees.
    pub account: String,
    /// Channels the token allows; all six when the token does not say.
    pub allowed: Vec<Channel>,
    /// Seconds since the epoch when the token stops being valid.
    pub expires_at: i64,
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
    /// The key source, which fixes the accepted algorithms.
    keys: Keys,
    /// Required `iss`, when set.
    issuer: Option<String>,
    /// Required `aud`, when set.
    audience: Option<String>,
    /// The account of tokens without an `account` claim.
    default_account: String,
}

impl Verifier {
    pub fn from_secret(secret: &[u8], default_account: &str) -> Self {
        Verifier {
            keys: Keys::Secret(DecodingKey::from_secret(secret)),
            issuer: None,
            audience: None,
            default_account: default_account.to_owned(),
        }
    }

    /// Loads a PEM public key (RSA or EC P-256) or a JWKS document.
    pub fn from_public_key_file(path: &Path, default_account: &str) -> Result<Self, KeyError> {
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
        Ok(Verifier {
            keys,
            issuer: None,
            audience: None,
            default_account: default_account.to_owned(),
        })
    }

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
        let (key, alg) = match &self.keys {
            Keys::Secret(key) => (key, Algorithm::HS256),
            Keys::Single(key, alg) => (key, *alg),
            Keys::ByKid(keys) => {
                let kid = header.kid.clone().unwrap_or_default();
                let (key, alg) = keys
                    .get(&kid)
                    .ok_or_else(|| AuthError::Invalid(format!("unknown kid `{kid}`")))?;
                (key, *alg)
            }
        };
        let mut validation = Validation::new(alg);
        validation.leeway = LEEWAY_SECS;
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
        Ok(self.identity(data.claims))
    }

    fn identity(&self, claims: Claims) -> Identity {
        let allowed = match &claims.channels {
            // Names we do not know are ignored: a token may be shared with
            // newer services that have more channels.
            Some(list) => Channel::ALL
                .into_iter()
                .filter(|c| list.iter().any(|n| n == c.name()))
                .collect(),
            None => Channel::ALL.to_vec(),
        };
        Identity {
            user: claims.sub,
            account: claims
                .account
                .filter(|a| !a.is_empty())
                .unwrap_or_else(|| self.default_account.clone()),
            allowed,
            expires_at: claims.exp,
        }
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
            channels,
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
            Verifier::from_secret(b"s3cret", "demo"),
            Minter::from_secret(b"s3cret"),
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
