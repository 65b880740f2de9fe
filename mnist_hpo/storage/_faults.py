"""Storage faults as one line: what broke under the study, and what to do about it.

Optuna wraps a failed commit in ``StorageInternalError`` and SQLAlchemy wraps the driver's error;
the cause is the driver's message somewhere down the exception chain. A fault found here becomes
a ``UserError`` (exit 2, one line); anything else is left to surface as the bug it is.
"""

from __future__ import annotations

from mnist_hpo.errors import UserError

#: (a fragment of the driver's or the OS's message, the line to print)
_FAULTS = (
    (
        "database or disk is full",
        "the disk under the study database is full: free some space, then {then} (finished trials are kept)",
    ),
    (
        "attempt to write a readonly database",
        "the study database is read-only: make the file, its folder and its -wal/-shm files writable, or pass another --storage",
    ),
    (
        "database disk image is malformed",
        "the study database is damaged (database disk image is malformed): restore it from a backup, or salvage it with "
        "`sqlite3 FILE .recover | sqlite3 NEW.db` and pass --storage sqlite:///NEW.db",
    ),
    ("file is not a database", "the --storage file is not an SQLite database (file is not a database): pass the study's own .db file"),
    (
        "database is locked",
        "the study database stayed locked by another process past the busy timeout: let that process finish, "
        "or use PostgreSQL or journal:PATH for many processes",
    ),
    ("disk I/O error", "the disk under the study database failed to read or write (disk I/O error): check the disk, then {then}"),
)


def storage_fault(exc: BaseException, then: str = "run the same command again") -> UserError | None:
    """The one-line error for a storage fault anywhere in ``exc``'s chain, or None if it is no storage fault.

    ``then``: what to do once the fault is fixed, where the caller knows better than "the same command
    again" (a search that added N trials to its budget would add them twice: the engine names the
    command that continues the study).
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(getattr(current, "orig", None) or current)
        for fragment, line in _FAULTS:
            if fragment in text:
                return UserError(line.format(then=then))
        current = current.__cause__ or current.__context__
    return None
