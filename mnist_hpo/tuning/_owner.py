"""Which process is doing something to a study (creating it, running a trial), as a record in the storage.

A later command on the same machine reads the record and knows at once whether that process is
gone, instead of waiting out a timeout or a heartbeat's grace period. Elsewhere it cannot know, and
says nothing: the slower, clock-based checks still apply. The pid namespace is part of "the same
machine": two containers may share a host name, never a namespace.
"""

from __future__ import annotations

import os
import socket
from typing import Any


def this_process() -> dict[str, Any]:
    """This process as a record (host, pid and pid namespace where known), JSON-serialisable for the storage."""
    record: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid()}
    namespace = _pid_namespace()
    if namespace:
        record["pidns"] = namespace
    return record


def process_gone(record: Any) -> bool:
    """True if the recorded process ran on this machine and no longer exists; False if alive or unknown (elsewhere)."""
    if not isinstance(record, dict) or record.get("host") != socket.gethostname():
        return False
    if record.get("pidns") is not None and record["pidns"] != _pid_namespace():
        return False  # same host name, another container: its pids are not ours to ask about
    try:
        os.kill(int(record["pid"]), 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except (PermissionError, KeyError, TypeError, ValueError, OverflowError):  # alive under another user, or a record not ours
        pass
    return False


def _pid_namespace() -> str | None:
    """This process's pid namespace ('pid:[4026531836]' on Linux); None where there is no such thing."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
