"""The one retry policy: which errors are worth another attempt, and how long to wait.

Transient: the database or the broker could not be reached, the network timed out, or
the system refused an I/O call for a reason that may pass (a full disk, too many open
files, a dropped connection). Anything else is a fact about the job (bad input, a
missing file, a bug) that another attempt would only repeat, so it fails the job.
"""

from django.conf import settings
from django.db import InterfaceError
from django.db import OperationalError as DatabaseOperationalError
from kombu.exceptions import OperationalError as BrokerOperationalError

# A missing or unreadable path is a fact about the job, not a hiccup.
PERMANENT_OS_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


def _optional(module: str, *names: str) -> tuple[type[BaseException], ...]:
    """Exception classes of client libraries that may not be installed."""
    try:
        imported = __import__(module, fromlist=list(names))
    except ImportError:
        return ()
    return tuple(getattr(imported, name) for name in names)


TRANSIENT = (
    DatabaseOperationalError,  # connection refused or lost, SQLite "database is locked"
    InterfaceError,  # a connection closed under us
    BrokerOperationalError,  # kombu: the broker is unreachable
    ConnectionError,
    TimeoutError,
    *_optional("redis.exceptions", "ConnectionError", "TimeoutError"),
    *_optional("botocore.exceptions", "ConnectionError", "ReadTimeoutError"),
)


def is_transient(error: BaseException) -> bool:
    if isinstance(error, TRANSIENT):
        return True
    if isinstance(error, OSError) and not isinstance(error, PERMANENT_OS_ERRORS):
        # Only a system call's failure (it has an errno). Libraries raise a bare OSError for
        # bad data too: Pillow's "cannot identify image file", "image file is truncated".
        return error.errno is not None
    return False


def backoff_s(attempt: int) -> float:
    """Seconds before retrying after failed attempt ``attempt`` (1, 2, …): doubling, at most 5 min."""
    return min(settings.TWOAFC_JOB_RETRY_S * 2 ** (attempt - 1), 300)


def max_attempts() -> int:
    return settings.TWOAFC_JOB_MAX_ATTEMPTS
