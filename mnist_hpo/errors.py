"""Errors the user can fix: the CLI prints them as one line and exits with status 2."""


class UserError(Exception):
    """Bad input or environment; the message says what is wrong and how to fix it."""


class DataError(UserError):
    """MNIST or a CSV could not be found, fetched or parsed."""


class ModelError(UserError):
    """Unknown model name or an impossible architecture."""


class TrainingDiverged(Exception):
    """The loss became NaN or infinite; the search turns this into a pruned trial."""


class SearchInterrupted(Exception):
    """Ctrl-C or SIGTERM during a search: the running trial was marked FAIL; exit status 130."""


class StorageUnavailable(UserError):
    """The study's database stayed unreachable for longer than the reconnect window."""
