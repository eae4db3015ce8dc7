"""Schemathesis hooks of .ci/schemathesis: leave out the generated requests that the server
refuses for a reason JSON Schema cannot state (the OpenAPI descriptions state it)."""

import re

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
    if (path, method) == ("/api/content/search", "GET"):
        q = (case.query or {}).get("q")
        if isinstance(q, str) and _words(q) > MAX_QUERY_WORDS:
            return False
    return True
