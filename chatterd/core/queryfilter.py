"""Which members a user query is for (core/userquery.py), as Serf's ``-node`` and ``-tag``
filters: a member matches when its name is among ``nodes`` (if any are given) and, for each
``KEY=REGEX`` tag filter, it has tag KEY and REGEX matches somewhere in its value (a search,
as Serf's ``regexp.MatchString``: anchor with ``^...$`` for the whole value).

The filters travel with the query and each receiver judges itself, so a pattern may come
from anyone who can send a datagram: it is bounded in length (core/wire.py), and matched by
the ``regex`` module under a time budget, QUERY_REGEX_BUDGET per pattern; a pattern that
does not compile or runs out of time matches nothing (the caller counts it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import regex

from chatterd.core.config import MAX_QUERY_NODES, MAX_QUERY_TAGS, MAX_TAG_REGEX, QUERY_REGEX_BUDGET


class FilterError(ValueError):
    """A filter that cannot be used; the text says why."""


@dataclass(frozen=True)
class Filters:
    nodes: frozenset[str]
    tags: tuple[tuple[str, regex.Pattern[str]], ...]

    def matches(self, name: str, tags: Mapping[str, str]) -> bool:
        """Is the member ``name`` with ``tags`` one the query is for? Raises FilterError when a
        pattern runs out of its time budget."""
        if self.nodes and name not in self.nodes:
            return False
        for key, pattern in self.tags:
            value = tags.get(key)
            if value is None:
                return False
            try:
                if pattern.search(value, timeout=QUERY_REGEX_BUDGET) is None:
                    return False
            except TimeoutError:
                raise FilterError(f"the pattern for tag {key!r} took too long") from None
        return True


def compile_filters(nodes: Iterable[str], tags: Mapping[str, str]) -> Filters:
    """Filters from member names and tag patterns (key -> regex). Raises FilterError."""
    names = frozenset(nodes)
    if len(names) > MAX_QUERY_NODES or len(tags) > MAX_QUERY_TAGS:
        raise FilterError(f"at most {MAX_QUERY_NODES} --node and {MAX_QUERY_TAGS} --tag filters")
    if any(not n for n in names):
        raise FilterError("empty member name in a --node filter")
    compiled: list[tuple[str, regex.Pattern[str]]] = []
    for key, text in sorted(tags.items()):
        if not key:
            raise FilterError("empty tag key in a --tag filter (write KEY=REGEX)")
        if not 0 < len(text) <= MAX_TAG_REGEX:
            raise FilterError(f"the pattern for tag {key!r} must have 1 to {MAX_TAG_REGEX} characters")
        try:
            compiled.append((key, regex.compile(text)))
        except (regex.error, RecursionError, OverflowError) as e:
            raise FilterError(f"the pattern for tag {key!r} is not a regular expression: {e}") from None
    return Filters(names, tuple(compiled))


def parse_tag_filter(text: str) -> tuple[str, str]:
    """``KEY=REGEX`` -> (key, regex), as ``--tag`` takes it. Raises FilterError."""
    key, sep, pattern = text.partition("=")
    if not sep or not key or not pattern:
        raise FilterError(f"expected KEY=REGEX, got {text!r}")
    compile_filters((), {key: pattern})
    return key, pattern
