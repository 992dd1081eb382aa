//! Test keys and tokens: RSA and EC P-256 key pairs made with the `openssl`
//! CLI at test time, their JWKs, and hand-built tokens the gateway must
//! refuse (`alg: none`, algorithm confusion).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use gateway::auth::Minter;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// RSA 2048, for RS256.
    Rsa,
    /// EC P-256, for ES256.
    Ec,
}

/// A key pair as PEM files (PKCS#8 private key, SPKI public key).
#[derive(Debug, Clone)]
pub struct KeyPair {
    pub kind: KeyKind,
    pub private_pem: PathBuf,
    pub public_pem: PathBuf,
}

fn openssl(args: &[&str]) -> String {
    crate::procs::run_ok(Command::new("openssl").args(args))
}

impl KeyPair {
    /// Generates a key pair into `dir` as `<name>.key` / `<name>.pub`.
    pub fn generate(dir: &Path, kind: KeyKind, name: &str) -> KeyPair {
        let private_pem = dir.join(format!("{name}.key"));
        let public_pem = dir.join(format!("{name}.pub"));
        let key = private_pem.to_str().expect("utf-8 path");
        let pubkey = public_pem.to_str().expect("utf-8 path");
        match kind {
            KeyKind::Rsa => openssl(&[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                key,
            ]),
            KeyKind::Ec => openssl(&[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                key,
            ]),
        };
        openssl(&["pkey", "-in", key, "-pubout", "-out", pubkey]);
        KeyPair {
            kind,
            private_pem,
            public_pem,
        }
    }

    /// The public key as a JWK with this `kid`.
    pub fn jwk(&self, kid: &str) -> Value {
        let pubkey = self.public_pem.to_str().expect("utf-8 path");
        match self.kind {
            KeyKind::Rsa => {
                let out = openssl(&["rsa", "-pubin", "-in", pubkey, "-noout", "-modulus"]);
                let hex = out
                    .trim()
                    .strip_prefix("Modulus=")
                    .unwrap_or_else(|| panic!("unexpected openssl output: {out}"));
                let mut n = from_hex(hex);
                while n.first() == Some(&0) {
                    n.remove(0);
                }
                let text = openssl(&["rsa", "-pubin", "-in", pubkey, "-noout", "-text"]);
                assert!(
                    text.contains("Exponent: 65537"),
                    "expected e = 65537: {text}"
                );
                json!({
                    "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
                    "n": URL_SAFE_NO_PAD.encode(n), "e": "AQAB",
                })
            }
            KeyKind::Ec => {
                let text = openssl(&["ec", "-pubin", "-in", pubkey, "-noout", "-text"]);
                // "pub:\n    04:ab:cd:...\n    ...\nASN1 OID: prime256v1"
                let after = text
                    .split_once("pub:")
                    .unwrap_or_else(|| panic!("unexpected openssl output: {text}"))
                    .1;
                let hex: String = after
                    .lines()
                    .skip(1)
                    .take_while(|l| l.starts_with(' '))
                    .flat_map(|l| l.trim().split(':'))
                    .collect();
                let point = from_hex(&hex);
                assert_eq!((point.len(), point[0]), (65, 4), "uncompressed P-256 point");
                json!({
                    "kty": "EC", "use": "sig", "alg": "ES256", "crv": "P-256", "kid": kid,
                    "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                    "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
                })
            }
        }
    }

    /// A minter signing with this private key (RS256 or ES256).
    pub fn minter(&self, kid: Option<&str>) -> Minter {
        Minter::from_private_key_file(&self.private_pem, kid.map(str::to_owned))
            .expect("loading the private key")
    }

    /// A valid token for `sub` signed with this key.
    pub fn token(&self, sub: &str, kid: Option<&str>, ttl: i64) -> String {
        self.minter(kid)
            .mint_for(sub, None, None, ttl)
            .expect("signing")
    }
}

/// Writes a JWKS document with these keys and returns its path.
pub fn write_jwks(path: &Path, keys: &[Value]) -> PathBuf {
    std::fs::write(path, json!({ "keys": keys }).to_string()).expect("writing the JWKS");
    path.to_owned()
}

fn from_hex(hex: &str) -> Vec<u8> {
    let hex: String = hex.chars().filter(|c| !c.is_whitespace()).collect();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Claims valid for `ttl` seconds from now.
pub fn claims(sub: &str, ttl: i64) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({"sub": sub, "iat": now, "exp": now + ttl})
}

/// An unsigned token: `{"alg": "none"}`, the claims, and an empty signature.
pub fn alg_none_token(claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{body}.")
}

/// An HS256 token signed with `secret` (any bytes: for algorithm confusion,
/// the PEM text of an RSA public key).
pub fn hs256_token(secret: &[u8], claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .expect("signing HS256")
}
