//! The content service: posts (articles, micro-posts, videos), their threaded comments,
//! per-user reactions, and full-text search. Tables `service_content_main`,
//! `service_content_comment`, `service_content_reaction`, and on SQLite the FTS5 index
//! `service_content_search` (Postgres searches a generated `tsvector` column instead).
//!
//! # Rules
//! * Resource `content`: `read` (anonymous too) for every read; `create`, `comment` and
//!   `react` for those calls. The author of a post or comment may change or delete it;
//!   anyone else needs `update` or `delete` on `content`.
//! * Every change writes its audit row in its own transaction: `content.create`,
//!   `content.update`, `content.delete` (entity `content`); `content.comment`,
//!   `content.comment_update`, `content.comment_delete` (entity `comment`); `content.react`,
//!   `content.unreact` (entity `content`; written only when the reaction set changed).
//! * Deletion is a hard delete: a post takes its comments, reactions and index entry with
//!   it, a comment takes its replies; the audit row keeps what was deleted.
//! * Lists: posts newest first (UUID v7 order; cursor = the last id), comments oldest first
//!   (cursor = the last id), search hits best first (cursor = an offset).
//! * Search treats the query as data: its words (runs of letters and digits) must all match,
//!   in any order, case-insensitively; punctuation and operators are ignored.
//!
//! # Layout
//! * `model`: records, requests and field rules; `repo`: storage.

pub mod model;
mod repo;

pub use crate::page::{DEFAULT_PAGE, MAX_PAGE, Page};
pub use model::{
    Comment, Content, ContentPatch, Kind, NewComment, NewContent, ReactionCounts, SearchHit,
};

use serde_json::json;

use crate::json::merge_patch;
use crate::nexus::{Event, EventBus};
use crate::page::{check_limit, paginate};
use crate::security::{Caller, Policies};
use crate::time::{now_ms, rfc3339};
use crate::{Database, ServiceError};
use repo::{ContentRepo, comment_not_found, content_not_found};

/// The resource every policy check names.
const RESOURCE: &str = "content";

/// Content operations.
#[derive(Clone, Debug)]
pub struct ContentService {
    repo: ContentRepo,
    policies: Policies,
    /// Where `content.created` and `content.updated` go after commit.
    events: EventBus,
}

impl ContentService {
    pub fn new(db: Database, policies: Policies) -> Self {
        Self {
            repo: ContentRepo::new(db),
            policies,
            events: EventBus::default(),
        }
    }

    /// Publishes `content.created` and `content.updated` (payload: the item's `id`, `kind`,
    /// `author_id`, `title` and `tags`) on `events` after each commit.
    #[must_use]
    pub fn with_events(mut self, events: EventBus) -> Self {
        self.events = events;
        self
    }

    fn publish(&self, name: &'static str, c: &Content) {
        self.events.publish(Event {
            name,
            id: format!("{}@{}", c.id, c.updated_at),
            payload: serde_json::json!({
                "id": c.id, "kind": c.kind.as_str(), "author_id": c.author_id,
                "title": c.title, "tags": c.tags,
            }),
        });
    }

    /// The policies every method checks.
    pub fn policies(&self) -> &Policies {
        &self.policies
    }

    /// Callers that cannot be an author (anonymous) must hold `action` outright: they learn
    /// it before anything is read.
    fn require_if_not_user(&self, caller: &Caller, action: &str) -> Result<(), ServiceError> {
        if caller.user_id().is_none() {
            self.policies.require(caller, RESOURCE, action)?;
        }
        Ok(())
    }

    /// The author of an entity may change it; anyone else needs `action` on `content`.
    fn require_author_or(
        policies: &Policies,
        caller: &Caller,
        author_id: &str,
        action: &str,
    ) -> Result<(), ServiceError> {
        if caller.user_id() == Some(author_id) {
            return Ok(());
        }
        policies.require(caller, RESOURCE, action)
    }

    /// Creates a post authored by the caller. Needs `create` on `content`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] (field named), [`ServiceError::Unauthenticated`]/
    /// [`ServiceError::Forbidden`].
    pub async fn create(&self, caller: &Caller, new: NewContent) -> Result<Content, ServiceError> {
        self.policies.require(caller, RESOURCE, "create")?;
        let kind = Kind::parse(&new.kind)?;
        let title = model::validate_title(kind, &new.title)?;
        model::validate_body(kind, &new.body)?;
        model::validate_url(kind, new.url.as_deref())?;
        model::validate_tags(&new.tags)?;
        let metadata = new
            .metadata
            .unwrap_or_else(crate::campaign::model::empty_object);
        model::validate_metadata(&metadata)?;
        let at = now_ms();
        let c = Content {
            id: uuid::Uuid::now_v7().to_string(),
            kind,
            author_id: caller.actor().to_owned(),
            title,
            body: new.body,
            url: new.url,
            tags: new.tags,
            metadata,
            created_at: rfc3339(at),
            updated_at: rfc3339(at),
        };
        let audit = caller.audit("content.create", "content", &c.id).after(&c);
        self.repo.insert(&c, at, &audit).await?;
        tracing::info!(content = %c.id, kind = kind.as_str(), author = %c.author_id, "content created");
        self.publish(crate::nexus::CONTENT_CREATED, &c);
        Ok(c)
    }

    /// The post with this id. Needs `read` on `content`.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`], [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`].
    pub async fn get(&self, caller: &Caller, id: &str) -> Result<Content, ServiceError> {
        self.policies.require(caller, RESOURCE, "read")?;
        self.find(id).await
    }

    async fn find(&self, id: &str) -> Result<Content, ServiceError> {
        self.repo
            .get(id)
            .await?
            .ok_or_else(|| content_not_found(id))
    }

    /// Changes the fields the patch names (see [`ContentPatch`]) and checks the result as a
    /// whole (a video keeps its url, a micro-post's body stays short). The author may; anyone
    /// else needs `update` on `content`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] (an empty patch, a bad field), [`ServiceError::NotFound`],
    /// [`ServiceError::Conflict`] (a field this post's kind does not allow: no title for an
    /// article or video, no url for a video, an empty or long body for a micro-post),
    /// [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`].
    pub async fn update(
        &self,
        caller: &Caller,
        id: &str,
        patch: ContentPatch,
    ) -> Result<Content, ServiceError> {
        self.require_if_not_user(caller, "update")?;
        if patch.is_empty() {
            return Err(ServiceError::invalid(
                "patch",
                "names no field to change (title, body, url, tags, metadata)",
            ));
        }
        // What the patch says on its own (400), with the rules of the kind that allows most;
        // what it says about this post's kind (a video's url, a micro-post's body) is a
        // conflict with the post (409), below.
        if let Some(title) = &patch.title {
            model::validate_title(Kind::Micro, title)?;
        }
        if let Some(body) = &patch.body {
            model::validate_body(Kind::Article, body)?;
        }
        if let Some(Some(url)) = &patch.url {
            model::validate_url(Kind::Article, Some(url))?;
        }
        if let Some(tags) = &patch.tags {
            model::validate_tags(tags)?;
        }
        let audit = caller.audit("content.update", "content", id);
        let policies = &self.policies;
        let after = self
            .repo
            .update(id, now_ms(), audit, |c| {
                Self::require_author_or(policies, caller, &c.author_id, "update")?;
                if let Some(title) = patch.title {
                    c.title = title;
                }
                if let Some(body) = patch.body {
                    c.body = body;
                }
                if let Some(url) = patch.url {
                    c.url = url;
                }
                if let Some(tags) = patch.tags {
                    c.tags = tags;
                }
                if let Some(m) = &patch.metadata {
                    merge_patch(&mut c.metadata, m);
                }
                let kind = c.kind;
                let for_kind = |e: ServiceError| match e {
                    ServiceError::Invalid { field, message } => ServiceError::Conflict {
                        message: format!("{field}: {message} (the post is a {})", kind.as_str()),
                    },
                    other => other,
                };
                c.title = model::validate_title(kind, &c.title).map_err(for_kind)?;
                model::validate_body(kind, &c.body).map_err(for_kind)?;
                model::validate_url(kind, c.url.as_deref()).map_err(for_kind)?;
                model::validate_metadata(&c.metadata)?;
                Ok(())
            })
            .await?;
        tracing::info!(content = %after.id, actor = caller.actor(), "content updated");
        self.publish(crate::nexus::CONTENT_UPDATED, &after);
        Ok(after)
    }

    /// Deletes the post with its comments and reactions. The author may; anyone else needs
    /// `delete` on `content`.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`], [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`].
    pub async fn delete(&self, caller: &Caller, id: &str) -> Result<(), ServiceError> {
        self.require_if_not_user(caller, "delete")?;
        let audit = caller.audit("content.delete", "content", id);
        let policies = &self.policies;
        self.repo
            .delete(id, audit, |c| {
                Self::require_author_or(policies, caller, &c.author_id, "delete")
            })
            .await?;
        tracing::info!(content = %id, actor = caller.actor(), "content deleted");
        Ok(())
    }

    /// A page of posts, newest first, optionally of one kind and/or one author; the cursor
    /// is the last id of the previous page. Needs `read` on `content`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] for a limit out of 1–500,
    /// [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`].
    pub async fn list(
        &self,
        caller: &Caller,
        kind: Option<Kind>,
        author_id: Option<&str>,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<Page<Content>, ServiceError> {
        self.policies.require(caller, RESOURCE, "read")?;
        let limit = check_limit(limit)?;
        let items = self.repo.list(kind, author_id, cursor, limit + 1).await?;
        Ok(paginate(items, limit, |c| c.id.clone()))
    }

    /// Full-text search over titles (weighted above bodies) and bodies, best first. Every
    /// word of `query` must match; the query is never parsed as search or SQL syntax. The
    /// cursor is the offset of the next page (at most 10,000). Needs `read` on `content`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] for an empty or over-long query (256 characters, 32 words),
    /// a bad limit or cursor; [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`].
    pub async fn search(
        &self,
        caller: &Caller,
        query: &str,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<Page<SearchHit>, ServiceError> {
        self.policies.require(caller, RESOURCE, "read")?;
        let limit = check_limit(limit)?;
        let offset = model::search_offset(cursor)?;
        let Some(expression) = model::search_expression(query)? else {
            return Ok(Page {
                items: Vec::new(),
                next_cursor: None,
            });
        };
        let mut items = self.repo.search(&expression, limit + 1, offset).await?;
        let next = offset + u64::from(limit);
        let next_cursor = if items.len() > limit as usize {
            items.truncate(limit as usize);
            (next <= model::MAX_SEARCH_OFFSET).then(|| next.to_string())
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    /// Comments on a post, as the caller; a reply names its parent, which must be a comment
    /// of the same post. Needs `comment` on `content`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] (body), [`ServiceError::NotFound`] for an unknown post or a
    /// parent that is no comment of it (entity `parent comment`),
    /// [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`].
    pub async fn add_comment(
        &self,
        caller: &Caller,
        content_id: &str,
        new: NewComment,
    ) -> Result<Comment, ServiceError> {
        self.policies.require(caller, RESOURCE, "comment")?;
        model::validate_comment(&new.body)?;
        let at = now_ms();
        let c = Comment {
            id: uuid::Uuid::now_v7().to_string(),
            content_id: content_id.to_owned(),
            parent_id: new.parent_id,
            author_id: caller.actor().to_owned(),
            body: new.body,
            created_at: rfc3339(at),
            updated_at: rfc3339(at),
        };
        let audit = caller.audit("content.comment", "comment", &c.id).after(&c);
        self.repo.insert_comment(&c, at, &audit).await?;
        tracing::info!(content = %content_id, comment = %c.id, "comment added");
        Ok(c)
    }

    /// Replaces a comment's body. The author may; anyone else needs `update` on `content`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`], [`ServiceError::NotFound`],
    /// [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`].
    pub async fn update_comment(
        &self,
        caller: &Caller,
        comment_id: &str,
        body: &str,
    ) -> Result<Comment, ServiceError> {
        self.require_if_not_user(caller, "update")?;
        model::validate_comment(body)?;
        let audit = caller.audit("content.comment_update", "comment", comment_id);
        let policies = &self.policies;
        self.repo
            .update_comment(comment_id, now_ms(), audit, |c| {
                Self::require_author_or(policies, caller, &c.author_id, "update")?;
                body.clone_into(&mut c.body);
                Ok(())
            })
            .await
    }

    /// Deletes a comment and its replies. The author may; anyone else needs `delete` on
    /// `content`.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`], [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`].
    pub async fn delete_comment(
        &self,
        caller: &Caller,
        comment_id: &str,
    ) -> Result<(), ServiceError> {
        self.require_if_not_user(caller, "delete")?;
        let audit = caller.audit("content.comment_delete", "comment", comment_id);
        let policies = &self.policies;
        self.repo
            .delete_comment(comment_id, audit, |c| {
                Self::require_author_or(policies, caller, &c.author_id, "delete")
            })
            .await?;
        Ok(())
    }

    /// The comment with this id. Needs `read` on `content`.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`], [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`].
    pub async fn get_comment(
        &self,
        caller: &Caller,
        comment_id: &str,
    ) -> Result<Comment, ServiceError> {
        self.policies.require(caller, RESOURCE, "read")?;
        self.repo
            .get_comment(comment_id)
            .await?
            .ok_or_else(|| comment_not_found(comment_id))
    }

    /// A page of a post's comments in creation order (replies among them, each naming its
    /// parent); the cursor is the last id of the previous page. Needs `read` on `content`.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`] for an unknown post, [`ServiceError::Invalid`] for a bad
    /// limit, [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`].
    pub async fn list_comments(
        &self,
        caller: &Caller,
        content_id: &str,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<Page<Comment>, ServiceError> {
        self.policies.require(caller, RESOURCE, "read")?;
        let limit = check_limit(limit)?;
        self.find(content_id).await?;
        let items = self
            .repo
            .list_comments(content_id, cursor, limit + 1)
            .await?;
        Ok(paginate(items, limit, |c| c.id.clone()))
    }

    /// Adds the caller's reaction of `kind` (1–32 characters of `[a-z0-9_]`) to a post; a
    /// second identical reaction changes nothing. Needs `react` on `content` and a signed-in
    /// user. Returns the counts after.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] for a bad kind, [`ServiceError::NotFound`],
    /// [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`].
    pub async fn react(
        &self,
        caller: &Caller,
        content_id: &str,
        kind: &str,
    ) -> Result<ReactionCounts, ServiceError> {
        self.set_reaction(caller, content_id, kind, true).await
    }

    /// Removes the caller's reaction of `kind`; removing one that is not there changes
    /// nothing. Needs `react` on `content` and a signed-in user. Returns the counts after.
    ///
    /// # Errors
    /// As [`ContentService::react`].
    pub async fn unreact(
        &self,
        caller: &Caller,
        content_id: &str,
        kind: &str,
    ) -> Result<ReactionCounts, ServiceError> {
        self.set_reaction(caller, content_id, kind, false).await
    }

    async fn set_reaction(
        &self,
        caller: &Caller,
        content_id: &str,
        kind: &str,
        add: bool,
    ) -> Result<ReactionCounts, ServiceError> {
        self.policies.require(caller, RESOURCE, "react")?;
        let user = caller.require_user()?;
        model::validate_reaction_kind(kind)?;
        let reaction = json!({ "user_id": user, "kind": kind });
        let audit = if add {
            caller
                .audit("content.react", "content", content_id)
                .after(&reaction)
        } else {
            caller
                .audit("content.unreact", "content", content_id)
                .before(&reaction)
        };
        self.repo
            .set_reaction(content_id, user, kind, add, now_ms(), &audit)
            .await
    }

    /// The reactions to a post, with the caller's own (`mine`). Needs `read` on `content`.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`], [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`].
    pub async fn reactions(
        &self,
        caller: &Caller,
        content_id: &str,
    ) -> Result<ReactionCounts, ServiceError> {
        self.policies.require(caller, RESOURCE, "read")?;
        self.repo
            .reactions(content_id, caller.user_id())
            .await?
            .ok_or_else(|| content_not_found(content_id))
    }
}
