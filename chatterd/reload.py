"""SIGHUP: read the command line and the ``--config`` file again and apply what can change in a
running node, as ``serf`` does on SIGHUP, without a restart:

* tags (``--tag``, the file's ``tag``): the keys whose value changed since the last load are
  set, the keys no longer given are deleted, both in one change (one new incarnation, one
  member-update everywhere); tags changed meanwhile with ``chatterd tags`` on other keys stay;
* event handlers (``--event-handler``, ``event_handler``) and ``handler_timeout``: the next
  events run the new list (an event already queued runs the handlers it matched).

Any other option whose value changed takes a restart: the reload says which in one warning
(``reload_needs_restart``) and leaves them as they run. A file that cannot be used (unreadable,
not TOML, a bad key or value, tags over the size limit) is one error line (``reload_failed``,
with the reason) and nothing changes: the node keeps running with what it had.

Also here, for the start: the node's first tags (:func:`start_tags`), from --tag, --role and
what --data-dir saved.
"""

from __future__ import annotations

import argparse
import signal
from typing import TYPE_CHECKING, Any

import structlog
import trio

from chatterd import persistence
from chatterd.core import tags
from chatterd.core.balance import group_tags
from chatterd.core.roles import FAILING_TAG, is_candidacy, role_tags
from chatterd.options import Options

if TYPE_CHECKING:
    from chatterd.runtime import Runtime

log = structlog.get_logger("chatterd.reload")

RELOADED = ("tags", "handlers", "handler_timeout")  # the options a reload applies
IGNORED = ("config",)  # the file's own name: read again, not an option that changes


def start_tags(opts: Options, snap: persistence.Snapshot | None) -> dict[str, str]:
    """--tag replaces saved tags; candidacies come from --role only, never from the file."""
    user = {k: v for k, v in opts.tags.items() if not is_candidacy(k)}
    if not user and snap is not None:
        user = {k: v for k, v in snap.tags.items() if not is_candidacy(k) and k != FAILING_TAG}
    offered = role_tags(opts.roles) | group_tags(opts.role_groups)
    return user | offered | {k: v for k, v in opts.tags.items() if is_candidacy(k)}


def read_options(argv: list[str]) -> argparse.Namespace:
    """The daemon's options from ``argv`` and the ``--config`` file it names, as at the start
    (chatterd.configfile), raising ConfigError instead of exiting."""
    from chatterd import configfile

    args = configfile.given_on_command_line(argv)  # it parsed at the start: it parses now
    path = args.get("config")
    base = configfile.load(path) if path is not None else configfile.namespace_from_table({}, "defaults")
    return argparse.Namespace(**(vars(base) | args))


class Reloader:
    """Applies SIGHUP to one runtime. ``loaded``: the options as last read and applied (the
    start's first); ``launch``: as at the start, what the options that need a restart run with."""

    def __init__(self, rt: Runtime, loaded: argparse.Namespace | None) -> None:
        self.rt = rt
        self.loaded = self.launch = loaded

    async def run(self) -> None:
        """Reload on each SIGHUP until cancelled (installed at start: SIGHUP no longer kills)."""
        with trio.open_signal_receiver(signal.SIGHUP) as signals:
            async for _ in signals:
                log.info("signal", signal="SIGHUP")
                await self.reload()

    async def reload(self) -> dict[str, Any] | None:
        """Read the options again and apply them; what changed, or None when nothing could be."""
        argv = self.rt.opts.argv
        if argv is None or self.loaded is None:
            log.warning("reload_skipped", reason="this node was not started from a command line")
            return None
        from chatterd.configfile import ConfigError

        try:
            new = await trio.to_thread.run_sync(read_options, argv)  # a file read: off the event loop
            applied = self._apply(new)
        except (ConfigError, tags.TagsError) as e:
            log.error("reload_failed", error=str(e), action="keeping the running configuration")
            return None
        restart = sorted(
            k for k, v in vars(new).items() if k not in RELOADED + IGNORED and v != getattr(self.launch, k, None)
        )
        self.loaded = new
        if restart:
            log.warning("reload_needs_restart", options=restart, detail="changed, but applied only at a start")
        log.info("reloaded", changed=applied, config_file=None if new.config is None else str(new.config))
        return {"changed": applied, "needs_restart": restart}

    def _apply(self, new: argparse.Namespace) -> list[str]:
        """Tags first (they may be refused: then nothing changes), then the handlers."""
        assert self.loaded is not None
        rt, changed = self.rt, []
        old_tags, new_tags = dict(self.loaded.tags), dict(new.tags)
        if new_tags != old_tags:
            set_ = {k: v for k, v in new_tags.items() if old_tags.get(k) != v}
            delete = [k for k in old_tags if k not in new_tags]
            rt.update_tags(set_, delete)  # raises TagsError: nothing changed
            changed.append("tags")
        if list(new.handlers) != rt.handlers.specs:
            rt.handlers.specs = list(new.handlers)
            changed.append("handlers")
        if new.handler_timeout != rt.handlers.timeout:
            rt.handlers.timeout = new.handler_timeout
            changed.append("handler_timeout")
        return changed
