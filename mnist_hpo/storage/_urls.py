"""Storage URLs: which one to use, and how to show it without its password."""

from __future__ import annotations

import os
import re

from sqlalchemy.engine import make_url

DEFAULT_STORAGE = "sqlite:///mnist-hpo.db"
STORAGE_ENV = "MNIST_HPO_STORAGE"

ACCEPTED_FORMS = (
    "sqlite:///RELATIVE/PATH.db or sqlite:////ABSOLUTE/PATH.db, "
    "postgresql://USER:PASSWORD@HOST:PORT/DB (driven by psycopg 3), "
    "journal:PATH (an Optuna journal file) or grpc://HOST:PORT (an Optuna gRPC proxy)"
)

# user:PASSWORD@host in the netloc; the greedy group runs to the LAST '@', so an unescaped
# '@' inside the password is masked too (masking too much beats leaking part of a secret).
_WITH_SCHEME = re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/?#@]*:)(?P<pw>.*)@(?P<tail>[^@]*)$", re.S)
_WITHOUT_SCHEME = re.compile(r"^(?P<head>[^:/?#@]*:)(?P<pw>.*)@(?P<tail>[^@]*)$", re.S)
_QUERY_PASSWORD = re.compile(r"(?i)([?&](?:password|passwd|pwd)=)[^&#]*")


def resolve_url(url: str | None) -> str:
    """The storage URL to use: `url`, else $MNIST_HPO_STORAGE, else DEFAULT_STORAGE (blank counts as unset)."""
    for candidate in (url, os.environ.get(STORAGE_ENV)):
        if candidate is not None and candidate.strip():
            return candidate.strip()
    return DEFAULT_STORAGE


def mask_url(url: str) -> str:
    """`url` with its password shown as *** (also for strings SQLAlchemy cannot parse)."""
    if url.startswith("journal:"):
        return url  # a file path, nothing secret in it
    masked: str | None = None
    try:
        parsed = make_url(url)
    except Exception:  # ArgumentError, ValueError (bad port), ...: fall back to the regex
        parsed = None
    if parsed is not None and url.count("@") <= 1:
        masked = url if parsed.password is None else parsed.render_as_string(hide_password=True)
    if masked is None:
        pattern = _WITH_SCHEME if "://" in url else _WITHOUT_SCHEME
        masked = pattern.sub(r"\g<head>***@\g<tail>", url)
    return _QUERY_PASSWORD.sub(r"\1***", masked)
