"""Finding the cause of a start-up failure inside the exception groups trio's nurseries raise."""

from __future__ import annotations

from typing import TypeVar

_E = TypeVar("_E", bound=BaseException)


def os_error_of(e: BaseException) -> OSError | None:
    """The OSError behind a start-up failure, also when a nursery wrapped it in a group."""
    return exception_of(e, OSError)


def exception_of(e: BaseException, kind: type[_E]) -> _E | None:
    """The first exception of type ``kind`` in ``e``, looking inside exception groups."""
    if isinstance(e, kind):
        return e
    if isinstance(e, BaseExceptionGroup):
        for inner in e.exceptions:
            found = exception_of(inner, kind)
            if found is not None:
                return found
    return None
