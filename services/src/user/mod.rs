//! The user service: registration, login (argon2id hashes), JWT access and refresh tokens,
//! profiles, and the admin operations on accounts (roles, disabling, listing). Tables
//! `service_user_master` and `service_user_role`; every change writes its audit row in the
//! same transaction.
//!
//! # Layout
//! * `model`: records, requests, field rules; `repo`: storage; `password`: hashing;
//!   `token`: JWT.

mod guard;
pub mod model;
mod password;
mod repo;
pub mod revocation;
pub mod token;

pub use guard::{MAX_REGISTRATIONS, REGISTRATION_WINDOW};
pub use model::{NewUser, ProfileUpdate, Tokens, User, UserFilter};
pub use revocation::{Revocations, Revoked};
pub use token::{Claims, TokenConfig, TokenIssuer};

use std::sync::Arc;

use crate::page::{Page, check_limit, paginate};
use crate::security::{Caller, Policies, Role};
use crate::time::{now_ms, rfc3339};
use crate::{Database, ServiceError};
use repo::{Account, UserRepo};

/// What a live session keeps of the access token it was opened with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionToken {
    /// The account's token generation it was issued under.
    pub generation: u64,
    /// Its `exp`, in Unix milliseconds.
    pub expires_at_ms: i64,
}

/// User operations.
#[derive(Clone, Debug)]
pub struct UserService {
    repo: UserRepo,
    policies: Policies,
    tokens: Arc<TokenIssuer>,
    guard: Arc<guard::LoginGuard>,
    /// Registrations per client address (open to anyone: bounded per address).
    registrations: Arc<guard::RegistrationGuard>,
    /// Accounts whose older tokens are refused.
    revocations: Arc<Revocations>,
}

fn bad_credentials() -> ServiceError {
    ServiceError::Unauthenticated {
        message: "wrong username/email or password".to_owned(),
    }
}

fn not_found(id: &str) -> ServiceError {
    ServiceError::NotFound {
        entity: "user",
        id: id.to_owned(),
    }
}

impl UserService {
    pub fn new(db: Database, policies: Policies, tokens: Arc<TokenIssuer>) -> Self {
        Self {
            repo: UserRepo::new(db),
            policies,
            guard: Arc::new(guard::LoginGuard::default()),
            registrations: Arc::new(guard::RegistrationGuard::default()),
            revocations: Arc::new(Revocations::new(tokens.access_lifetime())),
            tokens,
        }
    }

    /// The token issuer (the node checks access tokens with it).
    pub fn tokens(&self) -> &TokenIssuer {
        &self.tokens
    }

    /// The caller an `Authorization` bearer token stands for.
    ///
    /// # Errors
    /// [`ServiceError::Unauthenticated`] for a bad, expired or revoked token.
    pub fn authenticate(&self, access_token: &str) -> Result<Caller, ServiceError> {
        self.authenticate_session(access_token).map(|(c, _)| c)
    }

    /// As [`UserService::authenticate`], with what a live session keeps of the token: its
    /// generation (the session is closed when the account's tokens are revoked) and expiry.
    ///
    /// # Errors
    /// As [`UserService::authenticate`].
    pub fn authenticate_session(
        &self,
        access_token: &str,
    ) -> Result<(Caller, SessionToken), ServiceError> {
        let claims = self.tokens.verify(access_token, "access")?;
        self.revocations.check(&claims.sub, claims.generation)?;
        let token = SessionToken {
            generation: claims.generation,
            expires_at_ms: claims.exp.saturating_mul(1000),
        };
        Ok((Caller::user(claims.sub, claims.roles), token))
    }

    /// The accounts whose tokens were revoked, as this node knows them.
    pub fn revocations(&self) -> &Revocations {
        &self.revocations
    }

    /// Learns the revocations made on any node since the last call (the node calls it every
    /// second); returns how many were news.
    ///
    /// # Errors
    /// Database failures (the next call catches up: each looks back past the previous one).
    pub async fn sync_revocations(&self) -> Result<usize, ServiceError> {
        let now = now_ms();
        let rows = self
            .repo
            .revoked_since(self.revocations.poll_from(now))
            .await?;
        let news = rows
            .iter()
            .filter(|(id, generation, at)| self.revocations.raise(id, *generation, *at))
            .count();
        self.revocations.polled(now);
        if news > 0 {
            tracing::info!(
                accounts = news,
                "token revocations learned from the database"
            );
        }
        Ok(news)
    }

    /// Applies `edit` to the account (`repo.update`) and, when the change revoked its tokens,
    /// refuses them on this node at once.
    async fn change<F>(
        &self,
        id: &str,
        audit: crate::security::AuditRecord,
        edit: F,
    ) -> Result<User, ServiceError>
    where
        F: FnOnce(&mut Account) -> Result<(), ServiceError>,
    {
        let at = now_ms();
        let (account, revoked) = self.repo.update(id, at, audit, edit).await?;
        if revoked {
            self.revocations.raise(id, account.generation, at);
            tracing::info!(user = %id, generation = account.generation, "access tokens revoked");
        }
        Ok(account.user)
    }

    async fn create_account(
        &self,
        caller: &Caller,
        new: NewUser,
        roles: Vec<Role>,
    ) -> Result<User, ServiceError> {
        let username = model::validate_username(&new.username)?;
        let email = model::validate_email(&new.email)?;
        model::validate_password("password", &new.password)?;
        let display_name = match new.display_name.as_deref() {
            Some(d) => model::validate_display_name(d)?,
            None => username.clone(),
        };
        let at = now_ms();
        let account = Account {
            user: User {
                id: uuid::Uuid::now_v7().to_string(),
                username,
                email,
                display_name,
                roles,
                disabled: false,
                locale: None,
                created_at: rfc3339(at),
                updated_at: rfc3339(at),
            },
            password_hash: password::hash(new.password).await?,
            generation: 0,
        };
        let audit = caller
            .audit("user.register", "user", &account.user.id)
            .after(&account.user);
        self.repo.insert(&account, at, &audit).await?;
        tracing::info!(user = %account.user.id, username = %account.user.username, "user registered");
        Ok(account.user)
    }

    /// Registers a new account with the role `user`. Open to anyone.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] naming the field, [`ServiceError::Duplicate`] for a taken
    /// username or email, [`ServiceError::RateLimited`] beyond
    /// 30 attempts from one client address within 10 minutes.
    pub async fn register(&self, caller: &Caller, new: NewUser) -> Result<User, ServiceError> {
        self.registrations.attempt(caller.addr.as_deref())?;
        self.create_account(caller, new, vec![Role::User]).await
    }

    /// Counts a registration attempt from `caller`'s address against the same limit as
    /// [`UserService::register`] (the referral service counts one before it looks a code up,
    /// so that codes cannot be probed faster than accounts can be registered).
    ///
    /// # Errors
    /// [`ServiceError::RateLimited`].
    pub(crate) fn count_registration(&self, caller: &Caller) -> Result<(), ServiceError> {
        self.registrations.attempt(caller.addr.as_deref())
    }

    /// [`UserService::register`] for an attempt already counted by
    /// [`UserService::count_registration`].
    ///
    /// # Errors
    /// As [`UserService::register`], without the rate limit.
    pub(crate) async fn register_counted(
        &self,
        caller: &Caller,
        new: NewUser,
    ) -> Result<User, ServiceError> {
        self.create_account(caller, new, vec![Role::User]).await
    }

    /// Makes sure an admin account `username` exists (start-up bootstrap); creates it with
    /// `password` when it does not. Returns the account and whether it was created.
    ///
    /// # Errors
    /// As [`UserService::register`].
    pub async fn ensure_admin(
        &self,
        username: &str,
        email: &str,
        password: &str,
    ) -> Result<(User, bool), ServiceError> {
        let name = model::validate_username(username)?;
        // An existing account of that name that is not an admin (someone registered it first)
        // is not made one.
        let existing = |a: Account| {
            if a.user.roles.contains(&Role::Admin) {
                Ok((a.user, false))
            } else {
                Err(ServiceError::Conflict {
                    message: format!(
                        "an account {name:?} exists and is not an admin; choose another admin_username"
                    ),
                })
            }
        };
        if let Some(a) = self.repo.by_login(&name).await? {
            return existing(a);
        }
        let new = NewUser {
            username: name.clone(),
            email: email.to_owned(),
            password: password.to_owned(),
            display_name: Some("Administrator".to_owned()),
            ..Default::default()
        };
        match self
            .create_account(&Caller::system(), new, vec![Role::User, Role::Admin])
            .await
        {
            Ok(user) => Ok((user, true)),
            // Another node sharing the database created it at the same moment.
            Err(ServiceError::Duplicate { .. }) => match self.repo.by_login(&name).await? {
                Some(a) => existing(a),
                None => Err(ServiceError::Duplicate {
                    message: format!("email {email:?} belongs to another account"),
                }),
            },
            Err(e) => Err(e),
        }
    }

    /// Tokens for `account`; the refresh token is bound to its current password (a password
    /// change makes every earlier refresh token useless).
    fn tokens_for(&self, account: Account) -> Result<Tokens, ServiceError> {
        let user = account.user;
        Ok(Tokens {
            access_token: self
                .tokens
                .access(&user.id, &user.roles, account.generation)?,
            refresh_token: self
                .tokens
                .refresh(&user.id, &token::fingerprint(&account.password_hash))?,
            token_type: "Bearer",
            expires_in: self.tokens.access_ttl_secs(),
            user,
        })
    }

    /// Fresh tokens for an existing account (the `--dev` admin token at start-up).
    ///
    /// # Errors
    /// [`ServiceError::NotFound`], signing failures.
    pub async fn issue(&self, user_id: &str) -> Result<Tokens, ServiceError> {
        let a = self
            .repo
            .by_id(user_id)
            .await?
            .ok_or_else(|| not_found(user_id))?;
        self.tokens_for(a)
    }

    /// Checks a username or email and password; returns tokens.
    ///
    /// # Errors
    /// [`ServiceError::Unauthenticated`] for an unknown login or a wrong password (the same
    /// message and about the same time for both), [`ServiceError::Forbidden`] for a disabled
    /// account, [`ServiceError::RateLimited`] after too many wrong passwords for the account
    /// (its user name and e-mail count together) or for an unknown name.
    pub async fn login(&self, login: &str, password: &str) -> Result<Tokens, ServiceError> {
        if login.is_empty() || login.len() > model::MAX_EMAIL_LEN || password.len() > 1024 {
            return Err(bad_credentials());
        }
        let name = login.trim().to_ascii_lowercase();
        // The account first, so its user name and e-mail share one failure count; the lookup
        // is cheap next to the hash the guard saves.
        let account = self.repo.by_login(&name).await?;
        let key = guard::LoginKey::new(&name, account.as_ref().map(|a| a.user.id.as_str()));
        self.guard.check(&key)?;
        let stored = account
            .as_ref()
            .map_or(password::DECOY, |a| a.password_hash.as_str())
            .to_owned();
        let ok = password::verify(password.to_owned(), stored).await?;
        let Some(account) = account.filter(|_| ok) else {
            tracing::info!(login = %login, "login failed");
            if self.guard.failed(&key) {
                tracing::warn!(
                    login = %login,
                    key = ?key,
                    max_failures = guard::MAX_FAILURES,
                    window_secs = guard::WINDOW.as_secs(),
                    "login locked after too many wrong passwords"
                );
            }
            return Err(bad_credentials());
        };
        self.guard.succeeded(&key);
        if account.user.disabled {
            return Err(ServiceError::Forbidden {
                message: "this account is disabled".to_owned(),
            });
        }
        tracing::info!(user = %account.user.id, "login");
        self.tokens_for(account)
    }

    /// New tokens for a valid refresh token, with the account's current roles.
    ///
    /// # Errors
    /// [`ServiceError::Unauthenticated`] for a bad or expired token or a deleted account,
    /// [`ServiceError::Forbidden`] for a disabled one.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Tokens, ServiceError> {
        let claims = self.tokens.verify(refresh_token, "refresh")?;
        let account =
            self.repo
                .by_id(&claims.sub)
                .await?
                .ok_or_else(|| ServiceError::Unauthenticated {
                    message: "the token's account no longer exists".to_owned(),
                })?;
        if account.user.disabled {
            return Err(ServiceError::Forbidden {
                message: "this account is disabled".to_owned(),
            });
        }
        if claims.pwd.as_deref() != Some(token::fingerprint(&account.password_hash).as_str()) {
            return Err(ServiceError::Unauthenticated {
                message: "the password changed since this token was issued: log in again"
                    .to_owned(),
            });
        }
        self.tokens_for(account)
    }

    /// The signed-in caller's account.
    ///
    /// # Errors
    /// [`ServiceError::Unauthenticated`] without a user, [`ServiceError::NotFound`].
    pub async fn me(&self, caller: &Caller) -> Result<User, ServiceError> {
        let id = caller.require_user()?;
        Ok(self
            .repo
            .by_id(id)
            .await?
            .ok_or_else(|| not_found(id))?
            .user)
    }

    /// A user: callers read their own account; reading others needs `read` on `user`.
    ///
    /// # Errors
    /// [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`], [`ServiceError::NotFound`].
    pub async fn get(&self, caller: &Caller, id: &str) -> Result<User, ServiceError> {
        if caller.user_id() != Some(id) {
            self.policies.require(caller, "user", "read")?;
        }
        Ok(self
            .repo
            .by_id(id)
            .await?
            .ok_or_else(|| not_found(id))?
            .user)
    }

    /// Changes the caller's display name, email or password (the last needs the current
    /// password).
    ///
    /// # Errors
    /// [`ServiceError::Invalid`], [`ServiceError::Unauthenticated`] (also for a wrong current
    /// password), [`ServiceError::Conflict`] for a taken email.
    pub async fn update_profile(
        &self,
        caller: &Caller,
        change: ProfileUpdate,
    ) -> Result<User, ServiceError> {
        let id = caller.require_user()?.to_owned();
        let display_name = change
            .display_name
            .as_deref()
            .map(model::validate_display_name)
            .transpose()?;
        let email = change
            .email
            .as_deref()
            .map(model::validate_email)
            .transpose()?;
        let locale = match change.locale.as_deref() {
            None => None,
            Some("") => Some(None),
            Some(tag) => Some(Some(crate::localization::locale::canonical("locale", tag)?)),
        };
        let new_hash = match change.new_password {
            Some(new) => {
                model::validate_password("new_password", &new)?;
                let Some(current) = change.current_password else {
                    return Err(ServiceError::invalid(
                        "current_password",
                        "required to set a new password",
                    ));
                };
                let account = self.repo.by_id(&id).await?.ok_or_else(|| not_found(&id))?;
                if !password::verify(current, account.password_hash).await? {
                    return Err(ServiceError::Unauthenticated {
                        message: "current_password is wrong".to_owned(),
                    });
                }
                Some(password::hash(new).await?)
            }
            None => None,
        };
        let audit = caller.audit("user.update_profile", "user", &id);
        self.change(&id, audit, |a| {
            if let Some(d) = display_name {
                a.user.display_name = d;
            }
            if let Some(e) = email {
                a.user.email = e;
            }
            if let Some(l) = locale {
                a.user.locale = l;
            }
            if let Some(h) = new_hash {
                a.password_hash = h;
            }
            Ok(())
        })
        .await
    }

    /// A page of users matching `filter`. Needs `manage` on `user`.
    ///
    /// # Errors
    /// [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`], [`ServiceError::Invalid`].
    pub async fn list(
        &self,
        caller: &Caller,
        filter: &UserFilter,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<Page<User>, ServiceError> {
        self.policies.require(caller, "user", "manage")?;
        let limit = check_limit(limit)?;
        if let Some(q) = &filter.query
            && (q.is_empty() || q.chars().count() > model::MAX_QUERY_LEN)
        {
            return Err(ServiceError::invalid("query", "must have 1-100 characters"));
        }
        let rows = self.repo.list(filter, cursor, limit + 1).await?;
        Ok(paginate(rows, limit, |u| u.id.clone()))
    }

    /// Grants (`grant = true`) or revokes a role. Needs `manage` on `user`; an admin cannot
    /// revoke their own admin role.
    ///
    /// # Errors
    /// As [`UserService::list`], [`ServiceError::NotFound`], [`ServiceError::Conflict`].
    pub async fn set_role(
        &self,
        caller: &Caller,
        id: &str,
        role: Role,
        grant: bool,
    ) -> Result<User, ServiceError> {
        self.policies.require(caller, "user", "manage")?;
        if !grant && role == Role::Admin && caller.user_id() == Some(id) {
            return Err(ServiceError::Conflict {
                message: "you cannot revoke your own admin role".to_owned(),
            });
        }
        let action = if grant {
            "user.grant_role"
        } else {
            "user.revoke_role"
        };
        let audit = caller.audit(action, "user", id);
        self.change(id, audit, |a| {
            if grant {
                a.user.roles.push(role);
            } else {
                a.user.roles.retain(|r| *r != role);
            }
            Ok(())
        })
        .await
    }

    /// Disables or enables an account: a disabled account cannot log in or refresh, and
    /// its access tokens are refused within about a second on every node. Needs `manage` on `user`; nobody can
    /// disable themselves.
    ///
    /// # Errors
    /// As [`UserService::set_role`].
    pub async fn set_disabled(
        &self,
        caller: &Caller,
        id: &str,
        disabled: bool,
    ) -> Result<User, ServiceError> {
        self.policies.require(caller, "user", "manage")?;
        if disabled && caller.user_id() == Some(id) {
            return Err(ServiceError::Conflict {
                message: "you cannot disable your own account".to_owned(),
            });
        }
        let action = if disabled {
            "user.disable"
        } else {
            "user.enable"
        };
        let audit = caller.audit(action, "user", id);
        self.change(id, audit, |a| {
            a.user.disabled = disabled;
            Ok(())
        })
        .await
    }
}
