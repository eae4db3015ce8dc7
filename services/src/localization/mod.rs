//! The localization service: translations by namespace, key and locale, in Fluent syntax (plural
//! and select forms), looked up through a fallback chain and formatted with arguments. Table
//! `service_localization_message`.
//!
//! # Rules
//! * Resource `localization`: `read` (anonymous too) for lookups, lists, exports and reports;
//!   `write` (roles `localization_manager` and `admin`) for puts, deletes and imports.
//! * Locales are BCP 47 language identifiers, stored in canonical form ([`locale`]). A lookup
//!   for `fr-CA` tries `fr-CA`, then `fr`, then the configured default locale
//!   ([`LocalizationConfig::default_locale`], `en` unless configured) and its own parents; the
//!   first locale that has the key formats it, with that locale's plural rules.
//! * A message is checked when it is written ([`message::parse`]); formatting never returns a
//!   half-formatted text: a variable the message uses and the arguments lack is a 400 naming it.
//! * Every change writes its audit row in its own transaction: `localization.put`,
//!   `localization.delete` (entity `localization_message`, id `namespace/locale/key`),
//!   `localization.import` (entity `localization_namespace`, id `namespace/locale`).
//! * Lookups read a per-node cache of bundles (one per namespace and locale), forgotten on every
//!   change made through this node and refreshed after [`LocalizationConfig::cache_ttl`]
//!   otherwise (changes made on another node show after at most that long).
//!
//! # Layout
//! * [`locale`]: tags and the fallback chain; [`message`]: Fluent parsing and formatting;
//!   [`model`]: records and requests; `repo`: storage.

pub mod locale;
pub mod message;
pub mod model;
mod repo;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use unic_langid::LanguageIdentifier;

pub use crate::page::Page;
pub use model::{
    Export, FormatRequest, Formatted, Import, ImportResult, Message, MessageFilter, MessageText,
    MissingKey, NamespaceSummary,
};

use crate::page::{check_limit, paginate};
use crate::security::{Caller, Policies};
use crate::time::{now_ms, rfc3339};
use crate::{Database, ServiceError};
use message::Bundle;
use repo::LocalizationRepo;

/// The resource every policy check names.
const RESOURCE: &str = "localization";
/// Most bundles a node caches; past it the cache starts over.
const MAX_CACHED_BUNDLES: usize = 4_096;

/// How the service is configured.
#[derive(Debug, Clone)]
pub struct LocalizationConfig {
    /// Where every fallback chain ends (BCP 47).
    pub default_locale: String,
    /// How long a cached bundle is used before it is read again (changes made on other nodes
    /// take this long at most to show here). Zero: no cache.
    pub cache_ttl: Duration,
}

impl Default for LocalizationConfig {
    fn default() -> Self {
        Self {
            default_locale: "en".to_owned(),
            cache_ttl: Duration::from_secs(10),
        }
    }
}

/// namespace → locale → (when read, bundle).
type Bundles = HashMap<String, HashMap<String, (Instant, Arc<Bundle>)>>;

/// Translation operations.
#[derive(Clone, Debug)]
pub struct LocalizationService {
    repo: LocalizationRepo,
    policies: Policies,
    default_locale: Arc<LanguageIdentifier>,
    ttl: Duration,
    bundles: Arc<RwLock<Bundles>>,
}

impl LocalizationService {
    /// # Errors
    /// [`ServiceError::Invalid`] naming `default_locale` when it is not a BCP 47 tag.
    pub fn new(
        db: Database,
        policies: Policies,
        config: LocalizationConfig,
    ) -> Result<Self, ServiceError> {
        let default_locale = locale::parse("default_locale", &config.default_locale)?;
        Ok(Self {
            repo: LocalizationRepo::new(db),
            policies,
            default_locale: Arc::new(default_locale),
            ttl: config.cache_ttl,
            bundles: Arc::new(RwLock::new(Bundles::new())),
        })
    }

    /// The locale every fallback chain ends with.
    pub fn default_locale(&self) -> String {
        self.default_locale.to_string()
    }

    /// Creates or replaces the message (`namespace`, `locale`, `key`) after checking its
    /// Fluent syntax. Returns the message and whether it was created. Needs `write`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] naming the field (namespace, locale, key, value with the
    /// parser's error), [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`].
    pub async fn put(
        &self,
        caller: &Caller,
        namespace: &str,
        locale: &str,
        key: &str,
        body: MessageText,
    ) -> Result<(Message, bool), ServiceError> {
        self.policies.require(caller, RESOURCE, "write")?;
        let (namespace, locale) = self.scope(namespace, locale)?;
        model::validate_key("key", key)?;
        message::parse("value", key, &body.value)?;
        let at = now_ms();
        let m = Message {
            namespace: namespace.to_owned(),
            key: key.to_owned(),
            locale: locale.clone(),
            value: body.value,
            updated_by: caller.actor().to_owned(),
            created_at: rfc3339(at),
            updated_at: rfc3339(at),
        };
        let id = format!("{namespace}/{locale}/{key}");
        let audit = caller.audit("localization.put", "localization_message", &id);
        let (before, after) = self.repo.put(&m, at, audit).await?;
        self.forget(namespace, &locale);
        Ok((after, before.is_none()))
    }

    /// The stored message (no fallback). Needs `read`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`], [`ServiceError::NotFound`],
    /// [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`].
    pub async fn get(
        &self,
        caller: &Caller,
        namespace: &str,
        locale: &str,
        key: &str,
    ) -> Result<Message, ServiceError> {
        self.policies.require(caller, RESOURCE, "read")?;
        let (namespace, locale) = self.scope(namespace, locale)?;
        model::validate_key("key", key)?;
        self.repo
            .get(namespace, &locale, key)
            .await?
            .ok_or_else(|| repo::not_found(namespace, &locale, key))
    }

    /// Deletes a message. Needs `write`.
    ///
    /// # Errors
    /// As [`LocalizationService::get`].
    pub async fn delete(
        &self,
        caller: &Caller,
        namespace: &str,
        locale: &str,
        key: &str,
    ) -> Result<(), ServiceError> {
        self.policies.require(caller, RESOURCE, "write")?;
        let (namespace, locale) = self.scope(namespace, locale)?;
        model::validate_key("key", key)?;
        let id = format!("{namespace}/{locale}/{key}");
        let audit = caller.audit("localization.delete", "localization_message", &id);
        self.repo.delete(namespace, &locale, key, audit).await?;
        self.forget(namespace, &locale);
        Ok(())
    }

    /// A page of a namespace's messages, by locale then key; the cursor is `locale:key`.
    /// Needs `read`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] (namespace, locale, key prefix, limit, cursor),
    /// [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`].
    pub async fn list(
        &self,
        caller: &Caller,
        mut filter: MessageFilter,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<Page<Message>, ServiceError> {
        self.policies.require(caller, RESOURCE, "read")?;
        model::validate_namespace(&filter.namespace)?;
        filter.locale = filter
            .locale
            .map(|l| locale::canonical("locale", &l))
            .transpose()?;
        if let Some(p) = &filter.key_prefix {
            model::validate_key("key_prefix", p)?;
        }
        let limit = check_limit(limit)?;
        let after = cursor
            .map(|c| {
                c.split_once(':')
                    .ok_or_else(|| ServiceError::invalid("cursor", "not a cursor of this list"))
            })
            .transpose()?;
        let rows = self.repo.list(&filter, after, limit + 1).await?;
        Ok(paginate(rows, limit, |m| format!("{}:{}", m.locale, m.key)))
    }

    /// Every message of a namespace in a locale, in the shape [`LocalizationService::import`]
    /// takes. Needs `read`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`], [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`].
    pub async fn export(
        &self,
        caller: &Caller,
        namespace: &str,
        locale: &str,
    ) -> Result<Export, ServiceError> {
        self.policies.require(caller, RESOURCE, "read")?;
        let (namespace, locale) = self.scope(namespace, locale)?;
        let messages = self
            .repo
            .all(namespace, &locale)
            .await?
            .into_iter()
            .collect();
        Ok(Export {
            namespace: namespace.to_owned(),
            locale,
            messages,
        })
    }

    /// Writes the messages of a namespace in a locale in one transaction (all or none, every
    /// message checked first); with `replace`, deletes the ones `import` does not name. Needs
    /// `write`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] naming `messages.<key>` for the first bad key or message,
    /// `messages` for too many; [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`].
    pub async fn import(
        &self,
        caller: &Caller,
        namespace: &str,
        locale: &str,
        import: Import,
    ) -> Result<ImportResult, ServiceError> {
        self.policies.require(caller, RESOURCE, "write")?;
        let (namespace, locale) = self.scope(namespace, locale)?;
        if import.messages.len() > model::MAX_IMPORT {
            return Err(ServiceError::invalid(
                "messages",
                format!("at most {} messages per import", model::MAX_IMPORT),
            ));
        }
        for (key, value) in &import.messages {
            let field = format!("messages.{key}");
            model::validate_key(&field, key)?;
            message::parse(&field, key, value)?;
        }
        let id = format!("{namespace}/{locale}");
        let audit = caller.audit("localization.import", "localization_namespace", &id);
        let export = Export {
            namespace: namespace.to_owned(),
            locale: locale.clone(),
            messages: import.messages,
        };
        let result = self
            .repo
            .import(&export, import.replace, caller.actor(), now_ms(), audit)
            .await?;
        self.forget(namespace, &locale);
        Ok(result)
    }

    /// The keys of a namespace and how complete each of its locales is. Needs `read`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`], [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`].
    pub async fn summary(
        &self,
        caller: &Caller,
        namespace: &str,
    ) -> Result<NamespaceSummary, ServiceError> {
        self.policies.require(caller, RESOURCE, "read")?;
        model::validate_namespace(namespace)?;
        let (keys, locales) = self.repo.summary(namespace).await?;
        Ok(NamespaceSummary {
            namespace: namespace.to_owned(),
            default_locale: self.default_locale(),
            keys,
            locales,
        })
    }

    /// A page of the keys of `namespace` (in any locale) that `locale` lacks, by key; the
    /// cursor is the last key. Needs `read`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`], [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`].
    pub async fn missing(
        &self,
        caller: &Caller,
        namespace: &str,
        locale: &str,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<Page<MissingKey>, ServiceError> {
        self.policies.require(caller, RESOURCE, "read")?;
        let (namespace, locale) = self.scope(namespace, locale)?;
        let limit = check_limit(limit)?;
        let rows = self
            .repo
            .missing(namespace, &locale, cursor, limit + 1)
            .await?;
        Ok(paginate(rows, limit, |m| m.key.clone()))
    }

    /// Formats the message `key` of `namespace` for `locale` with `args`: the first locale of
    /// the fallback chain that has the key wins. Needs `read`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] (a bad field, an argument the message needs and lacks:
    /// `args.<name>`), [`ServiceError::NotFound`] when no locale of the chain has the key,
    /// [`ServiceError::Conflict`] for a stored message that cannot be formatted,
    /// [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`].
    pub async fn format(
        &self,
        caller: &Caller,
        req: &FormatRequest,
    ) -> Result<Formatted, ServiceError> {
        self.policies.require(caller, RESOURCE, "read")?;
        model::validate_namespace(&req.namespace)?;
        model::validate_key("key", &req.key)?;
        let requested = locale::parse("locale", &req.locale)?;
        // Checked before anything is read; built again where it is used (Fluent arguments
        // are not `Sync`, so they are not held across an await).
        message::arguments(&req.args)?;
        let chain = locale::fallback_chain(&requested, &self.default_locale);
        for candidate in &chain {
            let tag = candidate.to_string();
            let bundle = self.bundle(&req.namespace, candidate, &tag).await?;
            if bundle.has(&req.key) {
                let args = message::arguments(&req.args)?;
                let args = (!req.args.is_empty()).then_some(&args);
                let text = bundle.format(&req.key, args)?;
                return Ok(Formatted {
                    namespace: req.namespace.clone(),
                    key: req.key.clone(),
                    fallback: *candidate != requested,
                    requested_locale: requested.to_string(),
                    locale: tag,
                    text,
                });
            }
        }
        Err(ServiceError::NotFound {
            entity: "message",
            id: format!(
                "{}/{} (looked up in {})",
                req.namespace,
                req.key,
                chain
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
    }

    /// A checked namespace and the canonical form of `locale`.
    fn scope<'a>(
        &self,
        namespace: &'a str,
        locale: &str,
    ) -> Result<(&'a str, String), ServiceError> {
        model::validate_namespace(namespace)?;
        Ok((namespace, locale::canonical("locale", locale)?))
    }

    /// The bundle of `namespace` in `locale` (`tag` is its text), from the cache or the
    /// database.
    async fn bundle(
        &self,
        namespace: &str,
        locale: &LanguageIdentifier,
        tag: &str,
    ) -> Result<Arc<Bundle>, ServiceError> {
        if !self.ttl.is_zero() {
            let cache = self.bundles.read().unwrap_or_else(|e| e.into_inner());
            if let Some((at, b)) = cache.get(namespace).and_then(|m| m.get(tag))
                && at.elapsed() < self.ttl
            {
                return Ok(b.clone());
            }
        }
        let read_at = Instant::now();
        let messages = self.repo.all(namespace, tag).await?;
        let bundle = Arc::new(Bundle::new(locale.clone(), messages));
        if !self.ttl.is_zero() {
            let mut cache = self.bundles.write().unwrap_or_else(|e| e.into_inner());
            if cache.values().map(HashMap::len).sum::<usize>() >= MAX_CACHED_BUNDLES {
                cache.clear();
            }
            cache
                .entry(namespace.to_owned())
                .or_default()
                .insert(tag.to_owned(), (read_at, bundle.clone()));
        }
        Ok(bundle)
    }

    /// Drops the cached bundle of `namespace` in `locale` (after a change).
    fn forget(&self, namespace: &str, locale: &str) {
        let mut cache = self.bundles.write().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = cache.get_mut(namespace) {
            m.remove(locale);
        }
    }
}
