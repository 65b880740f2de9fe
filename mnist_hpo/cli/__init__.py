"""The `mnist-hpo` command: parse arguments, call one function, turn known errors into one line.

Each command function lives in ``mnist_hpo.commands``; this package only declares the options.
"""

from __future__ import annotations

import sys
from typing import Any

import typer

from mnist_hpo.cli import _models, _search, _studies  # noqa: F401  (they register their commands on the app)
from mnist_hpo.cli._app import app
from mnist_hpo.errors import SearchInterrupted, UserError
from mnist_hpo.redact import hide_process_arguments
from mnist_hpo.trainer import wait_passively

__all__ = ["app", "main"]


def main(argv: list[str] | None = None) -> None:
    """Entry point: known errors become `error: ...` on one line and exit status 2."""
    wait_passively()  # before torch loads OpenMP: its threads sleep, never spin, while they wait for cores
    if argv is None:  # the real command line, not a caller's list
        hide_process_arguments(sys.argv[1:])
    try:
        code = _command().main(args=argv, standalone_mode=False)
    except UserError as exc:
        _fail(str(exc))
    except SearchInterrupted as exc:
        print(str(exc), file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        from mnist_hpo.storage import storage_fault

        fault = storage_fault(exc)
        if fault is not None:  # a full disk, a damaged database...: what broke and what to do
            _fail(str(fault))
        if getattr(exc, "exit_code", None) != 2:  # typer's usage errors (bad option, bad value)
            raise
        if type(exc).__name__ == "NoArgsIsHelpError":  # a bare command group: its help is the answer
            print(exc.format_message())
            sys.exit(0)
        _fail(exc.format_message().replace("\n", " "))
    sys.exit(code if isinstance(code, int) else 0)


def _command() -> Any:  # typer's own (vendored) click Command
    """The click command typer builds, each command listed in `--help` with its whole first sentence."""
    command = typer.main.get_command(app)
    _whole_short_help(command)
    return command


def _whole_short_help(group: Any) -> None:
    """Click cuts a command's line in the listing at about 45 characters ("prints validation..."); wrapped is better."""
    for sub in getattr(group, "commands", {}).values():
        if sub.help and not sub.short_help:
            sub.short_help = " ".join(sub.help.split("\n\n")[0].split())
        _whole_short_help(sub)


def _fail(message: str) -> None:
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(2)
