//! What the server accepts, written into the generated document: the lengths, patterns,
//! formats and ranges of the validation in `services` and [`crate::http`], built from the
//! validators' own constants so that the document follows the code. (utoipa's
//! `#[schema(max_length = ...)]` takes literals only, and the user service's types are not
//! annotated; both are described here instead.) The unit tests below check the result against
//! the constants, and `tests/conformance.rs` against a node, on both sides of every limit.
//!
//! Patterns are ECMA-262 regular expressions built from explicit character classes only: `\s`,
//! `\w` and `\d` mean different things in ECMA-262, Python and Rust. White space and control
//! characters are those of Rust's `char::is_whitespace` and `char::is_control`, which the
//! validators use (`str::trim` trims the former).
//!
//! What JSON Schema cannot say is in the descriptions: the order of a campaign's start and end,
//! the number of words in a search, a WebSocket `epoch` only with `since`.

use serde_json::{Map, Value, json};
use services::campaign::model::{
    MAX_FILTER_LEN, MAX_FREQUENCY_HZ, MAX_NAME_LEN, MAX_SLUG_LEN, MIN_FREQUENCY_HZ,
};
use services::content::model::{
    MAX_BODY_LEN, MAX_COMMENT_LEN, MAX_MICRO_BODY_LEN, MAX_QUERY_LEN, MAX_REACTION_KIND_LEN,
    MAX_SEARCH_OFFSET, MAX_TAG_LEN, MAX_TAGS, MAX_TITLE_LEN, MAX_URL_LEN,
};
use services::user::model::{
    MAX_DISPLAY_NAME_LEN, MAX_EMAIL_LEN, MAX_QUERY_LEN as MAX_USER_QUERY_LEN, PASSWORD_LEN,
    USERNAME_LEN,
};

/// Inside a class: the characters of Rust's `char::is_whitespace` (Unicode `White_Space`).
pub const SPACE: &str = r"\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";
/// Inside a class: the characters of Rust's `char::is_control` (general category `Cc`).
pub const CONTROL: &str = r"\x00-\x1f\x7f-\x9f";
/// Inside a class: NUL, which PostgreSQL cannot store.
pub const NUL: &str = r"\x00";

/// Text with 1..=`max` (or 0..=`max` when `min` is 0) characters once `str::trim` has removed
/// the white space around it, none of them in the class `banned` (white space around is not
/// counted, and is allowed even where `banned` names it: trimming removes it first).
pub fn trimmed(min: usize, max: usize, banned: &str) -> String {
    assert!(min <= 1 && max >= 2, "trimmed({min}, {max})");
    let edge = format!("[^{SPACE}{banned}]");
    let inner = format!("[^{banned}]");
    let core = format!("{edge}(?:{inner}{{0,{}}}{edge})?", max - 2);
    let core = if min == 0 {
        format!("(?:{core})?")
    } else {
        core
    };
    format!("^[{SPACE}]*{core}[{SPACE}]*$")
}

/// Text that is not only white space (`trim` leaves something), without `banned` characters
/// (a class; may be empty).
pub fn not_blank(banned: &str) -> String {
    if banned.is_empty() {
        // Unanchored at the end: something after the leading white space.
        return format!("^[{SPACE}]*[^{SPACE}]");
    }
    format!("^[^{banned}]*[^{SPACE}{banned}][^{banned}]*$")
}

/// RFC 3339 in UTC (`Z` or `+00:00`), 1970 or later: what `services::time::parse_rfc3339`
/// reads. With `format: date-time` for the calendar (no 31 June).
pub fn utc_time() -> &'static str {
    r"^(?:19[7-9][0-9]|[2-9][0-9]{3})-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:Z|\+00:00)$"
}

/// A campaign's slug (`validate_slug`).
pub fn slug() -> String {
    format!("^[a-z0-9][a-z0-9-]{{0,{}}}$", MAX_SLUG_LEN - 1)
}

/// A user name (`validate_username`).
pub fn username() -> String {
    format!(
        "^[A-Za-z0-9_.-]{{{},{}}}$",
        USERNAME_LEN.start(),
        USERNAME_LEN.end()
    )
}

/// An e-mail address (`validate_email`): something, `@`, a domain with a dot. Written for
/// ASCII addresses without surrounding spaces (the service also takes others, and counts
/// their length in bytes).
pub fn email() -> &'static str {
    "^[!-?A-~]+@[!-?A-~]*\\.[!-?A-~]*$"
}

/// An event or message name (`engine::session::valid_event_name`).
pub fn event_name() -> String {
    format!("^[A-Za-z0-9_.:-]{{1,{}}}$", engine::session::MAX_EVENT_NAME)
}

/// A user id in a path ([`crate::http::valid_user_id`]).
pub fn user_id() -> String {
    format!("^[^{SPACE}{CONTROL}]{{1,{}}}$", crate::http::MAX_USER_ID)
}

/// A reaction kind (`validate_reaction_kind`).
pub fn reaction_kind() -> String {
    format!("^[a-z0-9_]{{1,{MAX_REACTION_KIND_LEN}}}$")
}

/// An absolute http(s) URL naming a host, without white space or control characters
/// (`validate_url`).
pub fn url() -> String {
    let c = format!("{SPACE}{CONTROL}");
    format!("^[Hh][Tt][Tt][Pp][Ss]?://(?:[^/?#{c}]*@)?[^/?#@:{c}][^/?#@{c}]*(?:[/?#][^{c}]*)?$")
}

/// A search cursor: an offset of at most `MAX_SEARCH_OFFSET` (`search_offset`, which reads it
/// as a `u64`: a `+` and leading zeros are allowed). Written for a power of ten, which the
/// assertion keeps true.
pub fn search_offset() -> String {
    let max = MAX_SEARCH_OFFSET.to_string();
    assert!(max.len() == 5 && max.starts_with('1') && max[1..].bytes().all(|b| b == b'0'));
    format!("^\\+?0*(?:[0-9]{{1,{}}}|{max})$", max.len() - 1)
}

/// Writes the rules into `doc`, the serialised document of [`crate::http::api_router`].
///
/// # Panics
/// When `doc` lacks a schema, property, path or parameter named here (renamed in the code):
/// every test that builds the document finds it.
pub fn apply(doc: &mut Value) {
    components(doc);
    query_values(doc);
    campaigns(doc);
    users(doc);
    content(doc);
    audit(doc);
    websocket(doc);
    localization_babel(doc);
    notifications(doc);
    scheduler(doc);
    talent(doc);
    commerce(doc);
    referral(doc);
    nexus(doc);
}

/// A run id as Nexus writes it (a hyphenated UUID): the runs list's cursor
/// (`services::nexus::is_run_id`).
fn nexus(doc: &mut Value) {
    set(
        parameter(doc, "/api/nexus/runs", "get", "cursor"),
        &json!({"pattern": services::nexus::RUN_ID_PATTERN}),
    );
}

/// A job kind or entity type (`services::scheduler::model::validate_name`).
pub fn scheduler_name() -> String {
    use services::scheduler::model::MAX_NAME_LEN;
    format!("^[a-z0-9][a-z0-9._-]{{0,{}}}$", MAX_NAME_LEN - 1)
}

/// The filters of the scheduler's job list that the service validates (`entity_type`,
/// `kind`); `entity_id` is only compared.
fn scheduler(doc: &mut Value) {
    for name in ["entity_type", "kind"] {
        set(
            parameter(doc, "/api/scheduler/jobs", "get", name),
            &json!({"pattern": scheduler_name()}),
        );
    }
}

/// The fields the talent service validates (`services::talent::model`). What the document
/// cannot state is in the descriptions: hours of one day that overlap, an end not after its
/// start, a booking outside the availability.
fn talent(doc: &mut Value) {
    use services::babel::model::MAX_SKU_LEN;
    use services::talent::model::{
        MAX_BIO_LEN, MAX_EXCEPTIONS, MAX_HEADLINE_LEN, MAX_NOTE_LEN, MAX_RULES, MAX_SKILL_LEN,
        MAX_SKILLS,
    };
    // `text` allows tab and newline among the control characters; a headline is one line.
    let multi_line = r"\x00-\x08\x0b-\x1f\x7f-\x9f";
    let one_line = r"\x00-\x08\x0a-\x1f\x7f-\x9f";
    let headline = json!({"pattern": trimmed(1, MAX_HEADLINE_LEN, one_line)});
    let bio = json!({"pattern": trimmed(0, MAX_BIO_LEN, multi_line)});
    let skill = format!("^[{SPACE}]*[A-Za-z0-9+#.-]{{1,{MAX_SKILL_LEN}}}[{SPACE}]*$");
    let skills = json!({"maxItems": MAX_SKILLS, "items": {"type": "string", "pattern": skill}});
    let sku = json!({"pattern": format!("^(?:[A-Za-z0-9._:/-]{{1,{MAX_SKU_LEN}}})?$")});
    let zone = json!({"enum": services::scheduler::model::time_zone_names()});
    for schema in ["NewTalentProfile", "TalentProfileUpdate"] {
        set(property(doc, schema, "headline"), &headline);
        set(property(doc, schema, "bio"), &bio);
        set(property(doc, schema, "skills"), &skills);
        set(property(doc, schema, "hourly_rate_sku"), &sku);
        set(property(doc, schema, "timezone"), &zone);
    }
    set(
        property(doc, "NewTalentProfile", "user_id"),
        &json!({"pattern": format!("^[^{CONTROL}]{{1,128}}$")}),
    );
    let start = json!({"pattern": "^(?:[01][0-9]|2[0-3]):[0-5][0-9]$"});
    let end = json!({"pattern": "^(?:(?:[01][0-9]|2[0-3]):[0-5][0-9]|24:00)$"});
    for schema in ["TalentWeeklyRule", "TalentHours"] {
        set(property(doc, schema, "start"), &start);
        set(property(doc, schema, "end"), &end);
    }
    set(
        property(doc, "TalentWeeklyRule", "weekday"),
        &json!({"enum": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]}),
    );
    set(
        property(doc, "TalentDateException", "date"),
        &json!({"format": "date", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"}),
    );
    set(
        property(doc, "TalentAvailability", "rules"),
        &json!({"maxItems": MAX_RULES}),
    );
    set(
        property(doc, "TalentAvailability", "exceptions"),
        &json!({"maxItems": MAX_EXCEPTIONS}),
    );
    let instant = json!({"format": "date-time", "pattern": utc_time()});
    for name in ["start", "end"] {
        set(property(doc, "NewTalentBooking", name), &instant);
    }
    set(property(doc, "NewTalentBooking", "country"), &country());
    set(
        property(doc, "NewTalentBooking", "note"),
        &json!({"pattern": trimmed(0, MAX_NOTE_LEN, multi_line)}),
    );
    let slots = "/api/talent/profiles/{id}/slots";
    for name in ["from", "to"] {
        set(parameter(doc, slots, "get", name), &instant);
    }
    let search = "/api/talent/profiles";
    set(
        parameter(doc, search, "get", "skill"),
        &json!({"pattern": skill}),
    );
    set(
        parameter(doc, search, "get", "q"),
        &json!({"maxLength": 200}),
    );
    set(
        parameter(doc, "/api/talent/users/{id}/profile", "get", "id"),
        &json!({"pattern": format!("^[^{CONTROL}]{{1,128}}$")}),
    );
}

/// The fields the commerce service validates (`services::commerce::model`), by name over
/// `/api/commerce` and in the nested line and entry schemas. What the document cannot state
/// is in the descriptions: an order naming one SKU twice or a product that is not on sale, a
/// movement's entries that do not sum to zero.
fn commerce(doc: &mut Value) {
    use services::babel::model::MAX_SKU_LEN;
    use services::babel::money::{MAX_AMOUNT, currency_codes};
    use services::commerce::model::{
        MAX_ACCOUNT_LEN, MAX_ENTRIES, MAX_IDEMPOTENCY_KEY_LEN, MAX_LINES, MAX_NAME_LEN,
        MAX_QUANTITY, MAX_REASON_LEN, MAX_REFERENCE_LEN,
    };
    let sku = json!({"pattern": format!("^[A-Za-z0-9._:/-]{{1,{MAX_SKU_LEN}}}$")});
    let currency = json!({"enum": currency_codes()});
    let rules: Vec<(&str, Value)> = vec![
        ("sku", sku.clone()),
        (
            "name",
            json!({"pattern": trimmed(1, MAX_NAME_LEN, CONTROL)}),
        ),
        ("base_amount", json!({"minimum": 0, "maximum": MAX_AMOUNT})),
        ("currency", currency.clone()),
        ("country", country()),
        (
            "user_id",
            json!({"pattern": format!("^[^{CONTROL}]{{1,128}}$")}),
        ),
        (
            "provider",
            json!({"enum": services::commerce::Providers::builtin().names()}),
        ),
        (
            "reference",
            json!({"pattern": trimmed(0, MAX_REFERENCE_LEN, CONTROL)}),
        ),
        (
            "reason",
            json!({"pattern": trimmed(1, MAX_REASON_LEN, CONTROL)}),
        ),
        ("amount", json!({"minimum": 1, "maximum": MAX_AMOUNT})),
        (
            "Idempotency-Key",
            json!({"pattern": format!("^[!-~]{{1,{MAX_IDEMPOTENCY_KEY_LEN}}}$")}),
        ),
    ];
    by_name(doc, "/api/commerce", &rules);
    set(
        at(doc, "/components/schemas/ProductUpdate"),
        &json!({"minProperties": 1}),
    );
    set(
        property(doc, "NewOrder", "lines"),
        &json!({"minItems": 1, "maxItems": MAX_LINES}),
    );
    set(property(doc, "NewLine", "sku"), &sku);
    set(
        property(doc, "NewLine", "quantity"),
        &json!({"minimum": 1, "maximum": MAX_QUANTITY}),
    );
    replace(
        property(doc, "NewMovement", "kind"),
        json!({"type": "string", "enum": ["payout", "referral_reward"],
               "description": "Payments and refunds write their own movements."}),
    );
    set(
        property(doc, "NewMovement", "entries"),
        &json!({"minItems": 2, "maxItems": MAX_ENTRIES}),
    );
    set(
        property(doc, "MovementEntry", "account"),
        &json!({"pattern": format!("^[a-z0-9_:.-]{{1,{MAX_ACCOUNT_LEN}}}$")}),
    );
    set(
        property(doc, "MovementEntry", "amount"),
        &json!({"minimum": -MAX_AMOUNT, "maximum": MAX_AMOUNT, "not": {"const": 0}}),
    );
}

/// The fields the referral service validates (`services::referral::model`), in its bodies and
/// in the registration's `referral_code` and `device_fingerprint`. Whether a code exists (a
/// registration's code, a code's campaign) the document cannot state.
fn referral(doc: &mut Value) {
    use services::referral::model::{CODE_LEN, MAX_DEVICE_LEN, MAX_NOTE_LEN};
    let code = json!({"pattern": format!(
        "^[{SPACE}]*[A-Za-z0-9-]{{{},{}}}[{SPACE}]*$",
        CODE_LEN.start(),
        CODE_LEN.end()
    )});
    let device = json!({"pattern": format!(
        "^[{SPACE}]*(?:[!-~](?:[ -~]{{0,{}}}[!-~])?)?[{SPACE}]*$",
        MAX_DEVICE_LEN - 2
    )});
    set(property(doc, "NewReferralCode", "code"), &code);
    set(
        property(doc, "NewReferralCode", "device_fingerprint"),
        &device,
    );
    set(property(doc, "NewUser", "referral_code"), &code);
    set(property(doc, "NewUser", "device_fingerprint"), &device);
    set(
        property(doc, "ReferralApproval", "note"),
        &json!({"pattern": trimmed(1, MAX_NOTE_LEN, CONTROL)}),
    );
    set(
        property(doc, "ReferralRejection", "reason"),
        &json!({"pattern": trimmed(1, MAX_NOTE_LEN, CONTROL)}),
    );
}

/// The fields the notification service validates, in paths, queries and request bodies under
/// `/api/notifications` (what MiniJinja accepts and which variables a template uses, the
/// document cannot state: the descriptions say it).
fn notifications(doc: &mut Value) {
    use services::notification::model::{
        MAX_BODY_LEN, MAX_KEY_LEN, MAX_SUBJECT_LEN, MAX_URL_LEN, MAX_USER_IDS,
    };
    let key = json!({"pattern": format!("^[A-Za-z0-9._-]{{1,{MAX_KEY_LEN}}}$")});
    let text = |max: usize| json!({"minLength": 1, "maxLength": max});
    let c = format!("{SPACE}{CONTROL}");
    let rules: Vec<(&str, Value)> = vec![
        ("key", key.clone()),
        ("template", key),
        ("locale", json!({"pattern": locale()})),
        ("subject", text(MAX_SUBJECT_LEN)),
        ("text", text(MAX_BODY_LEN)),
        ("html", text(MAX_BODY_LEN)),
        ("campaign_id", json!({"minLength": 1, "maxLength": 64})),
        (
            "url",
            json!({
                "maxLength": MAX_URL_LEN,
                "pattern": format!("^[Hh][Tt][Tt][Pp][Ss]?://[^/?#@:{c}][^/?#@{c}]*(?:[/?#][^{c}]*)?$"),
            }),
        ),
    ];
    by_name(doc, "/api/notifications", &rules);
    // Recipients: 1-1,000 user ids of 1-64 characters.
    if let Some(ids) = doc
        .pointer_mut("/components/schemas/Recipients/properties/user_ids")
        .and_then(Value::as_object_mut)
    {
        set(ids, &json!({"minItems": 1, "maxItems": MAX_USER_IDS}));
    }
    if let Some(items) = doc
        .pointer_mut("/components/schemas/Recipients/properties/user_ids/items")
        .and_then(Value::as_object_mut)
    {
        set(items, &json!({"minLength": 1, "maxLength": 64}));
    }
    // A preferences change names at least one channel, each true or false.
    if let Some(p) = doc
        .pointer_mut("/components/schemas/PreferencesUpdate")
        .and_then(Value::as_object_mut)
    {
        set(p, &json!({"minProperties": 1}));
        for channel in p
            .get_mut("properties")
            .and_then(Value::as_object_mut)
            .into_iter()
            .flatten()
        {
            if let Some(c) = channel.1.as_object_mut() {
                replace(c, json!({"type": "boolean"}));
            }
        }
    }
    // A template list's cursor is the `key/locale` of the last template of the previous page.
    set(
        parameter(doc, "/api/notifications/templates", "get", "cursor"),
        &json!({"pattern": "/"}),
    );
    if let Some(ch) = doc
        .pointer_mut("/components/schemas/SendRequest/properties/channels")
        .and_then(Value::as_object_mut)
    {
        set(ch, &json!({"minItems": 1}));
    }
}

/// Sets `rules` (field name, schema constraints) on every parameter and every property of a
/// JSON request body of the operations under `prefix` whose name has a rule: one rule per
/// field name for a whole service, so that a new operation gets them without another line.
fn by_name(doc: &mut Value, prefix: &str, rules: &[(&str, Value)]) {
    let rule = |name: &str| {
        rules
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, r)| r.clone())
    };
    let mut bodies = std::collections::BTreeSet::new();
    let paths = doc["paths"].as_object_mut().expect("paths");
    for (path, item) in paths.iter_mut() {
        if !path.starts_with(prefix) {
            continue;
        }
        for (_, op) in item.as_object_mut().into_iter().flatten() {
            for p in op
                .get_mut("parameters")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                let name = p["name"].as_str().unwrap_or_default().to_owned();
                if let (Some(r), Some(schema)) = (
                    rule(&name),
                    p.get_mut("schema").and_then(Value::as_object_mut),
                ) {
                    set(schema, &r);
                }
            }
            if let Some(r) = op
                .pointer("/requestBody/content/application~1json/schema/$ref")
                .and_then(Value::as_str)
            {
                bodies.insert(r.trim_start_matches("#/components/schemas/").to_owned());
            }
        }
    }
    for schema in bodies {
        let props = doc
            .pointer_mut(&format!("/components/schemas/{schema}/properties"))
            .and_then(Value::as_object_mut);
        for (name, p) in props.into_iter().flatten() {
            let Some(r) = rule(name) else { continue };
            if let Some(p) = p.as_object_mut() {
                set(p, &r);
            }
        }
    }
}

/// An assigned ISO 3166-1 alpha-2 country code, as `services::babel::model::validate_country`
/// accepts it.
fn country() -> Value {
    json!({"enum": services::babel::model::assigned_countries()})
}

/// A BCP 47 language identifier as `services::localization::locale::parse` reads it: a
/// language (not `und`), optional script, region and variants, at most 35 characters.
pub fn locale() -> String {
    format!(
        "^(?=[A-Za-z0-9-]{{1,{}}}$)(?![Uu][Nn][Dd](?:-|$))(?:[A-Za-z]{{2,3}}|[A-Za-z]{{5,8}})(?:-[A-Za-z]{{4}})?(?:-(?:[A-Za-z]{{2}}|[0-9]{{3}}))?(?:-(?:[A-Za-z0-9]{{5,8}}|[0-9][A-Za-z0-9]{{3}}))*$",
        services::localization::locale::MAX_LOCALE_LEN
    )
}

/// The names the localization and Babel services validate, wherever they appear: in paths,
/// queries and request bodies under `/api/localization` and `/api/babel`.
fn localization_babel(doc: &mut Value) {
    use services::babel::model::{MAX_CATEGORY_LEN, MAX_MARKET_CODE_LEN, MAX_SKU_LEN};
    use services::localization::model::{MAX_KEY_LEN, MAX_NAMESPACE_LEN};
    let market =
        json!({"pattern": format!("^[a-z0-9][a-z0-9-]{{0,{}}}$", MAX_MARKET_CODE_LEN - 1)});
    let key = json!({"pattern": format!("^[A-Za-z][A-Za-z0-9_-]{{0,{}}}$", MAX_KEY_LEN - 1)});
    let rules: Vec<(&str, Value)> = vec![
        (
            "namespace",
            json!({"pattern": format!("^[a-z0-9][a-z0-9._-]{{0,{}}}$", MAX_NAMESPACE_LEN - 1)}),
        ),
        ("locale", json!({"pattern": locale()})),
        ("key", key.clone()),
        ("key_prefix", key),
        ("code", market.clone()),
        ("market", market),
        ("country", country()),
        (
            "sku",
            json!({"pattern": format!("^[A-Za-z0-9._:/-]{{1,{MAX_SKU_LEN}}}$")}),
        ),
        (
            "category",
            json!({"pattern": format!("^[A-Za-z0-9._:/-]{{1,{MAX_CATEGORY_LEN}}}$")}),
        ),
        (
            "name",
            json!({"pattern": format!("^[^{CONTROL}]{{1,200}}$")}),
        ),
        (
            "value",
            json!({"maxLength": services::localization::model::MAX_VALUE_LEN, "pattern": not_blank(NUL)}),
        ),
        (
            "currency",
            json!({"enum": services::babel::money::currency_codes()}),
        ),
        (
            "base_currency",
            json!({"enum": services::babel::money::currency_codes()}),
        ),
        (
            "base_amount",
            json!({"minimum": 0, "maximum": services::babel::money::MAX_AMOUNT}),
        ),
        (
            "amount",
            json!({"minimum": 0, "maximum": services::babel::money::MAX_AMOUNT}),
        ),
        (
            "tax_rate_bp",
            json!({"minimum": 0, "maximum": services::babel::money::MAX_TAX_RATE_BP}),
        ),
        // More than 0 and at most 1000 besides (the description says so).
        (
            "multiplier",
            json!({"pattern": r"^[0-9]{1,5}(?:\.[0-9]{1,4})?$"}),
        ),
    ];
    // `locale:key` of the last row of the previous page (the other lists' cursors are ids).
    let message_cursor = json!({"pattern": "^[^:]*:"});
    let rule = |name: &str| {
        rules
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, r)| r.clone())
    };
    let mut bodies = std::collections::BTreeSet::new();
    let paths = doc["paths"].as_object_mut().expect("paths");
    for (path, item) in paths.iter_mut() {
        if !(path.starts_with("/api/localization") || path.starts_with("/api/babel")) {
            continue;
        }
        for (_, op) in item.as_object_mut().into_iter().flatten() {
            for p in op
                .get_mut("parameters")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                let name = p["name"].as_str().unwrap_or_default().to_owned();
                let r = if name == "cursor" && path == "/api/localization/messages" {
                    Some(message_cursor.clone())
                } else {
                    rule(&name)
                };
                if let (Some(r), Some(schema)) =
                    (r, p.get_mut("schema").and_then(Value::as_object_mut))
                {
                    set(schema, &r);
                }
            }
            if let Some(r) = op
                .pointer("/requestBody/content/application~1json/schema/$ref")
                .and_then(Value::as_str)
            {
                bodies.insert(r.trim_start_matches("#/components/schemas/").to_owned());
            }
        }
    }
    for schema in bodies {
        let props = doc
            .pointer_mut(&format!("/components/schemas/{schema}/properties"))
            .and_then(Value::as_object_mut);
        for (name, p) in props.into_iter().flatten() {
            let Some(r) = rule(name) else { continue };
            if let Some(p) = p.as_object_mut() {
                // Optional fields are `type: [string, null]` or a `oneOf` with null: the
                // pattern applies to the string.
                set(p, &r);
            }
        }
        // Imported messages: keys are message keys.
        if let Some(m) = doc
            .pointer_mut(&format!("/components/schemas/{schema}/properties/messages"))
            .and_then(Value::as_object_mut)
        {
            set(
                m,
                &json!({"propertyNames": {"pattern": format!("^[A-Za-z][A-Za-z0-9_-]{{0,{}}}$", MAX_KEY_LEN - 1)}}),
            );
        }
        // Lists of countries.
        if let Some(items) = doc
            .pointer_mut(&format!(
                "/components/schemas/{schema}/properties/countries/items"
            ))
            .and_then(Value::as_object_mut)
        {
            set(items, &country());
        }
    }
}

/// `JsonValue`/`JsonObject` (any JSON without NUL: `jsonb` cannot hold it), `Metadata` and
/// `MetadataPatch` (`common.Metadata` as `validate_metadata` checks it).
fn components(doc: &mut Value) {
    let no_nul = json!({"type": "string", "pattern": format!("^[^{NUL}]*$")});
    let schemas = at(doc, "/components/schemas");
    schemas.insert(
        "JsonValue".into(),
        json!({
            "description": "Any JSON value whose strings and keys hold no NUL (U+0000).",
            "anyOf": [
                {"type": ["null", "boolean", "number"]},
                no_nul,
                {"type": "array", "items": {"$ref": "#/components/schemas/JsonValue"}},
                {"$ref": "#/components/schemas/JsonObject"},
            ],
        }),
    );
    schemas.insert(
        "JsonObject".into(),
        json!({
            "description": "Any JSON object whose strings and keys hold no NUL (U+0000).",
            "type": "object",
            "propertyNames": no_nul,
            "additionalProperties": {"$ref": "#/components/schemas/JsonValue"},
        }),
    );
    let metadata = |patch: bool| {
        // In a merge patch (RFC 7396) `null` removes a key.
        let or_null = |schema: Value| {
            if patch {
                json!({"oneOf": [schema, {"type": "null"}]})
            } else {
                schema
            }
        };
        let object = || or_null(json!({"$ref": "#/components/schemas/JsonObject"}));
        let strings = || or_null(json!({"type": "array", "items": no_nul}));
        json!({
            "description": if patch {
                "A JSON merge patch (RFC 7396) over `common.Metadata`: `null` removes a key."
            } else {
                "`common.Metadata`: only these keys; `scheduling.frequency` is the broadcast \
                 rate in Hz (default 1); no string holds NUL."
            },
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "scheduling": or_null(json!({
                    "allOf": [
                        {"$ref": "#/components/schemas/JsonObject"},
                        {"properties": {"frequency": or_null(json!({
                            "type": "number",
                            "minimum": MIN_FREQUENCY_HZ,
                            "maximum": MAX_FREQUENCY_HZ,
                        }))}},
                    ],
                })),
                "features": strings(),
                "custom_rules": or_null(json!({
                    "allOf": [
                        {"$ref": "#/components/schemas/JsonObject"},
                        {"properties": {"client_events": or_null(json!({"type": "boolean"}))}},
                    ],
                })),
                "audit": object(),
                "tags": strings(),
                "service_specific": object(),
                "knowledge_graph": object(),
            },
        })
    };
    schemas.insert("Metadata".into(), metadata(false));
    schemas.insert("MetadataPatch".into(), metadata(true));
}

/// Every query parameter of `/api/...` that takes text takes a non-empty one
/// ([`crate::http::params::Params`]).
fn query_values(doc: &mut Value) {
    let paths = at(doc, "/paths");
    for (path, item) in paths.iter_mut() {
        if !path.starts_with("/api/") {
            continue;
        }
        let ops = item
            .as_object_mut()
            .into_iter()
            .flat_map(|o| o.values_mut());
        for op in ops {
            let params = op.get_mut("parameters").and_then(Value::as_array_mut);
            for p in params.into_iter().flatten() {
                if p["in"] == "query" && p["schema"]["type"] == "string" {
                    p["schema"]["minLength"] = json!(1);
                }
            }
        }
    }
}

fn campaigns(doc: &mut Value) {
    let name = json!({"pattern": trimmed(1, MAX_NAME_LEN, CONTROL)});
    let time = json!({"format": "date-time", "pattern": utc_time()});
    for schema in ["NewCampaign", "CampaignPatch"] {
        set(property(doc, schema, "name"), &name);
        set(property(doc, schema, "slug"), &json!({"pattern": slug()}));
        set(property(doc, schema, "starts_at"), &time);
        set(property(doc, schema, "ends_at"), &time);
    }
    let description = |doc: &mut Value, schema: &str, name: &str| {
        property(doc, schema, name)
            .get("description")
            .cloned()
            .unwrap_or(Value::Null)
    };
    let d = description(doc, "NewCampaign", "status");
    replace(
        property(doc, "NewCampaign", "status"),
        json!({"enum": ["draft", "active", null], "description": d}),
    );
    for (schema, patch) in [("NewCampaign", false), ("CampaignPatch", true)] {
        let d = description(doc, schema, "metadata");
        let r = if patch {
            json!({"$ref": "#/components/schemas/MetadataPatch", "description": d})
        } else {
            json!({"oneOf": [{"$ref": "#/components/schemas/Metadata"}, {"type": "null"}], "description": d})
        };
        replace(property(doc, schema, "metadata"), r);
    }
    let d = description(doc, "NewCampaign", "state");
    replace(
        property(doc, "NewCampaign", "state"),
        json!({"oneOf": [{"$ref": "#/components/schemas/JsonObject"}, {"type": "null"}], "description": d}),
    );
    for method in ["put", "patch"] {
        let body = at(
            doc,
            &format!(
                "/paths/~1api~1campaigns~1{{id}}~1state/{method}/requestBody/content/application~1json"
            ),
        );
        body.insert(
            "schema".into(),
            json!({"$ref": "#/components/schemas/JsonObject"}),
        );
    }
    for schema in ["EventBody", "MessageBody"] {
        set(
            property(doc, schema, "name"),
            &json!({"pattern": event_name()}),
        );
    }
    set(
        property(doc, "BatchBody", "events"),
        &json!({"minItems": 1, "maxItems": engine::MAX_BATCH_EVENTS}),
    );
    set(
        parameter(
            doc,
            "/api/campaigns/{id}/users/{user_id}/messages",
            "post",
            "user_id",
        ),
        &json!({"pattern": user_id()}),
    );
    for name in ["tag", "q"] {
        set(
            parameter(doc, "/api/campaigns", "get", name),
            &json!({"maxLength": MAX_FILTER_LEN}),
        );
    }
}

fn users(doc: &mut Value) {
    set(
        property(doc, "NewUser", "username"),
        &json!({
            "pattern": username(),
            "description": format!(
                "{}–{} characters among `a-z`, `A-Z`, `0-9`, `_`, `-` and `.`; stored in \
                 lowercase.",
                USERNAME_LEN.start(),
                USERNAME_LEN.end()
            ),
        }),
    );
    let email = json!({
        "maxLength": MAX_EMAIL_LEN,
        "pattern": email(),
        "description": format!(
            "An address like `name@example.org`, at most {MAX_EMAIL_LEN} characters; stored in \
             lowercase."
        ),
    });
    let password = json!({
        "minLength": PASSWORD_LEN.start(),
        "maxLength": PASSWORD_LEN.end(),
        "description": format!("{}–{} characters.", PASSWORD_LEN.start(), PASSWORD_LEN.end()),
    });
    let display_name = json!({
        "pattern": trimmed(1, MAX_DISPLAY_NAME_LEN, CONTROL),
        "description": format!(
            "1–{MAX_DISPLAY_NAME_LEN} characters once leading and trailing white space is \
             trimmed, no control characters."
        ),
    });
    set(property(doc, "NewUser", "email"), &email);
    set(property(doc, "NewUser", "password"), &password);
    set(property(doc, "NewUser", "display_name"), &display_name);
    set(property(doc, "ProfileUpdate", "email"), &email);
    set(property(doc, "ProfileUpdate", "new_password"), &password);
    // A locale, or "" to clear it.
    set(
        property(doc, "ProfileUpdate", "locale"),
        &json!({"pattern": format!("^$|{}", locale())}),
    );
    set(
        property(doc, "ProfileUpdate", "display_name"),
        &display_name,
    );
    set(
        property(doc, "ProfileUpdate", "current_password"),
        &json!({"description": "The password now: needed with `new_password`."}),
    );
    // A new password needs the current one.
    set(
        at(doc, "/components/schemas/ProfileUpdate"),
        &json!({
            "if": {"properties": {"new_password": {"type": "string"}}, "required": ["new_password"]},
            "then": {"properties": {"current_password": {"type": "string"}}, "required": ["current_password"]},
        }),
    );
    set(
        parameter(doc, "/api/admin/users", "get", "query"),
        &json!({"maxLength": MAX_USER_QUERY_LEN}),
    );
}

fn content(doc: &mut Value) {
    let title = |min| json!({"pattern": trimmed(min, MAX_TITLE_LEN, NUL)});
    let body = json!({"maxLength": MAX_BODY_LEN, "pattern": format!("^[^{NUL}]*$")});
    let url = json!({"maxLength": MAX_URL_LEN, "pattern": url()});
    let tag = json!({"type": "string", "maxLength": MAX_TAG_LEN, "pattern": not_blank(NUL)});
    for schema in ["NewContent", "ContentPatch"] {
        set(property(doc, schema, "title"), &title(0));
        set(property(doc, schema, "body"), &body);
        set(property(doc, schema, "url"), &url);
        set(
            property(doc, schema, "tags"),
            &json!({"maxItems": MAX_TAGS, "items": tag}),
        );
    }
    let d = property(doc, "NewContent", "metadata")
        .get("description")
        .cloned();
    replace(
        property(doc, "NewContent", "metadata"),
        json!({"oneOf": [{"$ref": "#/components/schemas/Metadata"}, {"type": "null"}], "description": d}),
    );
    let d = property(doc, "ContentPatch", "metadata")
        .get("description")
        .cloned();
    replace(
        property(doc, "ContentPatch", "metadata"),
        json!({"oneOf": [{"$ref": "#/components/schemas/MetadataPatch"}, {"type": "null"}], "description": d}),
    );
    // What each kind needs (`validate_title`, `validate_body`, `validate_url`).
    let titled = title(1);
    set(
        at(doc, "/components/schemas/NewContent"),
        &json!({"oneOf": [
            {
                "title": "article",
                "properties": {"kind": {"const": "article"}, "title": titled},
                "required": ["kind", "title"],
            },
            {
                "title": "micro",
                "properties": {"kind": {"const": "micro"}, "body": {
                    "maxLength": MAX_MICRO_BODY_LEN,
                    "pattern": not_blank(NUL),
                }},
                "required": ["kind", "body"],
            },
            {
                "title": "video",
                "properties": {"kind": {"const": "video"}, "title": titled, "url": {"type": "string"}},
                "required": ["kind", "title", "url"],
            },
        ]}),
    );
    // A patch changes something: one field that is not `null` (`url: null` removes the url).
    let given =
        |name: &str, ty: &str| json!({"properties": {name: {"type": ty}}, "required": [name]});
    set(
        at(doc, "/components/schemas/ContentPatch"),
        &json!({"anyOf": [
            given("title", "string"),
            given("body", "string"),
            {"required": ["url"]},
            given("tags", "array"),
            given("metadata", "object"),
        ]}),
    );
    let comment = json!({"maxLength": MAX_COMMENT_LEN, "pattern": not_blank(NUL)});
    set(property(doc, "NewComment", "body"), &comment);
    set(property(doc, "CommentBody", "body"), &comment);
    for method in ["put", "delete"] {
        set(
            parameter(doc, "/api/content/{id}/reactions/{kind}", method, "kind"),
            &json!({"pattern": reaction_kind()}),
        );
    }
    set(
        parameter(doc, "/api/content/search", "get", "q"),
        &json!({"maxLength": MAX_QUERY_LEN, "pattern": not_blank("")}),
    );
    set(
        parameter(doc, "/api/content/search", "get", "cursor"),
        &json!({"pattern": search_offset()}),
    );
}

fn audit(doc: &mut Value) {
    let time = json!({"format": "date-time", "pattern": utc_time()});
    for path in [
        "/api/admin/audit",
        "/api/security/audit",
        "/api/security/audit/export",
    ] {
        for name in ["since", "until"] {
            set(parameter(doc, path, "get", name), &time);
        }
    }
}

fn websocket(doc: &mut Value) {
    let paths: Vec<String> = at(doc, "/paths")
        .keys()
        .filter(|p| p.starts_with("/ws/"))
        .cloned()
        .collect();
    assert!(!paths.is_empty(), "no /ws/ path");
    for path in paths {
        if path.contains("{user_id}") {
            set(
                parameter(doc, &path, "get", "user_id"),
                &json!({"pattern": user_id()}),
            );
        }
        replace(
            parameter(doc, &path, "get", "since"),
            json!({"type": "integer", "format": "uint64", "minimum": 0, "maximum": u64::MAX}),
        );
    }
}

/// `doc` at the JSON pointer `pointer`, an object.
fn at<'a>(doc: &'a mut Value, pointer: &str) -> &'a mut Map<String, Value> {
    doc.pointer_mut(pointer)
        .and_then(Value::as_object_mut)
        .unwrap_or_else(|| panic!("the OpenAPI document has no object at {pointer}"))
}

/// The schema of `property` of the component schema `schema`.
fn property<'a>(doc: &'a mut Value, schema: &str, property: &str) -> &'a mut Map<String, Value> {
    at(
        doc,
        &format!("/components/schemas/{schema}/properties/{property}"),
    )
}

/// The schema of the parameter `name` of `method path`.
fn parameter<'a>(
    doc: &'a mut Value,
    path: &str,
    method: &str,
    name: &str,
) -> &'a mut Map<String, Value> {
    doc["paths"][path][method]["parameters"]
        .as_array_mut()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == name)
        .and_then(|p| p.get_mut("schema"))
        .and_then(Value::as_object_mut)
        .unwrap_or_else(|| {
            panic!("the OpenAPI document has no parameter {name} on {method} {path}")
        })
}

/// Adds (or overwrites) the keys of `rule` in `schema`.
fn set(schema: &mut Map<String, Value>, rule: &Value) {
    for (k, v) in rule.as_object().expect("a rule is an object") {
        schema.insert(k.clone(), v.clone());
    }
}

/// Replaces `schema` with `with`, dropping a `null` description.
fn replace(schema: &mut Map<String, Value>, with: Value) {
    schema.clear();
    for (k, v) in with.as_object().expect("a schema is an object") {
        if !v.is_null() || k != "description" {
            schema.insert(k.clone(), v.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The generated document at `pointer`.
    fn doc_at(pointer: &str) -> Value {
        let doc = crate::openapi::document();
        doc.pointer(pointer)
            .cloned()
            .unwrap_or_else(|| panic!("no {pointer}"))
    }

    fn prop(schema: &str, name: &str) -> Value {
        doc_at(&format!("/components/schemas/{schema}/properties/{name}"))
    }

    fn param(path: &str, method: &str, name: &str) -> Value {
        let ops = doc_at("/paths");
        let params = ops[path][method]["parameters"].as_array().cloned();
        params
            .into_iter()
            .flatten()
            .find(|p| p["name"] == name)
            .map(|p| p["schema"].clone())
            .unwrap_or_else(|| panic!("no parameter {name} on {method} {path}"))
    }

    #[test]
    fn lengths_come_from_the_validators_constants() {
        let password = prop("NewUser", "password");
        assert_eq!(password["minLength"], *PASSWORD_LEN.start());
        assert_eq!(password["maxLength"], *PASSWORD_LEN.end());
        let new_password = prop("ProfileUpdate", "new_password");
        assert_eq!(new_password["minLength"], password["minLength"]);
        assert_eq!(new_password["maxLength"], password["maxLength"]);
        assert_eq!(prop("NewUser", "email")["maxLength"], MAX_EMAIL_LEN);
        assert_eq!(
            prop("NewUser", "username")["pattern"],
            format!(
                "^[A-Za-z0-9_.-]{{{},{}}}$",
                USERNAME_LEN.start(),
                USERNAME_LEN.end()
            )
        );
        assert_eq!(prop("NewComment", "body")["maxLength"], MAX_COMMENT_LEN);
        assert_eq!(prop("CommentBody", "body")["maxLength"], MAX_COMMENT_LEN);
        assert_eq!(prop("NewContent", "body")["maxLength"], MAX_BODY_LEN);
        assert_eq!(prop("NewContent", "url")["maxLength"], MAX_URL_LEN);
        assert_eq!(prop("NewContent", "tags")["maxItems"], MAX_TAGS);
        assert_eq!(
            prop("NewContent", "tags")["items"]["maxLength"],
            MAX_TAG_LEN
        );
        let micro = doc_at("/components/schemas/NewContent/oneOf/1/properties/body");
        assert_eq!(micro["maxLength"], MAX_MICRO_BODY_LEN);
        // A name's trimmed length: one edge character, up to `MAX - 2` inside, one edge.
        let name = prop("NewCampaign", "name")["pattern"].clone();
        assert!(
            name.as_str()
                .is_some_and(|p| p.contains(&format!("{{0,{}}}", MAX_NAME_LEN - 2))),
            "{name}"
        );
        assert_eq!(prop("CampaignPatch", "name")["pattern"], name);
        assert!(
            prop("NewUser", "display_name")["pattern"]
                .as_str()
                .is_some_and(|p| p.contains(&format!("{{0,{}}}", MAX_DISPLAY_NAME_LEN - 2)))
        );
        assert_eq!(
            prop("EventBody", "name")["pattern"],
            format!("^[A-Za-z0-9_.:-]{{1,{}}}$", engine::session::MAX_EVENT_NAME)
        );
        assert_eq!(
            prop("MessageBody", "name")["pattern"],
            prop("EventBody", "name")["pattern"]
        );
        assert_eq!(prop("BatchBody", "events")["maxItems"], 1000);
        assert_eq!(
            engine::MAX_BATCH_EVENTS,
            services::campaign::MAX_BATCH_EVENTS,
            "the service and the engine agree on a batch's size"
        );
        assert_eq!(
            prop("NewCampaign", "slug")["pattern"],
            format!("^[a-z0-9][a-z0-9-]{{0,{}}}$", MAX_SLUG_LEN - 1)
        );
        let kind = param("/api/content/{id}/reactions/{kind}", "put", "kind");
        assert_eq!(
            kind["pattern"],
            format!("^[a-z0-9_]{{1,{MAX_REACTION_KIND_LEN}}}$")
        );
        assert_eq!(
            param("/api/content/search", "get", "q")["maxLength"],
            MAX_QUERY_LEN
        );
        assert_eq!(
            param("/api/campaigns", "get", "q")["maxLength"],
            MAX_FILTER_LEN
        );
        assert_eq!(
            param("/api/admin/users", "get", "query")["maxLength"],
            MAX_USER_QUERY_LEN
        );
        for name in ["entity_type", "kind"] {
            assert_eq!(
                param("/api/scheduler/jobs", "get", name)["pattern"],
                format!(
                    "^[a-z0-9][a-z0-9._-]{{0,{}}}$",
                    services::scheduler::model::MAX_NAME_LEN - 1
                )
            );
        }
        let frequency = doc_at(
            "/components/schemas/Metadata/properties/scheduling/allOf/1/properties/frequency",
        );
        assert_eq!(frequency["minimum"], MIN_FREQUENCY_HZ);
        assert_eq!(frequency["maximum"], MAX_FREQUENCY_HZ);
    }

    #[test]
    fn since_is_an_unsigned_64_bit_integer() {
        let since = param("/ws/{campaign_id}/{user_id}", "get", "since");
        assert_eq!(
            since,
            json!({"type": "integer", "format": "uint64", "minimum": 0, "maximum": u64::MAX})
        );
    }

    #[test]
    fn every_query_text_is_non_empty() {
        let paths = doc_at("/paths");
        let mut seen = 0;
        for (path, item) in paths.as_object().expect("paths") {
            for op in item.as_object().expect("item").values() {
                for p in op["parameters"].as_array().into_iter().flatten() {
                    if path.starts_with("/api/")
                        && p["in"] == "query"
                        && p["schema"]["type"] == "string"
                    {
                        assert_eq!(p["schema"]["minLength"], 1, "{path} {}", p["name"]);
                        seen += 1;
                    }
                }
            }
        }
        assert!(seen > 10, "{seen} query strings");
    }

    #[test]
    fn patterns_are_built_as_documented() {
        assert_eq!(
            trimmed(1, 5, NUL),
            format!("^[{SPACE}]*[^{SPACE}{NUL}](?:[^{NUL}]{{0,3}}[^{SPACE}{NUL}])?[{SPACE}]*$")
        );
        assert!(trimmed(0, 5, NUL).contains(&format!("[{SPACE}]*(?:")));
        assert_eq!(search_offset(), r"^\+?0*(?:[0-9]{1,4}|10000)$");
    }
}
