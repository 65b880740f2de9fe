"""The `mnist-hpo` command: parse arguments, call one function, turn known errors into one line.

Each command function lives in ``mnist_hpo.commands``; this package only declares the options.
"""

from __future__ import annotations

import sys

from mnist_hpo.cli import _models, _search, _studies  # noqa: F401  (they register their commands on the app)
from mnist_hpo.cli._app import app
from mnist_hpo.errors import SearchInterrupted, UserError
from mnist_hpo.redact import hide_process_arguments

__all__ = ["app", "main"]


def main(argv: list[str] | None = None) -> None:
    """Entry point: known errors become `error: ...` on one line and exit status 2."""
    if argv is None:  # the real command line, not a caller's list
        hide_process_arguments(sys.argv[1:])
    try:
        code = app(args=argv, standalone_mode=False)
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


def _fail(message: str) -> None:
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(2)
