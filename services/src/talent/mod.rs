//! The talent service: profiles of users offering their time (headline, bio, skills, an
//! hourly rate as a SKU the commerce service prices, a time zone, public or private), their
//! weekly availability with dated exceptions, the free slots it leaves, and bookings by other
//! users. Tables `service_talent_profile` and `service_talent_booking`.
//!
//! # Rules
//! * Resource `talent`: `read` (everyone, anonymous callers too) for profiles, searches and
//!   free slots; `write` (users) for one's own profile and availability; `book` (users) to
//!   book a talent and move one's bookings along; `manage` (admins) to do all of it for any
//!   profile or booking. A user has at most one profile (a second is a 409).
//! * Private profiles are seen by their owner and by `manage` only: for anyone else they do
//!   not exist (404), in searches too.
//! * Availability: weekly rules (`mon` 09:00–17:00; several per day, not overlapping) and
//!   dated exceptions (a local date with no hours, or hours of its own), on the wall clock of
//!   the profile's time zone. [`TalentService::free_slots`] steps by the duration from the
//!   start of each span: a local start the clock skips (spring forward) is left out, one it
//!   repeats (fall back) is taken at its earlier instant; slots held by requested or
//!   confirmed bookings, and past ones, are left out. Windows of up to 62 days, durations of
//!   15 minutes to 8 hours.
//! * Bookings: `requested` → `confirmed` → `completed`, `declined` (from requested, by the
//!   talent), `cancelled` (from requested or confirmed, by either party). Another transition
//!   is a 409 naming both states. A booking that starts in the past, lies outside the
//!   availability, or overlaps a requested or confirmed booking of the talent is a 409 saying
//!   which; two overlapping bookings are never both held, whatever the concurrency (see
//!   `repo`).
//! * Every change writes its audit row in its transaction: `talent.create`, `talent.update`,
//!   `talent.availability`, `talent.delete` (entity `talent_profile`), `talent.book`,
//!   `talent.confirm`, `talent.decline`, `talent.cancel`, `talent.complete` (entity
//!   `talent_booking`).
//!
//! # Layout
//! * [`model`]: records, inputs and their rules, availability and slots; `repo`: storage;
//!   here: the service.

pub mod model;
mod repo;

pub use crate::page::Page;
pub use model::{
    Availability, Booking, BookingSide, BookingStatus, DateException, Hours, NewBooking,
    NewProfile, Profile, ProfileFilter, ProfileUpdate, Slot, SlotQuery, Visibility, WeeklyRule,
};

use crate::page::{check_limit, paginate};
use crate::scheduler::Clock;
use crate::security::{Caller, Policies};
use crate::time::{parse_rfc3339, rfc3339};
use crate::{Database, ServiceError};
use repo::{BookingInsert, ProfileRow, TalentRepo};

/// The resource every policy check names.
const RESOURCE: &str = "talent";
const MINUTE_MS: i64 = 60_000;
const DAY_MS: i64 = 24 * 60 * MINUTE_MS;

/// Profiles, availability, free slots and bookings.
#[derive(Clone, Debug)]
pub struct TalentService {
    repo: TalentRepo,
    policies: Policies,
    clock: Clock,
}

impl TalentService {
    pub fn new(db: Database, policies: Policies) -> Self {
        Self {
            repo: TalentRepo::new(db),
            policies,
            clock: Clock::system(),
        }
    }

    /// The same service reading the time from `clock`.
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    fn manages(&self, caller: &Caller) -> bool {
        self.policies.allows(caller, RESOURCE, "manage")
    }

    /// Whether `caller` sees `p`.
    fn sees(&self, caller: &Caller, p: &Profile) -> bool {
        p.visibility == Visibility::Public
            || caller.user_id() == Some(p.user_id.as_str())
            || self.manages(caller)
    }

    /// `Ok` when `caller` owns `p` or manages profiles; otherwise the 403 (or the 404 of a
    /// profile it does not see).
    fn may_change(&self, caller: &Caller, p: &Profile) -> Result<(), ServiceError> {
        if caller.user_id() == Some(p.user_id.as_str()) || self.manages(caller) {
            return Ok(());
        }
        if !self.sees(caller, p) {
            return Err(repo::not_found("talent_profile", &p.id));
        }
        Err(ServiceError::Forbidden {
            message: format!("talent profile {} belongs to another user", p.id),
        })
    }

    /// Creates the profile of the caller (or, for admins, of `new.user_id`). Needs `write`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] naming the field (`user_id`, `headline`, `bio`, `skills[i]`,
    /// `hourly_rate_sku`, `timezone`), [`ServiceError::Duplicate`] when the user has a
    /// profile, [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`] (another user's
    /// id without `manage`), database failures.
    pub async fn create_profile(
        &self,
        caller: &Caller,
        new: NewProfile,
    ) -> Result<Profile, ServiceError> {
        self.policies.require(caller, RESOURCE, "write")?;
        let user_id = match (new.user_id.as_deref(), caller.user_id()) {
            (Some(u), me) if Some(u) != me => {
                if !self.manages(caller) {
                    return Err(ServiceError::Forbidden {
                        message: "only admins create profiles for other users".to_owned(),
                    });
                }
                u.to_owned()
            }
            (_, Some(me)) => me.to_owned(),
            (Some(u), None) => u.to_owned(),
            (None, None) => {
                return Err(ServiceError::invalid(
                    "user_id",
                    "required when the caller is not a user",
                ));
            }
        };
        model::validate_id("user_id", &user_id)?;
        let tz = model::validate_timezone(&new.timezone)?;
        let now = self.clock.now_ms();
        let profile = Profile {
            id: uuid::Uuid::now_v7().to_string(),
            user_id,
            headline: model::validate_headline(&new.headline)?,
            bio: model::validate_bio(&new.bio)?,
            skills: model::validate_skills(&new.skills)?,
            hourly_rate_sku: match new.hourly_rate_sku.as_deref() {
                None | Some("") => None,
                Some(s) => Some(model::validate_sku(s)?),
            },
            timezone: tz.name().to_owned(),
            visibility: new.visibility,
            availability: Availability::default(),
            created_at: rfc3339(now),
            updated_at: rfc3339(now),
        };
        let audit = caller.audit("talent.create", "talent_profile", &profile.id);
        self.repo.create(&profile, now, audit).await?;
        Ok(profile)
    }

    /// The profile `id`. Needs `read`.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`] (a private profile of someone else too),
    /// [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`], database failures.
    pub async fn get_profile(&self, caller: &Caller, id: &str) -> Result<Profile, ServiceError> {
        self.policies.require(caller, RESOURCE, "read")?;
        self.visible(caller, id).await.map(|r| r.profile)
    }

    /// The profile of the user `user_id`. Needs `read`.
    ///
    /// # Errors
    /// As [`TalentService::get_profile`].
    pub async fn profile_of_user(
        &self,
        caller: &Caller,
        user_id: &str,
    ) -> Result<Profile, ServiceError> {
        self.policies.require(caller, RESOURCE, "read")?;
        match self.repo.of_user(user_id).await? {
            Some(r) if self.sees(caller, &r.profile) => Ok(r.profile),
            _ => Err(repo::not_found("talent_profile", user_id)),
        }
    }

    async fn visible(&self, caller: &Caller, id: &str) -> Result<ProfileRow, ServiceError> {
        match self.repo.get(id).await? {
            Some(r) if self.sees(caller, &r.profile) => Ok(r),
            _ => Err(repo::not_found("talent_profile", id)),
        }
    }

    /// Changes the fields `update` gives of profile `id` (an empty `hourly_rate_sku` clears
    /// it). Needs `write`, on one's own profile (or `manage`).
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] naming the field, [`ServiceError::NotFound`],
    /// [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`], database failures.
    pub async fn update_profile(
        &self,
        caller: &Caller,
        id: &str,
        update: ProfileUpdate,
    ) -> Result<Profile, ServiceError> {
        self.policies.require(caller, RESOURCE, "write")?;
        let headline = update
            .headline
            .as_deref()
            .map(model::validate_headline)
            .transpose()?;
        let bio = update.bio.as_deref().map(model::validate_bio).transpose()?;
        let skills = update
            .skills
            .as_deref()
            .map(model::validate_skills)
            .transpose()?;
        let sku = match update.hourly_rate_sku.as_deref() {
            None => None,
            Some("") => Some(None),
            Some(s) => Some(Some(model::validate_sku(s)?)),
        };
        let timezone = update
            .timezone
            .as_deref()
            .map(|t| model::validate_timezone(t).map(|tz| tz.name().to_owned()))
            .transpose()?;
        let audit = caller.audit("talent.update", "talent_profile", id);
        self.repo
            .update(id, self.clock.now_ms(), audit, |before| {
                self.may_change(caller, before)?;
                let mut p = before.clone();
                if let Some(v) = headline {
                    p.headline = v;
                }
                if let Some(v) = bio {
                    p.bio = v;
                }
                if let Some(v) = skills {
                    p.skills = v;
                }
                if let Some(v) = sku {
                    p.hourly_rate_sku = v;
                }
                if let Some(v) = timezone {
                    p.timezone = v;
                }
                if let Some(v) = update.visibility {
                    p.visibility = v;
                }
                Ok(p)
            })
            .await
    }

    /// Replaces the availability of profile `id` (rules and exceptions, normalised: weekdays
    /// lower-case, exceptions by date). Needs `write`, on one's own profile (or `manage`).
    /// Bookings already made are kept.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] naming the field (`rules[1].end`, `rules[2]` overlapping
    /// another, `exceptions[0].date`, `exceptions[0].hours[1].start`, ...),
    /// [`ServiceError::NotFound`], [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`],
    /// database failures.
    pub async fn set_availability(
        &self,
        caller: &Caller,
        id: &str,
        availability: Availability,
    ) -> Result<Profile, ServiceError> {
        self.policies.require(caller, RESOURCE, "write")?;
        let (availability, _) = model::check_availability(&availability)?;
        let audit = caller.audit("talent.availability", "talent_profile", id);
        self.repo
            .update(id, self.clock.now_ms(), audit, |before| {
                self.may_change(caller, before)?;
                let mut p = before.clone();
                p.availability = availability;
                Ok(p)
            })
            .await
    }

    /// Deletes profile `id` with its past bookings. Needs `write`, on one's own profile (or
    /// `manage`).
    ///
    /// # Errors
    /// [`ServiceError::NotFound`], [`ServiceError::Conflict`] while it has requested or
    /// confirmed bookings that have not ended, [`ServiceError::Unauthenticated`]/
    /// [`ServiceError::Forbidden`], database failures.
    pub async fn delete_profile(&self, caller: &Caller, id: &str) -> Result<(), ServiceError> {
        self.policies.require(caller, RESOURCE, "write")?;
        let audit = caller.audit("talent.delete", "talent_profile", id);
        self.repo
            .delete(id, self.clock.now_ms(), audit, |p| {
                self.may_change(caller, p)
            })
            .await
    }

    /// A page of the profiles the caller sees (public ones, its own, all for `manage`), by
    /// id, matching `filter`. Needs `read`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] (`skill`, `query`: 1–200 characters, `limit`),
    /// [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`], database failures.
    pub async fn search(
        &self,
        caller: &Caller,
        filter: &ProfileFilter,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<Page<Profile>, ServiceError> {
        self.policies.require(caller, RESOURCE, "read")?;
        let limit = check_limit(limit)?;
        let skill = filter
            .skill
            .as_deref()
            .map(|s| {
                model::validate_skill("skill", s)
                    .map(|s| crate::db::contains_pattern(&format!("\"{s}\"")))
            })
            .transpose()?;
        let text = match filter.query.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(q) if q.chars().count() > 200 => {
                return Err(ServiceError::invalid("query", "must have 1-200 characters"));
            }
            Some(q) => Some(crate::db::contains_pattern(q)),
        };
        let rows = self
            .repo
            .list(
                caller.user_id(),
                self.manages(caller),
                skill.as_deref(),
                text.as_deref(),
                cursor,
                limit + 1,
            )
            .await?;
        Ok(paginate(rows, limit, |p| p.id.clone()))
    }

    /// The free slots of profile `id` of `query.duration_minutes`, starting at or after
    /// `query.from` (and now) and ending by `query.to`, in time order. Needs `read`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] naming `from`, `to` (not after `from`, or more than 62 days
    /// after it) or `duration_minutes` (not 15–480), [`ServiceError::NotFound`],
    /// [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`], database failures.
    pub async fn free_slots(
        &self,
        caller: &Caller,
        id: &str,
        query: &SlotQuery,
    ) -> Result<Vec<Slot>, ServiceError> {
        self.policies.require(caller, RESOURCE, "read")?;
        let (from, to, duration) = model::check_window(query)?;
        let row = self.visible(caller, id).await?;
        let p = &row.profile;
        let tz = model::validate_timezone(&p.timezone)?;
        let schedule = model::Schedule::of(&p.availability)?;
        let from = from.max(self.clock.now_ms());
        if from >= to {
            return Ok(Vec::new());
        }
        let held = self.repo.holding(id, from, to).await?;
        Ok(schedule
            .slots(tz, from, to, duration)
            .into_iter()
            .filter(|&(s, e)| !held.iter().any(|&(hs, he)| hs < e && s < he))
            .map(|(s, e)| model::slot(s, e))
            .collect())
    }

    /// Books profile `talent_id` for the caller: a `requested` booking. Needs `book`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] naming `start`, `end` (not after start; 15 minutes to 8 hours
    /// long) or `note`; [`ServiceError::NotFound`]; [`ServiceError::Conflict`] when it starts
    /// in the past, lies outside the availability, overlaps a requested or confirmed booking
    /// of the talent (the message says which), or the talent is the caller;
    /// [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`]; database failures.
    pub async fn book(
        &self,
        caller: &Caller,
        talent_id: &str,
        new: NewBooking,
    ) -> Result<Booking, ServiceError> {
        self.policies.require(caller, RESOURCE, "book")?;
        let client_id = caller.require_user()?.to_owned();
        let start = parse_rfc3339("start", &new.start)?;
        let end = parse_rfc3339("end", &new.end)?;
        if end <= start {
            return Err(ServiceError::invalid("end", "must be after start"));
        }
        if (end - start) % MINUTE_MS != 0 {
            return Err(ServiceError::invalid(
                "end",
                "must be a whole number of minutes after start",
            ));
        }
        model::validate_duration("end", (end - start) / MINUTE_MS)?;
        let note = model::validate_note(new.note.as_deref())?;
        let now = self.clock.now_ms();
        if start < now {
            return Err(ServiceError::Conflict {
                message: format!(
                    "the booking starts in the past ({} is before now, {})",
                    rfc3339(start),
                    rfc3339(now)
                ),
            });
        }
        if start - now > model::MAX_BOOKING_AHEAD_DAYS * DAY_MS {
            return Err(ServiceError::invalid(
                "start",
                format!("must be within {} days", model::MAX_BOOKING_AHEAD_DAYS),
            ));
        }
        let insert = BookingInsert {
            id: uuid::Uuid::now_v7().to_string(),
            talent_id: talent_id.to_owned(),
            client_id,
            start_ms: start,
            end_ms: end,
            note,
        };
        let audit = caller.audit("talent.book", "talent_booking", &insert.id);
        let booking = self
            .repo
            .book(&insert, now, audit, |row| {
                let p = &row.profile;
                if !self.sees(caller, p) {
                    return Err(repo::not_found("talent_profile", talent_id));
                }
                if p.user_id == insert.client_id {
                    return Err(ServiceError::Conflict {
                        message: "a talent cannot book their own profile".to_owned(),
                    });
                }
                let tz = model::validate_timezone(&p.timezone)?;
                if !model::Schedule::of(&p.availability)?.covers(tz, start, end) {
                    return Err(ServiceError::Conflict {
                        message: format!(
                            "{} to {} is outside the availability of talent {talent_id} ({})",
                            rfc3339(start),
                            rfc3339(end),
                            p.timezone
                        ),
                    });
                }
                Ok(())
            })
            .await?;
        Ok(booking)
    }

    /// The booking `id`, for its client, its talent, or `manage`. Needs `book`.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`] (someone else's booking too),
    /// [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`], database failures.
    pub async fn get_booking(&self, caller: &Caller, id: &str) -> Result<Booking, ServiceError> {
        self.policies.require(caller, RESOURCE, "book")?;
        match self.repo.get_booking(id).await? {
            Some(r) if self.party(caller, &r.booking).is_some() || self.manages(caller) => {
                Ok(r.booking)
            }
            _ => Err(repo::not_found("talent_booking", id)),
        }
    }

    /// Which side of `b` the caller is on.
    fn party(&self, caller: &Caller, b: &Booking) -> Option<BookingSide> {
        let me = caller.user_id()?;
        if me == b.talent_user_id {
            Some(BookingSide::Talent)
        } else if me == b.client_id {
            Some(BookingSide::Client)
        } else {
            None
        }
    }

    /// Moves booking `id` to `to` if the caller may: the talent confirms, declines and
    /// completes; either party cancels; `manage` does any.
    async fn transition(
        &self,
        caller: &Caller,
        id: &str,
        to: BookingStatus,
        action: &str,
    ) -> Result<Booking, ServiceError> {
        self.policies.require(caller, RESOURCE, "book")?;
        let audit = caller.audit(action, "talent_booking", id);
        let now = self.clock.now_ms();
        self.repo
            .transition(id, to, now, audit, |row| {
                let b = &row.booking;
                let manages = self.manages(caller);
                // Who may, first (a stranger learns nothing); then, for a transition the
                // state allows (the repository names both states otherwise), when.
                let started = now >= row.start_ms;
                if to == BookingStatus::Completed
                    && b.status.can_become(to)
                    && !started
                    && (manages || self.party(caller, b) == Some(BookingSide::Talent))
                {
                    return Err(ServiceError::Conflict {
                        message: format!(
                            "booking {id} cannot be completed before it starts ({})",
                            b.start
                        ),
                    });
                }
                match self.party(caller, b) {
                    None if !manages => Err(repo::not_found("talent_booking", id)),
                    Some(BookingSide::Client) if to != BookingStatus::Cancelled && !manages => {
                        Err(ServiceError::Forbidden {
                            message: format!(
                                "only the talent may make booking {id} {}",
                                to.as_str()
                            ),
                        })
                    }
                    _ => Ok(()),
                }
            })
            .await
    }

    /// `requested` → `confirmed`, by the talent. Needs `book`.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`], [`ServiceError::Conflict`] naming both states,
    /// [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`] (the client), database
    /// failures.
    pub async fn confirm(&self, caller: &Caller, id: &str) -> Result<Booking, ServiceError> {
        self.transition(caller, id, BookingStatus::Confirmed, "talent.confirm")
            .await
    }

    /// `requested` → `declined`, by the talent. Needs `book`.
    ///
    /// # Errors
    /// As [`TalentService::confirm`].
    pub async fn decline(&self, caller: &Caller, id: &str) -> Result<Booking, ServiceError> {
        self.transition(caller, id, BookingStatus::Declined, "talent.decline")
            .await
    }

    /// `requested` or `confirmed` → `cancelled`, by either party. Needs `book`.
    ///
    /// # Errors
    /// As [`TalentService::confirm`].
    pub async fn cancel(&self, caller: &Caller, id: &str) -> Result<Booking, ServiceError> {
        self.transition(caller, id, BookingStatus::Cancelled, "talent.cancel")
            .await
    }

    /// `confirmed` → `completed`, by the talent, once the booking has started. Needs `book`.
    ///
    /// # Errors
    /// As [`TalentService::confirm`]; [`ServiceError::Conflict`] before the start.
    pub async fn complete(&self, caller: &Caller, id: &str) -> Result<Booking, ServiceError> {
        self.transition(caller, id, BookingStatus::Completed, "talent.complete")
            .await
    }

    /// A page of the caller's bookings by id: of its own profile (`side` talent) or made by
    /// it (client), optionally in one `status`. Needs `book`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] (`limit`), [`ServiceError::NotFound`] (side talent without a
    /// profile), [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`], database
    /// failures.
    pub async fn my_bookings(
        &self,
        caller: &Caller,
        side: BookingSide,
        status: Option<BookingStatus>,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<Page<Booking>, ServiceError> {
        self.policies.require(caller, RESOURCE, "book")?;
        let me = caller.require_user()?;
        let limit = check_limit(limit)?;
        let key = match side {
            BookingSide::Client => me.to_owned(),
            BookingSide::Talent => match self.repo.of_user(me).await? {
                Some(r) => r.profile.id,
                None => return Err(repo::not_found("talent_profile", me)),
            },
        };
        let rows = self
            .repo
            .bookings(side, &key, status, cursor, limit + 1)
            .await?;
        Ok(paginate(rows, limit, |b| b.id.clone()))
    }

    /// A page of the bookings of profile `talent_id` by id (its owner, or `manage`). Needs
    /// `book`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] (`limit`), [`ServiceError::NotFound`],
    /// [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`], database failures.
    pub async fn talent_bookings(
        &self,
        caller: &Caller,
        talent_id: &str,
        status: Option<BookingStatus>,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<Page<Booking>, ServiceError> {
        self.policies.require(caller, RESOURCE, "book")?;
        let limit = check_limit(limit)?;
        let row = self.visible(caller, talent_id).await?;
        self.may_change(caller, &row.profile)?;
        let rows = self
            .repo
            .bookings(BookingSide::Talent, talent_id, status, cursor, limit + 1)
            .await?;
        Ok(paginate(rows, limit, |b| b.id.clone()))
    }
}
