#!/usr/bin/env python3
"""Run a command when a member with a given tag (or name) fails.

    chatterd ... --event-handler 'member-failed=examples/handlers/on-member-failed.py role=db ./promote-replica.sh'
    chatterd ... --event-handler 'member-failed=examples/handlers/on-member-failed.py "db-*" ./page-oncall.sh'

FILTER is KEY=VALUE (the failed member carries that tag: `chatterd --tag role=db`, or
`chatterd tags set role=db`) or a glob matched against the member's name. COMMAND runs with
the handler's environment (CHATTER_MEMBER_NAME, CHATTER_MEMBER_ADDR, ...) and the event on
its stdin; its exit status becomes the handler's. Other events and other members: exit 0.
"""

from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import sys


def matches(flt: str, member: dict[str, object]) -> bool:
    key, sep, value = flt.partition("=")
    if sep:
        tags = member.get("tags") or {}
        return isinstance(tags, dict) and tags.get(key) == value
    return fnmatch.fnmatchcase(str(member.get("name", "")), flt)


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: on-member-failed.py KEY=VALUE|NAME-GLOB COMMAND [ARG...]", file=sys.stderr)
        return 2
    flt, command = argv[0], argv[1:]
    line = sys.stdin.readline()
    if os.environ.get("CHATTER_EVENT") != "member-failed":
        return 0
    try:
        event = json.loads(line)
        member = event["payload"]
    except (ValueError, KeyError, TypeError) as e:
        print(f"on-member-failed.py: cannot read the event: {e}", file=sys.stderr)
        return 1
    if not isinstance(member, dict) or not matches(flt, member):
        return 0
    return subprocess.run(command, input=line.encode(), check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
