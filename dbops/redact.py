"""Keep passwords out of every message, log line, metadata value and stored statement text."""

from __future__ import annotations

import re

MASK = "***"

# user:password@ inside any URL-looking text. Greedy up to the last "@" of the token: a password with an unencoded
# "@", "/" or "?" (a malformed URL) is still masked whole.
_URL_PASSWORD = re.compile(r"""(?P<scheme>[a-z][a-z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^\s"'<>]*)@""", re.I)
# password=... in libpq keyword strings, query strings and config dumps (a "$1" placeholder is no secret)
_KW_PASSWORD = re.compile(
    r"(?P<key>\b(?:password|passwd|pwd)\s*[=:]\s*)(?P<q>['\"]?)(?!\$\d)(?P<pw>[^'\"\s&;]+)(?P=q)", re.I
)
# A password literal in SQL: ALTER/CREATE ROLE|USER ... [ENCRYPTED] PASSWORD '...', also E'...', U&'...' and
# dollar-quoted ($$...$$, $tag$...$tag$) forms, and OPTIONS (password '...') of user mappings. pg_stat_statements
# keeps utility statements verbatim, literals included. An unterminated literal is masked to the end of the text.
_SQL_PASSWORD = re.compile(
    r"(?P<kw>\b(?:(?:UN)?ENCRYPTED\s+)?PASSWORD\s*)"
    r"(?P<lit>[Ee]'(?:[^'\\]|\\.|'')*(?:'|\Z)"
    r"|[Uu]&'(?:[^']|'')*(?:'|\Z)"
    r"|'(?:[^']|'')*(?:'|\Z)"
    r"|(?P<tag>\$(?:[^\W\d]\w*)?\$)(?:.*?(?P=tag)|.*\Z))",
    re.I | re.S,
)

_known_secrets: set[str] = set()


MIN_SECRET_LENGTH = 8


def register_secret(secret: str | None) -> None:
    """Remember a secret value so :func:`redact` masks it wherever it appears.

    Values shorter than 8 characters are not registered: masking a common word ("refused", "admin") everywhere would
    corrupt every message, and such short values are reported as weak by the security audit anyway. URLs,
    ``password=`` pairs and SQL password literals are still masked by pattern whatever the length.
    """
    if secret and len(secret) >= MIN_SECRET_LENGTH:
        _known_secrets.add(secret)


def redact_sql(text: str) -> str:
    """``text`` with the password literals of SQL statements masked (``PASSWORD '***'``)."""
    return _SQL_PASSWORD.sub(lambda m: f"{m['kw']}'{MASK}'", text)


def redact(text: object) -> str:
    """Return ``text`` with URL passwords, ``password=`` values, SQL password literals and registered secrets
    masked."""
    out = redact_sql(str(text))
    out = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", out)
    out = _KW_PASSWORD.sub(lambda m: f"{m['key']}{m['q']}{MASK}{m['q']}", out)
    for secret in sorted(_known_secrets, key=len, reverse=True):
        out = out.replace(secret, MASK)
    return out


def redact_url(url: str) -> str:
    """A PostgreSQL URL safe to print: the password (in the user part or a ``password=`` parameter) is ``***``.

    Pattern-based on purpose: it must also mask the password of a URL too malformed to parse.
    """
    return redact(url)
