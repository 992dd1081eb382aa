//! How tokens are checked: the key source, required claims, and the account
//! of tokens that name none.

use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Authentication")]
pub struct AuthConfig {
    /// HS256 shared secret.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// PEM or JWKS file with the RS256/ES256 public key(s).
    #[arg(long, env = "JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,

    /// Required `iss` claim, when set.
    #[arg(long, env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Required `aud` claim, when set.
    #[arg(long, env = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Account for tokens without an `account` claim.
    #[arg(long, env = "DEFAULT_ACCOUNT", default_value = "demo")]
    pub default_account: String,
}
