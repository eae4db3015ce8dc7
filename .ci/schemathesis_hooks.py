"""Schemathesis hooks of .ci/schemathesis: leave out the generated requests that the server
refuses for a reason JSON Schema cannot state (the OpenAPI descriptions state it)."""

import re
from decimal import Decimal

import schemathesis

# services/src/content/model.rs: MAX_QUERY_WORDS.
MAX_QUERY_WORDS = 32

_UTC = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d+))?(?:Z|\+00:00)$")


def _instant(value):
    """A comparable instant for an RFC 3339 UTC time the server reads, else None."""
    m = _UTC.match(value) if isinstance(value, str) else None
    if m is None:
        return None
    return (m.group(1), int((m.group(2) or "0").ljust(9, "0")[:9]))


def _words(text):
    """Runs of letters and digits, as services::content::model::search_expression counts them
    (Python's `isalnum` for Rust's `is_alphanumeric`: they differ on a few combining marks)."""
    words, inside = 0, False
    for c in text:
        if c.isalnum():
            words += not inside
            inside = True
        else:
            inside = False
    return words


@schemathesis.hook
def filter_case(ctx, case):
    path, method = case.operation.path, case.operation.method.upper()
    body = case.body if isinstance(case.body, dict) else {}
    if (path, method) in (("/api/campaigns", "POST"), ("/api/campaigns/{id}", "PATCH")):
        # A campaign ends after it starts.
        start, end = _instant(body.get("starts_at")), _instant(body.get("ends_at"))
        if start is not None and end is not None and end <= start:
            return False
    if (path, method) in (("/api/babel/rules", "POST"), ("/api/babel/rules/{id}", "PUT")):
        # JSON Schema counts 311.0 as an integer; the server reads integers as JSON integers.
        if any(isinstance(body.get(k), float) for k in ("amount", "tax_rate_bp")):
            return False
        # A rule is for exactly one of a SKU and a category.
        if (body.get("sku") is None) == (body.get("category") is None):
            return False
        # ... priced by exactly one of an explicit amount and a multiplier.
        if (body.get("amount") is None) == (body.get("multiplier") is None):
            return False
        # Rounding is for multiplier rules, which multiply by more than 0 and at most 1000.
        if body.get("rounding") is not None and body.get("multiplier") is None:
            return False
        m = body.get("multiplier")
        if isinstance(m, str) and re.fullmatch(r"[0-9]{1,5}(?:\.[0-9]{1,4})?", m) and not (0 < Decimal(m) <= 1000):
            return False
    if (path, method) == ("/api/babel/markets/{code}", "PATCH"):
        # A patch names something to change.
        if not any(body.get(k) is not None for k in ("name", "currency", "locale", "countries")):
            return False
    if (path, method) == ("/api/babel/price", "GET"):
        # A base price is an amount and its currency together.
        q = case.query or {}
        if ("base_amount" in q) != ("base_currency" in q):
            return False
    if (path, method) == ("/api/content/search", "GET"):
        q = (case.query or {}).get("q")
        if isinstance(q, str) and _words(q) > MAX_QUERY_WORDS:
            return False
    if (path, method) == ("/api/auth/register", "POST") and isinstance(body.get("referral_code"), str):
        # A code registers only when it exists and is active (api/tests/referral.rs tests
        # both sides); a generated one does not.
        return False
    if (path, method) == ("/api/referral/codes", "POST") and isinstance(body.get("campaign_id"), str):
        # A code's campaign must exist (api/tests/referral.rs tests both sides).
        return False
    if path.startswith("/api/commerce/"):
        # JSON Schema counts 5.0 as an integer; the server reads integers as JSON integers.
        def floats(v):
            if isinstance(v, float):
                return True
            if isinstance(v, dict):
                return any(floats(x) for x in v.values())
            if isinstance(v, list):
                return any(floats(x) for x in v)
            return False
        if floats(body):
            return False
        # An order names each SKU once.
        lines = body.get("lines")
        if isinstance(lines, list):
            skus = [l["sku"] for l in lines if isinstance(l, dict) and isinstance(l.get("sku"), str)]
            if len(skus) != len(set(skus)):
                return False
        # A movement's entries sum to zero.
        entries = body.get("entries")
        if isinstance(entries, list):
            amounts = [e.get("amount") for e in entries if isinstance(e, dict)]
            if all(isinstance(a, int) for a in amounts) and sum(amounts) != 0:
                return False
    return True
