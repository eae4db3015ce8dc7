//! BCP 47 language tags and the fallback chain: `fr-CA` → `fr` → the default locale.
//!
//! A tag is a language identifier (`language[-script][-region][-variant]*`, e.g. `fr`,
//! `fr-CA`, `zh-Hant-TW`, `sr-Latn`): validated with `unic-langid` (the identifiers Fluent
//! itself uses) and kept in its canonical form (`fr-ca` and `fr_CA` are stored as `fr-CA`).
//! Extensions (`-u-...`, `-x-...`) are refused: messages and prices are chosen by language and
//! region only.

use unic_langid::LanguageIdentifier;

use crate::ServiceError;

/// Longest accepted tag.
pub const MAX_LOCALE_LEN: usize = 35;

/// `s` as a language identifier in canonical form.
///
/// # Errors
/// [`ServiceError::Invalid`] naming `field`, for anything that is not a BCP 47 language
/// identifier with a language (`und` is refused), or that is longer than
/// [`MAX_LOCALE_LEN`].
pub fn parse(field: &str, s: &str) -> Result<LanguageIdentifier, ServiceError> {
    let refuse = |why: &str| {
        ServiceError::invalid(
            field,
            format!(
                "{:?} is not a BCP 47 language tag like en, fr-CA or zh-Hant-TW: {why}",
                s.chars().take(MAX_LOCALE_LEN + 1).collect::<String>()
            ),
        )
    };
    if s.is_empty() || s.len() > MAX_LOCALE_LEN {
        return Err(refuse(&format!("must have 1-{MAX_LOCALE_LEN} characters")));
    }
    if !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(refuse("only letters, digits and '-' are allowed"));
    }
    let id = LanguageIdentifier::from_bytes(s.as_bytes()).map_err(|e| refuse(&e.to_string()))?;
    if id.language.as_str() == "und" {
        return Err(refuse("a language is required"));
    }
    Ok(id)
}

/// `s` in canonical form (see [`parse`]).
///
/// # Errors
/// As [`parse`].
pub fn canonical(field: &str, s: &str) -> Result<String, ServiceError> {
    parse(field, s).map(|id| id.to_string())
}

/// The locales tried, in order, for `requested`: itself, then without its variants, region and
/// script in turn, then the same for `default` (`fr-CA` with default `en` → `fr-CA`, `fr`,
/// `en`). No locale appears twice.
pub fn fallback_chain(
    requested: &LanguageIdentifier,
    default: &LanguageIdentifier,
) -> Vec<LanguageIdentifier> {
    let mut chain: Vec<LanguageIdentifier> = Vec::with_capacity(6);
    for start in [requested, default] {
        let mut id = start.clone();
        let mut push = |id: &LanguageIdentifier| {
            if !chain.contains(id) {
                chain.push(id.clone());
            }
        };
        push(&id);
        if id.variants().len() > 0 {
            id.clear_variants();
            push(&id);
        }
        if id.region.is_some() {
            id.region = None;
            push(&id);
        }
        if id.script.is_some() {
            id.script = None;
            push(&id);
        }
    }
    chain
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(requested: &str, default: &str) -> Vec<String> {
        let r = parse("locale", requested).expect("requested");
        let d = parse("default", default).expect("default");
        fallback_chain(&r, &d)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn tags_are_validated_and_canonical() {
        assert_eq!(canonical("l", "fr-ca").expect("fr-ca"), "fr-CA");
        assert_eq!(canonical("l", "zh-hant-tw").expect("zh"), "zh-Hant-TW");
        assert_eq!(canonical("l", "EN").expect("en"), "en");
        for bad in [
            "",
            "e",
            "english-languages",
            "fr_CA",
            "fr-CA-u-nu-latn",
            "und",
            "en-",
            "12",
            "fr CA",
            &"a".repeat(40),
        ] {
            assert!(parse("l", bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn the_chain_drops_subtags_then_falls_back_to_the_default() {
        assert_eq!(chain("fr-CA", "en"), ["fr-CA", "fr", "en"]);
        assert_eq!(chain("fr", "en"), ["fr", "en"]);
        assert_eq!(chain("en-GB", "en"), ["en-GB", "en"]);
        assert_eq!(
            chain("zh-Hant-TW", "en-US"),
            ["zh-Hant-TW", "zh-Hant", "zh", "en-US", "en"]
        );
        assert_eq!(chain("en", "en"), ["en"]);
    }
}
