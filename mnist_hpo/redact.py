"""Secrets out of everything mnist-hpo shows or stores.

A storage URL's password, a secret query parameter (``?password=``, ``?token=``...) and the value
of a secret environment variable (``$AWS_SECRET_ACCESS_KEY``, ``$PGPASSWORD``...) become ``***``
in messages, in the command line a study records, in notes and reports, and in the process title
that ``ps`` shows. Torch-free and Optuna-free, so the CLI can hide its own arguments first thing.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping, Sequence

MASK = "***"

# user:PASSWORD@host in the netloc; the greedy group runs to the LAST '@', so an unescaped
# '@' inside the password is masked too (masking too much beats leaking part of a secret).
_WITH_SCHEME = re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/?#@]*:)(?P<pw>.*)@(?P<tail>[^@]*)$", re.S)
_WITHOUT_SCHEME = re.compile(r"^(?P<head>[^:/?#@]*:)(?P<pw>.*)@(?P<tail>[^@]*)$", re.S)
# The same inside free text (a note, a stored command line): a URL ends at white space or a quote.
_IN_TEXT = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^:/?#@\s'\"`]*:)(?P<pw>[^\s'\"`]*)@")
_SECRET_QUERY = re.compile(r"(?i)([?&][a-z_]*(?:password|passwd|pwd|secret|token|access_key|api_key)=)[^&#\s'\"`]*")
#: Environment variables whose values are secrets wherever they turn up.
_SECRET_ENV_NAME = re.compile(r"(?i)(PASSWORD|PASSWD|SECRET|TOKEN|CREDENTIAL)")
_MIN_SECRET = 4  # shorter values would mask ordinary words


def mask_url(url: str) -> str:
    """``url`` with its password and secret query parameters shown as ***, also for strings no parser accepts."""
    if url.startswith("journal:"):
        return url  # a file path, nothing secret in it
    pattern = _WITH_SCHEME if "://" in url else _WITHOUT_SCHEME
    return _SECRET_QUERY.sub(rf"\1{MASK}", pattern.sub(rf"\g<head>{MASK}@\g<tail>", url))


def without_secrets(url: str) -> str:
    """``url`` with its password and secret query parameters left out: what a printed command may hold.

    libpq reads a missing password from $PGPASSWORD or ~/.pgpass, so the command still runs where
    the user has supplied the secret that way; a masked ``***`` would be sent as the password.
    """
    if url.startswith("journal:"):
        return url
    match = (_WITH_SCHEME if "://" in url else _WITHOUT_SCHEME).match(url)
    if match:
        url = f"{match['head'][:-1]}@{match['tail']}"
    base, _, query = url.partition("?")
    kept = [part for part in query.split("&") if part and not _SECRET_QUERY.match(f"?{part}")]
    return base + (f"?{'&'.join(kept)}" if kept else "")


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """The values of the secret environment variables, longest first (so none is half-masked)."""
    environ = os.environ if environ is None else environ
    values = {value for name, value in environ.items() if _SECRET_ENV_NAME.search(name) and len(value) >= _MIN_SECRET}
    return sorted(values, key=len, reverse=True)


def redact(text: str, environ: Mapping[str, str] | None = None) -> str:
    """``text`` with every URL password, secret query parameter and secret environment value masked."""
    text = _IN_TEXT.sub(rf"\g<head>{MASK}@", text)
    text = _SECRET_QUERY.sub(rf"\1{MASK}", text)
    for value in secret_values(environ):
        text = text.replace(value, MASK)
    return text


def redact_arg(arg: str, environ: Mapping[str, str] | None = None) -> str:
    """One command-line argument, masked: a URL's password may hold spaces and quotes there."""
    start = re.search(r"[A-Za-z][A-Za-z0-9+.\-]*://", arg)
    if start is not None:  # --storage URL or --storage=URL
        arg = arg[: start.start()] + mask_url(arg[start.start() :])
    return redact(arg, environ)


def command_line(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> str:
    """The command as typed, masked: what a study records and what ``ps`` may show."""
    return shlex.join(["mnist-hpo", *(redact_arg(arg, environ) for arg in argv)])


def hide_process_arguments(argv: Sequence[str]) -> None:
    """Show the masked command line in ``ps`` and /proc/PID/cmdline if the typed one holds a secret.

    The kernel showed the typed command until this point: ``$MNIST_HPO_STORAGE`` keeps a password
    out of the command line altogether (the README's advice for shared machines).
    """
    masked = command_line(argv)
    if masked != shlex.join(["mnist-hpo", *argv]):
        import setproctitle

        setproctitle.setproctitle(masked)
