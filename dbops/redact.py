"""Keep passwords out of every message, log line and metadata value."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

MASK = "***"

# user:password@ inside any URL-looking text
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@\s]*)@", re.I)
# password=... in libpq keyword strings, query strings and config dumps
_KW_PASSWORD = re.compile(r"(?P<key>\b(?:password|passwd|pwd)\s*[=:]\s*)(?P<q>['\"]?)(?P<pw>[^'\"\s&;]+)(?P=q)", re.I)

_known_secrets: set[str] = set()


MIN_SECRET_LENGTH = 8


def register_secret(secret: str | None) -> None:
    """Remember a secret value so :func:`redact` masks it wherever it appears.

    Values shorter than 8 characters are not registered: masking a common word ("refused", "admin") everywhere would
    corrupt every message, and such short values are reported as weak by the security audit anyway. URLs and
    ``password=`` pairs are still masked by pattern whatever the length.
    """
    if secret and len(secret) >= MIN_SECRET_LENGTH:
        _known_secrets.add(secret)


def redact(text: object) -> str:
    """Return ``text`` with URL passwords, ``password=`` values and registered secrets masked."""
    out = str(text)
    out = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", out)
    out = _KW_PASSWORD.sub(lambda m: f"{m['key']}{m['q']}{MASK}{m['q']}", out)
    for secret in sorted(_known_secrets, key=len, reverse=True):
        out = out.replace(secret, MASK)
    return out


def redact_url(url: str) -> str:
    """A PostgreSQL URL safe to print: the password replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact(url)
    if parts.password is None:
        return redact(url)
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return redact(urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{netloc}")))
