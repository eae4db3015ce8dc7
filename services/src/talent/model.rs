//! Talent records, inputs and the rules their fields follow; weekly availability in the
//! talent's time zone and the free slots it leaves.

use std::collections::HashSet;

use chrono::{Datelike, NaiveDate, TimeZone as _};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::ServiceError;
use crate::time::rfc3339;

/// Longest headline and bio (characters).
pub const MAX_HEADLINE_LEN: usize = 200;
pub const MAX_BIO_LEN: usize = 5_000;
/// Most skills of a profile, and the longest skill tag.
pub const MAX_SKILLS: usize = 30;
pub const MAX_SKILL_LEN: usize = 32;
/// Most weekly rules and dated exceptions of a profile.
pub const MAX_RULES: usize = 100;
pub const MAX_EXCEPTIONS: usize = 366;
/// Longest booking note (characters).
pub const MAX_NOTE_LEN: usize = 2_000;
/// Shortest and longest slot or booking (minutes).
pub const MIN_DURATION_MINUTES: u32 = 15;
pub const MAX_DURATION_MINUTES: u32 = 8 * 60;
/// Longest window a free-slot query may span (days).
pub const MAX_WINDOW_DAYS: i64 = 62;
/// How far ahead a booking may start (days).
pub const MAX_BOOKING_AHEAD_DAYS: i64 = 366;

const MINUTE_MS: i64 = 60_000;
const DAY_MS: i64 = 24 * 60 * MINUTE_MS;
/// Minutes of a day; `24:00` is a valid end.
const DAY_MINUTES: u16 = 24 * 60;

/// Who sees a profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = TalentVisibility)]
pub enum Visibility {
    /// Everyone, signed in or not.
    #[default]
    Public,
    /// Its owner and admins only (others get a 404).
    Private,
}

impl Visibility {
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Public => "public",
            Visibility::Private => "private",
        }
    }

    /// # Errors
    /// [`ServiceError::Invalid`] naming `field`.
    pub fn parse(field: &str, s: &str) -> Result<Self, ServiceError> {
        match s {
            "public" => Ok(Visibility::Public),
            "private" => Ok(Visibility::Private),
            _ => Err(ServiceError::invalid(field, "must be public or private")),
        }
    }

    pub(crate) fn from_db(s: &str) -> Self {
        if s == "private" {
            Visibility::Private
        } else {
            Visibility::Public
        }
    }
}

/// A talent profile: one per user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = TalentProfile)]
pub struct Profile {
    pub id: String,
    /// The user it belongs to (at most one profile per user).
    pub user_id: String,
    pub headline: String,
    pub bio: String,
    /// Short lower-case tags, in the order given, without duplicates.
    pub skills: Vec<String>,
    /// The SKU the hourly rate is priced under (the commerce service prices it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hourly_rate_sku: Option<String>,
    /// IANA name: availability rules are on this zone's wall clock.
    pub timezone: String,
    pub visibility: Visibility,
    pub availability: Availability,
    /// RFC 3339.
    pub created_at: String,
    pub updated_at: String,
}

/// A new profile.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewTalentProfile)]
pub struct NewProfile {
    /// The owner; defaults to the caller (only admins may name another user).
    #[serde(default)]
    pub user_id: Option<String>,
    pub headline: String,
    #[serde(default)]
    pub bio: String,
    #[serde(default)]
    pub skills: Vec<String>,
    #[serde(default)]
    pub hourly_rate_sku: Option<String>,
    pub timezone: String,
    #[serde(default)]
    pub visibility: Visibility,
}

/// A partial update: absent fields are kept.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = TalentProfileUpdate)]
pub struct ProfileUpdate {
    pub headline: Option<String>,
    pub bio: Option<String>,
    pub skills: Option<Vec<String>>,
    /// A SKU; an empty string clears it.
    pub hourly_rate_sku: Option<String>,
    pub timezone: Option<String>,
    pub visibility: Option<Visibility>,
}

/// What a profile search matches; both filters are optional and combine with AND.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = TalentProfileFilter)]
pub struct ProfileFilter {
    /// One skill tag the profile has (exact, case-insensitive).
    pub skill: Option<String>,
    /// Text contained in the headline or bio (case-insensitive, taken literally).
    pub query: Option<String>,
}

/// A span of local time within one day, `HH:MM` to `HH:MM` (`24:00` ends at midnight).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = TalentHours)]
pub struct Hours {
    pub start: String,
    pub end: String,
}

/// Weekly hours: every `weekday` (`mon` … `sun`) from `start` to `end`, local time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = TalentWeeklyRule)]
pub struct WeeklyRule {
    pub weekday: String,
    pub start: String,
    pub end: String,
}

/// One local date with hours of its own instead of the weekly rules: none (unavailable that
/// day) or some.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = TalentDateException)]
pub struct DateException {
    /// `YYYY-MM-DD`, in the talent's time zone.
    pub date: String,
    #[serde(default)]
    pub hours: Vec<Hours>,
}

/// When a talent can be booked, on the wall clock of the profile's time zone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = TalentAvailability)]
pub struct Availability {
    #[serde(default)]
    pub rules: Vec<WeeklyRule>,
    #[serde(default)]
    pub exceptions: Vec<DateException>,
}

/// A free slot (RFC 3339, UTC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = TalentSlot)]
pub struct Slot {
    pub start: String,
    pub end: String,
}

/// What [`super::TalentService::free_slots`] lists.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = TalentSlotQuery)]
pub struct SlotQuery {
    /// RFC 3339; at most [`MAX_WINDOW_DAYS`] before `to`.
    pub from: String,
    pub to: String,
    /// 15–480; also the step between slots (from the start of each span of hours).
    pub duration_minutes: u32,
}

/// Where a booking is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = TalentBookingStatus)]
pub enum BookingStatus {
    /// Asked for by the client; holds the slot.
    Requested,
    /// Accepted by the talent; holds the slot.
    Confirmed,
    /// Done (from confirmed, by the talent).
    Completed,
    /// Refused by the talent (from requested).
    Declined,
    /// Called off by either party (from requested or confirmed).
    Cancelled,
}

impl BookingStatus {
    pub const ALL: [BookingStatus; 5] = [
        BookingStatus::Requested,
        BookingStatus::Confirmed,
        BookingStatus::Completed,
        BookingStatus::Declined,
        BookingStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BookingStatus::Requested => "requested",
            BookingStatus::Confirmed => "confirmed",
            BookingStatus::Completed => "completed",
            BookingStatus::Declined => "declined",
            BookingStatus::Cancelled => "cancelled",
        }
    }

    /// # Errors
    /// [`ServiceError::Invalid`] naming `field`.
    pub fn parse(field: &str, s: &str) -> Result<Self, ServiceError> {
        Self::ALL
            .into_iter()
            .find(|b| b.as_str() == s)
            .ok_or_else(|| {
                ServiceError::invalid(
                    field,
                    "must be requested, confirmed, completed, declined or cancelled",
                )
            })
    }

    /// Whether a booking in this state holds its time.
    pub fn holds_time(self) -> bool {
        matches!(self, BookingStatus::Requested | BookingStatus::Confirmed)
    }

    /// Whether `self` may become `to`.
    pub fn can_become(self, to: BookingStatus) -> bool {
        use BookingStatus::{Cancelled, Completed, Confirmed, Declined, Requested};
        matches!(
            (self, to),
            (Requested, Confirmed)
                | (Requested, Declined)
                | (Requested | Confirmed, Cancelled)
                | (Confirmed, Completed)
        )
    }
}

/// A booking of a talent by a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = TalentBooking)]
pub struct Booking {
    pub id: String,
    /// The profile booked.
    pub talent_id: String,
    /// The user who owns that profile.
    pub talent_user_id: String,
    /// The user who booked.
    pub client_id: String,
    /// RFC 3339, UTC; the end is exclusive.
    pub start: String,
    pub end: String,
    pub status: BookingStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The client's billing country (ISO 3166-1 alpha-2), when the talent has an hourly rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// The commerce order created when the booking was confirmed (for the talent's rate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// A booking request.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewTalentBooking)]
pub struct NewBooking {
    /// RFC 3339; 15 minutes to 8 hours long, within the talent's availability.
    pub start: String,
    pub end: String,
    #[serde(default)]
    pub note: Option<String>,
    /// The client's billing country (ISO 3166-1 alpha-2): required to book a talent with an
    /// hourly rate, whose confirmed booking becomes an order priced for that country.
    #[serde(default)]
    pub country: Option<String>,
}

/// Which bookings a list returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = TalentBookingSide)]
pub enum BookingSide {
    /// Bookings of the caller's own profile.
    Talent,
    /// Bookings the caller made.
    Client,
}

impl BookingSide {
    pub fn as_str(self) -> &'static str {
        match self {
            BookingSide::Talent => "talent",
            BookingSide::Client => "client",
        }
    }

    /// # Errors
    /// [`ServiceError::Invalid`] naming `field`.
    pub fn parse(field: &str, s: &str) -> Result<Self, ServiceError> {
        match s {
            "talent" => Ok(BookingSide::Talent),
            "client" => Ok(BookingSide::Client),
            _ => Err(ServiceError::invalid(field, "must be talent or client")),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Profile fields

fn text(field: &str, s: &str, min: usize, max: usize) -> Result<String, ServiceError> {
    let s = s.trim();
    let n = s.chars().count();
    if n < min || n > max {
        return Err(ServiceError::invalid(
            field,
            format!("must have {min}-{max} characters"),
        ));
    }
    if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(ServiceError::invalid(
            field,
            "must not contain control characters",
        ));
    }
    Ok(s.to_owned())
}

/// The headline, trimmed: 1–200 characters.
///
/// # Errors
/// [`ServiceError::Invalid`] naming `headline`.
pub fn validate_headline(s: &str) -> Result<String, ServiceError> {
    let s = text("headline", s, 1, MAX_HEADLINE_LEN)?;
    if s.contains('\n') {
        return Err(ServiceError::invalid("headline", "must be one line"));
    }
    Ok(s)
}

/// The bio, trimmed: up to 5,000 characters.
///
/// # Errors
/// [`ServiceError::Invalid`] naming `bio`.
pub fn validate_bio(s: &str) -> Result<String, ServiceError> {
    text("bio", s, 0, MAX_BIO_LEN)
}

/// One skill tag, lower-cased: 1–32 characters of `[a-z0-9+#.-]`.
///
/// # Errors
/// [`ServiceError::Invalid`] naming `field`.
pub fn validate_skill(field: &str, s: &str) -> Result<String, ServiceError> {
    let s = s.trim().to_lowercase();
    let ok = !s.is_empty()
        && s.len() <= MAX_SKILL_LEN
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+#.-".contains(&b));
    if ok {
        Ok(s)
    } else {
        Err(ServiceError::invalid(
            field,
            format!("must be 1-{MAX_SKILL_LEN} characters of [a-z0-9+#.-]"),
        ))
    }
}

/// The skills, each checked and lower-cased, duplicates dropped: at most 30.
///
/// # Errors
/// [`ServiceError::Invalid`] naming `skills` or `skills[i]`.
pub fn validate_skills(skills: &[String]) -> Result<Vec<String>, ServiceError> {
    if skills.len() > MAX_SKILLS {
        return Err(ServiceError::invalid(
            "skills",
            format!("at most {MAX_SKILLS} skills"),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(skills.len());
    for (i, s) in skills.iter().enumerate() {
        let s = validate_skill(&format!("skills[{i}]"), s)?;
        if !out.contains(&s) {
            out.push(s);
        }
    }
    Ok(out)
}

/// The hourly rate's SKU (as `babel::model::validate_item` takes SKUs).
///
/// # Errors
/// [`ServiceError::Invalid`] naming `hourly_rate_sku`.
pub fn validate_sku(s: &str) -> Result<String, ServiceError> {
    crate::babel::model::validate_item("sku", s).map_err(|e| match e {
        ServiceError::Invalid { message, .. } => ServiceError::invalid("hourly_rate_sku", message),
        other => other,
    })?;
    Ok(s.to_owned())
}

/// The canonical IANA name of `name`.
///
/// # Errors
/// [`ServiceError::Invalid`] naming `timezone`.
pub fn validate_timezone(name: &str) -> Result<Tz, ServiceError> {
    crate::scheduler::model::parse_timezone("timezone", name)
}

/// A user id: 1–128 characters, no control characters.
///
/// # Errors
/// [`ServiceError::Invalid`] naming `field`.
pub fn validate_id(field: &str, s: &str) -> Result<(), ServiceError> {
    if s.is_empty() || s.chars().count() > 128 || s.chars().any(char::is_control) {
        return Err(ServiceError::invalid(
            field,
            "must have 1-128 characters and no control characters",
        ));
    }
    Ok(())
}

/// A booking note, trimmed (`None` when empty): up to 2,000 characters.
///
/// # Errors
/// [`ServiceError::Invalid`] naming `note`.
pub fn validate_note(s: Option<&str>) -> Result<Option<String>, ServiceError> {
    match s {
        None => Ok(None),
        Some(s) => {
            let s = text("note", s, 0, MAX_NOTE_LEN)?;
            Ok((!s.is_empty()).then_some(s))
        }
    }
}

/// A duration in minutes: 15–480.
///
/// # Errors
/// [`ServiceError::Invalid`] naming `field`.
pub fn validate_duration(field: &str, minutes: i64) -> Result<(), ServiceError> {
    if (i64::from(MIN_DURATION_MINUTES)..=i64::from(MAX_DURATION_MINUTES)).contains(&minutes) {
        Ok(())
    } else {
        Err(ServiceError::invalid(
            field,
            format!(
                "must be {MIN_DURATION_MINUTES}-{MAX_DURATION_MINUTES} minutes (15 minutes to 8 hours)"
            ),
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Availability

const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// `HH:MM` as minutes since midnight (`24:00` = 1440 only where `end`).
fn parse_hhmm(field: &str, s: &str, end: bool) -> Result<u16, ServiceError> {
    let refuse = || {
        ServiceError::invalid(
            field,
            format!(
                "{s:?} is not a local time HH:MM (00:00-23:59{})",
                if end { ", or 24:00" } else { "" }
            ),
        )
    };
    let (h, m) = s.split_once(':').ok_or_else(refuse)?;
    if h.len() != 2 || m.len() != 2 || !h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
        return Err(refuse());
    }
    let h: u16 = h.parse().map_err(|_| refuse())?;
    let m: u16 = m.parse().map_err(|_| refuse())?;
    let minutes = h * 60 + m;
    if m >= 60 || minutes > DAY_MINUTES || (minutes == DAY_MINUTES && !end) {
        return Err(refuse());
    }
    Ok(minutes)
}

fn format_hhmm(minutes: u16) -> String {
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

/// `YYYY-MM-DD`.
fn parse_date(field: &str, s: &str) -> Result<NaiveDate, ServiceError> {
    let refuse = || ServiceError::invalid(field, format!("{s:?} is not a date YYYY-MM-DD"));
    let mut parts = s.split('-');
    let (Some(y), Some(m), Some(d), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(refuse());
    };
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return Err(refuse());
    }
    let (y, m, d) = (
        y.parse::<i32>().map_err(|_| refuse())?,
        m.parse::<u32>().map_err(|_| refuse())?,
        d.parse::<u32>().map_err(|_| refuse())?,
    );
    NaiveDate::from_ymd_opt(y, m, d).ok_or_else(refuse)
}

/// A span of one day in minutes, `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub start: u16,
    pub end: u16,
}

fn span(field: &str, start: &str, end: &str) -> Result<Span, ServiceError> {
    let s = parse_hhmm(&format!("{field}.start"), start, false)?;
    let e = parse_hhmm(&format!("{field}.end"), end, true)?;
    if e <= s {
        return Err(ServiceError::invalid(
            &format!("{field}.end"),
            format!("must be after start ({start})"),
        ));
    }
    Ok(Span { start: s, end: e })
}

/// Refuses overlapping spans: `spans` are `(field, span)` of one day, in input order; the
/// later of two overlapping ones is named.
fn no_overlap(spans: &[(String, Span)]) -> Result<(), ServiceError> {
    let mut sorted: Vec<(usize, &(String, Span))> = spans.iter().enumerate().collect();
    sorted.sort_by_key(|(_, (_, s))| (s.start, s.end));
    for pair in sorted.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if b.1.1.start < a.1.1.end {
            let (first, second) = if a.0 < b.0 { (a.1, b.1) } else { (b.1, a.1) };
            return Err(ServiceError::invalid(
                &second.0,
                format!(
                    "overlaps {} ({}-{})",
                    first.0,
                    format_hhmm(first.1.start),
                    format_hhmm(first.1.end)
                ),
            ));
        }
    }
    Ok(())
}

/// Availability in checked form: spans per weekday (Monday first) and per exception date.
#[derive(Debug, Clone, Default)]
pub(crate) struct Schedule {
    weekly: [Vec<Span>; 7],
    exceptions: Vec<(NaiveDate, Vec<Span>)>,
}

/// Checks `a` and returns it normalised (weekdays lower-case, exceptions by date) with its
/// checked form.
///
/// # Errors
/// [`ServiceError::Invalid`] naming the field: `rules`, `rules[i].weekday`, `rules[i].start`,
/// `rules[i].end`, `rules[i]` (overlapping another), `exceptions`, `exceptions[i].date`
/// (unknown or repeated), `exceptions[i].hours[j].start`/`.end`, `exceptions[i].hours[j]`.
pub(crate) fn check_availability(
    a: &Availability,
) -> Result<(Availability, Schedule), ServiceError> {
    if a.rules.len() > MAX_RULES {
        return Err(ServiceError::invalid(
            "rules",
            format!("at most {MAX_RULES} weekly rules"),
        ));
    }
    if a.exceptions.len() > MAX_EXCEPTIONS {
        return Err(ServiceError::invalid(
            "exceptions",
            format!("at most {MAX_EXCEPTIONS} exceptions"),
        ));
    }
    let mut per_day: [Vec<(String, Span)>; 7] = Default::default();
    let mut rules = Vec::with_capacity(a.rules.len());
    for (i, r) in a.rules.iter().enumerate() {
        let field = format!("rules[{i}]");
        let day = r.weekday.trim().to_lowercase();
        let Some(d) = WEEKDAYS.iter().position(|w| *w == day) else {
            return Err(ServiceError::invalid(
                &format!("{field}.weekday"),
                "must be mon, tue, wed, thu, fri, sat or sun",
            ));
        };
        let s = span(&field, &r.start, &r.end)?;
        per_day[d].push((field, s));
        rules.push(WeeklyRule {
            weekday: day,
            start: format_hhmm(s.start),
            end: format_hhmm(s.end),
        });
    }
    for day in &per_day {
        no_overlap(day)?;
    }
    let mut seen = HashSet::new();
    let mut exceptions = Vec::with_capacity(a.exceptions.len());
    let mut checked = Vec::with_capacity(a.exceptions.len());
    for (i, e) in a.exceptions.iter().enumerate() {
        let field = format!("exceptions[{i}]");
        let date_field = format!("{field}.date");
        let date = parse_date(&date_field, e.date.trim())?;
        if !seen.insert(date) {
            return Err(ServiceError::invalid(
                &date_field,
                format!("{date} is given twice"),
            ));
        }
        let mut spans = Vec::with_capacity(e.hours.len());
        for (j, h) in e.hours.iter().enumerate() {
            spans.push((
                format!("{field}.hours[{j}]"),
                span(&format!("{field}.hours[{j}]"), &h.start, &h.end)?,
            ));
        }
        no_overlap(&spans)?;
        let mut spans: Vec<Span> = spans.into_iter().map(|(_, s)| s).collect();
        spans.sort_by_key(|s| s.start);
        exceptions.push(DateException {
            date: date.to_string(),
            hours: spans
                .iter()
                .map(|s| Hours {
                    start: format_hhmm(s.start),
                    end: format_hhmm(s.end),
                })
                .collect(),
        });
        checked.push((date, spans));
    }
    exceptions.sort_by(|a, b| a.date.cmp(&b.date));
    checked.sort_by_key(|(d, _)| *d);
    let weekly = per_day.map(|day| {
        let mut spans: Vec<Span> = day.into_iter().map(|(_, s)| s).collect();
        spans.sort_by_key(|s| s.start);
        spans
    });
    Ok((
        Availability { rules, exceptions },
        Schedule {
            weekly,
            exceptions: checked,
        },
    ))
}

/// The local instant `minutes` after midnight of `date` in `tz`: `None` when the wall clock
/// skips it (spring forward); the earlier of two when it repeats (fall back).
fn local_ms(tz: Tz, date: NaiveDate, minutes: u16) -> Option<i64> {
    let (date, minutes) = if minutes >= DAY_MINUTES {
        (date.succ_opt()?, minutes - DAY_MINUTES)
    } else {
        (date, minutes)
    };
    let naive = date.and_hms_opt(u32::from(minutes / 60), u32::from(minutes % 60), 0)?;
    tz.from_local_datetime(&naive)
        .earliest()
        .map(|t| t.timestamp_millis())
}

/// As [`local_ms`], but a skipped time is the first minute after the gap.
fn local_ms_or_after(tz: Tz, date: NaiveDate, minutes: u16) -> Option<i64> {
    (0..=180_u16).find_map(|add| local_ms(tz, date, minutes.checked_add(add)?))
}

impl Schedule {
    /// The checked form of stored availability.
    pub(crate) fn of(a: &Availability) -> Result<Self, ServiceError> {
        check_availability(a).map(|(_, s)| s)
    }

    /// The spans of the local date `date`: its exception's, or its weekday's.
    fn spans(&self, date: NaiveDate) -> &[Span] {
        match self.exceptions.binary_search_by_key(&date, |(d, _)| *d) {
            Ok(i) => &self.exceptions[i].1,
            Err(_) => &self.weekly[date.weekday().num_days_from_monday() as usize],
        }
    }

    /// The local dates whose spans may fall in `[from, to)` (ms), one day of margin each side.
    fn dates(tz: Tz, from: i64, to: i64) -> impl Iterator<Item = NaiveDate> {
        let date_of = |ms: i64| {
            tz.timestamp_millis_opt(ms)
                .earliest()
                .map(|t| t.date_naive())
        };
        let first = date_of(from).and_then(|d| d.pred_opt());
        let last = date_of(to).and_then(|d| d.succ_opt());
        let mut next = first;
        std::iter::from_fn(move || {
            let d = next?;
            if last.is_some_and(|l| d > l) {
                return None;
            }
            next = d.succ_opt();
            Some(d)
        })
    }

    /// The available time around `[from, to)` as UTC ms spans, sorted, touching ones merged.
    pub(crate) fn available(&self, tz: Tz, from: i64, to: i64) -> Vec<(i64, i64)> {
        let mut out: Vec<(i64, i64)> = Vec::new();
        for date in Self::dates(tz, from, to) {
            for s in self.spans(date) {
                let (Some(a), Some(b)) = (
                    local_ms_or_after(tz, date, s.start),
                    local_ms_or_after(tz, date, s.end),
                ) else {
                    continue;
                };
                if b <= a {
                    continue;
                }
                match out.last_mut() {
                    Some(last) if a <= last.1 => last.1 = last.1.max(b),
                    _ => out.push((a, b)),
                }
            }
        }
        out
    }

    /// Whether `[start, end)` lies within the available time.
    pub(crate) fn covers(&self, tz: Tz, start: i64, end: i64) -> bool {
        self.available(tz, start, end)
            .iter()
            .any(|&(a, b)| a <= start && end <= b)
    }

    /// Slots of `duration` minutes starting at or after `from` and ending by `to` (ms),
    /// stepping by `duration` from the start of each span on the local wall clock: a local
    /// start the clock skips is left out, one it repeats is taken at its earlier instant; a
    /// slot lasts `duration` of real time and ends within its span.
    pub(crate) fn slots(&self, tz: Tz, from: i64, to: i64, duration: u16) -> Vec<(i64, i64)> {
        let length = i64::from(duration) * MINUTE_MS;
        let mut out = Vec::new();
        for date in Self::dates(tz, from, to) {
            for s in self.spans(date) {
                let Some(span_end) = local_ms_or_after(tz, date, s.end) else {
                    continue;
                };
                let mut t = s.start;
                while t + duration <= s.end {
                    if let Some(start) = local_ms(tz, date, t) {
                        let end = start + length;
                        if start >= from && end <= to && end <= span_end {
                            out.push((start, end));
                        }
                    }
                    t += duration;
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// `(start, end)` ms as a [`Slot`].
pub(crate) fn slot(start: i64, end: i64) -> Slot {
    Slot {
        start: rfc3339(start),
        end: rfc3339(end),
    }
}

/// The window of a free-slot query in ms and its duration in minutes.
///
/// # Errors
/// [`ServiceError::Invalid`] naming `from`, `to` or `duration_minutes`.
pub(crate) fn check_window(q: &SlotQuery) -> Result<(i64, i64, u16), ServiceError> {
    let from = crate::time::parse_rfc3339("from", &q.from)?;
    let to = crate::time::parse_rfc3339("to", &q.to)?;
    if to <= from {
        return Err(ServiceError::invalid("to", "must be after from"));
    }
    if to - from > MAX_WINDOW_DAYS * DAY_MS {
        return Err(ServiceError::invalid(
            "to",
            format!("must be at most {MAX_WINDOW_DAYS} days after from"),
        ));
    }
    validate_duration("duration_minutes", i64::from(q.duration_minutes))?;
    let duration = u16::try_from(q.duration_minutes)
        .map_err(|_| ServiceError::invalid("duration_minutes", "too long"))?;
    Ok((from, to, duration))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_times_resolve_across_daylight_saving_changes() {
        let paris: Tz = "Europe/Paris".parse().expect("tz");
        let d = |s: &str| parse_date("d", s).expect("date");
        // 02:30 does not exist on 29 March 2026 in Paris; it exists twice on 25 October.
        assert_eq!(local_ms(paris, d("2026-03-29"), 150), None);
        assert_eq!(
            local_ms(paris, d("2026-10-25"), 150)
                .map(rfc3339)
                .as_deref(),
            Some("2026-10-25T00:30:00.000Z")
        );
        assert_eq!(
            local_ms_or_after(paris, d("2026-03-29"), 150)
                .map(rfc3339)
                .as_deref(),
            Some("2026-03-29T01:00:00.000Z")
        );
    }

    #[test]
    fn transitions_follow_the_life_of_a_booking() {
        use BookingStatus::*;
        assert!(Requested.can_become(Confirmed));
        assert!(Confirmed.can_become(Completed));
        assert!(!Requested.can_become(Completed));
        assert!(!Confirmed.can_become(Declined));
        assert!(!Cancelled.can_become(Requested));
    }
}
