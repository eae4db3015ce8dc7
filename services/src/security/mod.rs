//! The security service: who the caller is ([`Caller`]), what each role may do (RBAC
//! [`Policies`], table `service_security_policy`), and the audit log (table
//! `service_security_audit`, one row per mutating call, written by the repository of the change
//! in the change's own transaction through [`audit::insert!`]; the rows of events published and
//! messages sent, which change nothing stored, go through the [`deferred`] writer so that a
//! publish does not wait on the database).
//!
//! Every service method takes the [`Caller`] and asks [`Policies::require`] before it does
//! anything, so REST and gRPC (thin adapters) enforce the same rules.

pub mod audit;
pub mod deferred;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::db::on_pool;
use crate::{Database, ServiceError};

pub use audit::{AuditEntry, AuditFilter, AuditRecord};
pub use deferred::{DeferError, DeferredAudit, DeferredConfig};

/// The roles a user can hold.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    User,
    CampaignManager,
    Admin,
    /// Writes translations (resource `localization`).
    LocalizationManager,
    /// Writes markets and price rules, and reads the rules (resource `babel`).
    PricingManager,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::User,
        Role::CampaignManager,
        Role::Admin,
        Role::LocalizationManager,
        Role::PricingManager,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::CampaignManager => "campaign_manager",
            Self::Admin => "admin",
            Self::LocalizationManager => "localization_manager",
            Self::PricingManager => "pricing_manager",
        }
    }

    /// The role named `s`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] naming the accepted roles.
    pub fn parse(s: &str) -> Result<Self, ServiceError> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                ServiceError::invalid(
                    "role",
                    format!(
                        "unknown role {s:?}; expected user, campaign_manager, admin, \
                         localization_manager or pricing_manager"
                    ),
                )
            })
    }
}

/// Who makes a call: an authenticated user with roles, an anonymous client, or the node itself
/// (start-up tasks, tests' fixtures), with the client's address for the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    kind: CallerKind,
    /// The client's address (`ip:port`), when the call came over the network.
    pub addr: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum CallerKind {
    Anonymous,
    System,
    User { id: String, roles: Vec<Role> },
}

impl Caller {
    /// An unauthenticated client.
    pub fn anonymous() -> Self {
        Self {
            kind: CallerKind::Anonymous,
            addr: None,
        }
    }

    /// The node itself: allowed everything, audited as `system`.
    pub fn system() -> Self {
        Self {
            kind: CallerKind::System,
            addr: None,
        }
    }

    /// An authenticated user.
    pub fn user(id: impl Into<String>, roles: Vec<Role>) -> Self {
        Self {
            kind: CallerKind::User {
                id: id.into(),
                roles,
            },
            addr: None,
        }
    }

    /// The same caller, seen from `addr`.
    #[must_use]
    pub fn from_addr(mut self, addr: impl Into<String>) -> Self {
        self.addr = Some(addr.into());
        self
    }

    /// The user id, when authenticated.
    pub fn user_id(&self) -> Option<&str> {
        match &self.kind {
            CallerKind::User { id, .. } => Some(id),
            _ => None,
        }
    }

    /// The user id, or [`ServiceError::Unauthenticated`].
    ///
    /// # Errors
    /// [`ServiceError::Unauthenticated`] for anonymous and system callers.
    pub fn require_user(&self) -> Result<&str, ServiceError> {
        self.user_id().ok_or_else(|| ServiceError::Unauthenticated {
            message: "this call needs a signed-in user (Authorization: Bearer <token>)".to_owned(),
        })
    }

    pub fn roles(&self) -> &[Role] {
        match &self.kind {
            CallerKind::User { roles, .. } => roles,
            _ => &[],
        }
    }

    pub fn is_system(&self) -> bool {
        self.kind == CallerKind::System
    }

    pub fn is_anonymous(&self) -> bool {
        self.kind == CallerKind::Anonymous
    }

    pub fn has_role(&self, role: Role) -> bool {
        self.roles().contains(&role)
    }

    /// The actor written to the audit log: the user id, `anonymous` or `system`.
    pub fn actor(&self) -> &str {
        match &self.kind {
            CallerKind::Anonymous => "anonymous",
            CallerKind::System => "system",
            CallerKind::User { id, .. } => id,
        }
    }

    /// Starts an audit record of `action` on `entity_type`/`entity_id` by this caller.
    pub fn audit(&self, action: &str, entity_type: &str, entity_id: &str) -> AuditRecord {
        AuditRecord::new(self, action, entity_type, entity_id)
    }
}

/// One rule: `role` may do `action` on `resource` (`*` matches any).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Policy {
    pub role: String,
    pub resource: String,
    pub action: String,
}

/// Role → resource → actions: looked up with borrowed keys, so a check allocates nothing.
type Rules = HashMap<String, HashMap<String, HashSet<String>>>;

/// The RBAC rules, loaded from `service_security_policy` and kept in memory.
#[derive(Clone, Debug)]
pub struct Policies {
    db: Database,
    rules: Arc<RwLock<Rules>>,
}

impl Policies {
    /// Loads the rules.
    ///
    /// # Errors
    /// Database failures.
    pub async fn load(db: Database) -> Result<Self, ServiceError> {
        let p = Self {
            db,
            rules: Arc::new(RwLock::new(Rules::new())),
        };
        p.reload().await?;
        Ok(p)
    }

    /// Re-reads the rules from the database.
    ///
    /// # Errors
    /// Database failures.
    pub async fn reload(&self) -> Result<(), ServiceError> {
        const SQL: &str = "SELECT role, resource, action FROM service_security_policy";
        let rows: Vec<(String, String, String)> = on_pool!(&self.db, SQL, SQL, |pool, sql| {
            sqlx::query_as(*sql).fetch_all(pool).await?
        });
        let mut rules = Rules::new();
        for (role, resource, action) in rows {
            rules
                .entry(role)
                .or_default()
                .entry(resource)
                .or_default()
                .insert(action);
        }
        *self.rules.write().unwrap_or_else(|e| e.into_inner()) = rules;
        Ok(())
    }

    /// Every rule, sorted.
    pub fn list(&self) -> Vec<Policy> {
        let rules = self.rules.read().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<Policy> = rules
            .iter()
            .flat_map(|(role, resources)| {
                resources.iter().flat_map(move |(resource, actions)| {
                    actions.iter().map(move |action| Policy {
                        role: role.clone(),
                        resource: resource.clone(),
                        action: action.clone(),
                    })
                })
            })
            .collect();
        v.sort_by(|a, b| (&a.role, &a.resource, &a.action).cmp(&(&b.role, &b.resource, &b.action)));
        v
    }

    /// A page of the rules, sorted; the cursor is the last rule's `role/resource/action`.
    /// Needs `read` on `policy`.
    ///
    /// # Errors
    /// [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`], [`ServiceError::Invalid`]
    /// for a bad limit.
    pub fn page(
        &self,
        caller: &Caller,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<crate::page::Page<Policy>, ServiceError> {
        self.require(caller, "policy", "read")?;
        let limit = crate::page::check_limit(limit)?;
        let key = |p: &Policy| format!("{}/{}/{}", p.role, p.resource, p.action);
        // The cursor is compared as the tuple the list is sorted by.
        let after = cursor.map(|c| {
            let mut parts = c.splitn(3, '/');
            (
                parts.next().unwrap_or_default().to_owned(),
                parts.next().unwrap_or_default().to_owned(),
                parts.next().unwrap_or_default().to_owned(),
            )
        });
        let rows: Vec<Policy> = self
            .list()
            .into_iter()
            .filter(|p| {
                after
                    .as_ref()
                    .is_none_or(|(r, s, a)| (&p.role, &p.resource, &p.action) > (r, s, a))
            })
            .take(limit as usize + 1)
            .collect();
        Ok(crate::page::paginate(rows, limit, key))
    }

    fn role_allows(&self, role: &str, resource: &str, action: &str) -> bool {
        let rules = self.rules.read().unwrap_or_else(|e| e.into_inner());
        let Some(resources) = rules.get(role) else {
            return false;
        };
        [resource, "*"]
            .iter()
            .filter_map(|r| resources.get(*r))
            .any(|actions| actions.contains(action) || actions.contains("*"))
    }

    /// Whether `caller` may do `action` on `resource`.
    pub fn allows(&self, caller: &Caller, resource: &str, action: &str) -> bool {
        match &caller.kind {
            CallerKind::System => true,
            CallerKind::Anonymous => self.role_allows("anonymous", resource, action),
            CallerKind::User { roles, .. } => roles
                .iter()
                .any(|r| self.role_allows(r.as_str(), resource, action)),
        }
    }

    /// `Ok` when `caller` may do `action` on `resource`.
    ///
    /// # Errors
    /// [`ServiceError::Unauthenticated`] for an anonymous caller that would need to sign in,
    /// [`ServiceError::Forbidden`] for a user whose roles do not allow it.
    pub fn require(
        &self,
        caller: &Caller,
        resource: &str,
        action: &str,
    ) -> Result<(), ServiceError> {
        if self.allows(caller, resource, action) {
            return Ok(());
        }
        if caller.is_anonymous() {
            return Err(ServiceError::Unauthenticated {
                message: format!("{action} on {resource} needs a signed-in user"),
            });
        }
        Err(ServiceError::Forbidden {
            message: format!(
                "your roles ({}) do not allow {action} on {resource}",
                caller
                    .roles()
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
    }
}
