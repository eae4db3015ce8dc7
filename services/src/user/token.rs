//! Access and refresh tokens: JWT signed with HS256 and the configured secret. An access token
//! carries the user's roles; a refresh token only the subject, so a refresh re-reads the roles
//! and the disabled flag from the database.
//!
//! Time claims: `exp` is required and honoured with [`EXPIRY_LEEWAY_SECS`]; `iat` is required
//! (every token this node has ever issued carries it) and refused when it lies more than
//! [`CLOCK_SKEW_SECS`] in the future; `nbf` is optional (the node does not set it: `iat` already
//! says when its tokens become valid) and, when present, refused until it is less than
//! [`CLOCK_SKEW_SECS`] away.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::ServiceError;
use crate::security::{Caller, Role};
use crate::time::now_ms;

/// How tokens are signed and how long they live.
#[derive(Clone)]
pub struct TokenConfig {
    /// The HS256 secret (at least 32 bytes).
    pub secret: Vec<u8>,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
}

impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("secret", &"<redacted>")
            .field("access_ttl", &self.access_ttl)
            .field("refresh_ttl", &self.refresh_ttl)
            .finish()
    }
}

/// Shortest accepted secret, in bytes.
pub const MIN_SECRET_LEN: usize = 32;

const ISSUER: &str = "ovasabi";

/// Seconds a token is still accepted after its `exp`.
pub const EXPIRY_LEEWAY_SECS: u64 = 5;
/// Seconds a token's `iat` or `nbf` may lie ahead of this node's clock (clock skew between the
/// node that issued it and the one checking it).
pub const CLOCK_SKEW_SECS: i64 = 30;

/// The claims of both kinds of token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    /// `access` or `refresh`.
    pub typ: String,
    #[serde(default)]
    pub roles: Vec<Role>,
    /// Issued at (Unix seconds). Required: a token without it is refused.
    pub iat: i64,
    /// Not before (Unix seconds). Optional; the node does not set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    pub exp: i64,
    pub iss: String,
    pub jti: String,
    /// Refresh tokens: a fingerprint of the password hash they were issued under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pwd: Option<String>,
    /// Access tokens: the account's token generation when it was issued (`revocation.rs`);
    /// tokens without it count as generation 0.
    #[serde(rename = "gen", default, skip_serializing_if = "is_zero")]
    pub generation: u64,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A short, stable fingerprint of a password hash (the first 16 bytes of its SHA-256, hex): it
/// changes with the password and reveals nothing usable about it.
pub fn fingerprint(password_hash: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(password_hash.as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// Issues and checks tokens.
#[derive(Clone)]
pub struct TokenIssuer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    config: TokenConfig,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("config", &self.config)
            .finish()
    }
}

fn unauthenticated(message: impl Into<String>) -> ServiceError {
    ServiceError::Unauthenticated {
        message: message.into(),
    }
}

impl TokenIssuer {
    /// # Errors
    /// [`ServiceError::Invalid`] for a secret shorter than 32 bytes.
    pub fn new(config: TokenConfig) -> Result<Self, ServiceError> {
        if config.secret.len() < MIN_SECRET_LEN {
            return Err(ServiceError::invalid(
                "jwt_secret",
                format!("must have at least {MIN_SECRET_LEN} bytes"),
            ));
        }
        Ok(Self {
            encoding: EncodingKey::from_secret(&config.secret),
            decoding: DecodingKey::from_secret(&config.secret),
            config,
        })
    }

    /// Seconds an access token lives.
    pub fn access_ttl_secs(&self) -> i64 {
        i64::try_from(self.config.access_ttl.as_secs()).unwrap_or(i64::MAX)
    }

    fn issue(
        &self,
        sub: &str,
        typ: &str,
        roles: &[Role],
        ttl: Duration,
        pwd: Option<String>,
        generation: u64,
    ) -> Result<String, ServiceError> {
        let iat = now_ms() / 1000;
        let claims = Claims {
            sub: sub.to_owned(),
            typ: typ.to_owned(),
            roles: roles.to_vec(),
            iat,
            nbf: None,
            exp: iat.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX)),
            iss: ISSUER.to_owned(),
            jti: uuid::Uuid::now_v7().to_string(),
            pwd,
            generation,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).map_err(|e| {
            ServiceError::Database(sqlx::Error::Protocol(format!("signing a token: {e}")))
        })
    }

    /// An access token for `sub` with `roles`, of the account's token `generation`.
    ///
    /// # Errors
    /// When signing fails.
    pub fn access(
        &self,
        sub: &str,
        roles: &[Role],
        generation: u64,
    ) -> Result<String, ServiceError> {
        self.issue(
            sub,
            "access",
            roles,
            self.config.access_ttl,
            None,
            generation,
        )
    }

    /// How long an access token is accepted at most (its lifetime plus the expiry leeway).
    pub fn access_lifetime(&self) -> Duration {
        self.config.access_ttl + Duration::from_secs(EXPIRY_LEEWAY_SECS)
    }

    /// A refresh token for `sub`, bound to the password `fingerprint`.
    ///
    /// # Errors
    /// When signing fails.
    pub fn refresh(&self, sub: &str, fingerprint: &str) -> Result<String, ServiceError> {
        self.issue(
            sub,
            "refresh",
            &[],
            self.config.refresh_ttl,
            Some(fingerprint.to_owned()),
            0,
        )
    }

    /// The claims of a valid, unexpired token of kind `typ`, already valid (`iat` and `nbf`
    /// not in the future beyond [`CLOCK_SKEW_SECS`]).
    ///
    /// # Errors
    /// [`ServiceError::Unauthenticated`] saying what is wrong with it.
    pub fn verify(&self, token: &str, typ: &str) -> Result<Claims, ServiceError> {
        let mut v = Validation::new(Algorithm::HS256);
        v.set_issuer(&[ISSUER]);
        v.leeway = EXPIRY_LEEWAY_SECS;
        // `nbf` and `iat` are checked below, with their own leeway.
        v.validate_nbf = false;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => unauthenticated("the token has expired"),
                ErrorKind::InvalidSignature => unauthenticated("the token's signature is invalid"),
                _ => unauthenticated(format!("the token is not valid: {e}")),
            }
        })?;
        if data.claims.typ != typ {
            return Err(unauthenticated(format!(
                "expected an {typ} token, got a {} token",
                data.claims.typ
            )));
        }
        check_not_early(&data.claims, now_ms() / 1000)?;
        Ok(data.claims)
    }

    /// The caller an access token stands for.
    ///
    /// # Errors
    /// As [`TokenIssuer::verify`].
    pub fn caller(&self, access_token: &str) -> Result<Caller, ServiceError> {
        let c = self.verify(access_token, "access")?;
        Ok(Caller::user(c.sub, c.roles))
    }
}

/// Refuses a token whose `iat` or `nbf` is more than [`CLOCK_SKEW_SECS`] after `now` (Unix
/// seconds).
fn check_not_early(claims: &Claims, now: i64) -> Result<(), ServiceError> {
    let limit = now.saturating_add(CLOCK_SKEW_SECS);
    if let Some(nbf) = claims.nbf.filter(|&nbf| nbf > limit) {
        let ahead = nbf.saturating_sub(now);
        tracing::debug!(sub = %claims.sub, nbf, now, ahead, "token not valid yet");
        return Err(unauthenticated(format!(
            "the token is not valid yet (its nbf is {ahead} s ahead of this node's clock)"
        )));
    }
    if claims.iat > limit {
        let ahead = claims.iat.saturating_sub(now);
        tracing::debug!(sub = %claims.sub, iat = claims.iat, now, ahead, "token issued in the future");
        return Err(unauthenticated(format!(
            "the token is not valid yet (its iat is {ahead} s ahead of this node's clock)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer(ttl: u64) -> TokenIssuer {
        TokenIssuer::new(TokenConfig {
            secret: vec![7; 32],
            access_ttl: Duration::from_secs(ttl),
            refresh_ttl: Duration::from_secs(3600),
        })
        .expect("issuer")
    }

    #[test]
    fn round_trip_and_kinds() {
        let i = issuer(60);
        let t = i.access("u1", &[Role::Admin], 0).expect("token");
        let caller = i.caller(&t).expect("valid");
        assert_eq!(caller.user_id(), Some("u1"));
        assert!(caller.has_role(Role::Admin));
        assert!(matches!(
            i.verify(&t, "refresh"),
            Err(ServiceError::Unauthenticated { .. })
        ));
        let r = i.refresh("u1", "fp").expect("refresh");
        assert!(
            i.caller(&r).is_err(),
            "a refresh token is not an access token"
        );
    }

    #[test]
    fn rejects_other_secrets_garbage_and_short_secrets() {
        let t = issuer(60).access("u1", &[], 0).expect("token");
        let other = TokenIssuer::new(TokenConfig {
            secret: vec![8; 32],
            access_ttl: Duration::from_secs(60),
            refresh_ttl: Duration::from_secs(60),
        })
        .expect("issuer");
        assert!(other.caller(&t).is_err());
        assert!(issuer(60).caller("not.a.token").is_err());
        assert!(issuer(60).caller("").is_err());
        assert!(
            TokenIssuer::new(TokenConfig {
                secret: vec![1; 31],
                access_ttl: Duration::from_secs(1),
                refresh_ttl: Duration::from_secs(1),
            })
            .is_err()
        );
    }

    #[test]
    fn rejects_expired_tokens() {
        let i = issuer(0);
        let mut c = i
            .verify(&i.access("u1", &[], 0).expect("t"), "access")
            .expect("fresh");
        c.exp = now_ms() / 1000 - 60;
        let old =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &c, &i.encoding).expect("sign");
        let e = i.caller(&old).expect_err("expired");
        assert!(e.to_string().contains("expired"), "{e}");
    }

    /// A token signed with the issuer's own secret, with `claims` as given.
    fn forge(i: &TokenIssuer, claims: &serde_json::Value) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &i.encoding).expect("sign")
    }

    /// Access-token claims for `u1` issued at `iat`, valid for an hour, plus `extra`.
    fn claims(iat: i64, extra: serde_json::Value) -> serde_json::Value {
        let mut c = serde_json::json!({
            "sub": "u1", "typ": "access", "roles": [], "iat": iat, "exp": iat + 3600,
            "iss": ISSUER, "jti": "j1",
        });
        if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
            c.extend(extra.clone());
        }
        c
    }

    fn refused_as_not_yet_valid(i: &TokenIssuer, token: &str, claim: &str) {
        match i.caller(token) {
            Err(ServiceError::Unauthenticated { message }) => assert!(
                message.contains("not valid yet") && message.contains(claim),
                "{message}"
            ),
            other => panic!("expected unauthenticated for a future {claim}, got {other:?}"),
        }
    }

    #[test]
    fn refuses_tokens_not_valid_yet() {
        let i = issuer(60);
        let now = now_ms() / 1000;
        let later = now + CLOCK_SKEW_SECS + 60;
        let t = forge(&i, &claims(now, serde_json::json!({ "nbf": later })));
        refused_as_not_yet_valid(&i, &t, "nbf");
        let t = forge(&i, &claims(later, serde_json::json!({})));
        refused_as_not_yet_valid(&i, &t, "iat");
        let t = forge(&i, &claims(later, serde_json::json!({ "nbf": later })));
        assert!(i.caller(&t).is_err(), "both in the future");
        assert!(
            i.verify(
                &forge(
                    &i,
                    &claims(now, serde_json::json!({ "typ": "refresh", "nbf": later }))
                ),
                "refresh"
            )
            .is_err(),
            "refresh tokens too"
        );
    }

    #[test]
    fn accepts_time_claims_within_the_leeway_and_tokens_without_nbf() {
        let i = issuer(60);
        let now = now_ms() / 1000;
        let soon = now + CLOCK_SKEW_SECS - 5;
        let t = forge(&i, &claims(now, serde_json::json!({ "nbf": soon })));
        assert!(i.caller(&t).is_ok(), "nbf within the leeway");
        let t = forge(&i, &claims(soon, serde_json::json!({ "nbf": soon })));
        assert!(
            i.caller(&t).is_ok(),
            "iat within the leeway (a clock ahead)"
        );
        let t = forge(
            &i,
            &claims(now - 600, serde_json::json!({ "nbf": now - 600 })),
        );
        assert!(i.caller(&t).is_ok(), "nbf in the past");
        let t = forge(&i, &claims(now - 600, serde_json::json!({})));
        assert!(
            i.caller(&t).is_ok(),
            "no nbf, as every token the node issues"
        );
        let issued = i.access("u1", &[], 0).expect("token");
        assert_eq!(i.verify(&issued, "access").expect("valid").nbf, None);
    }

    #[test]
    fn refuses_tokens_without_iat_or_with_a_malformed_nbf() {
        let i = issuer(60);
        let now = now_ms() / 1000;
        let mut c = claims(now, serde_json::json!({}));
        if let Some(c) = c.as_object_mut() {
            c.remove("iat");
        }
        let e = i.caller(&forge(&i, &c)).expect_err("no iat");
        assert!(e.to_string().contains("iat"), "{e}");
        let t = forge(&i, &claims(now, serde_json::json!({ "nbf": "soon" })));
        assert!(matches!(
            i.caller(&t),
            Err(ServiceError::Unauthenticated { .. })
        ));
    }
}
