#!/usr/bin/env python3
"""Print the user events of one name: who sent it, when, and its body.

    chatterd ... --event-handler 'user:deploy=examples/handlers/print-user-event.py deploy'
    chatterd ... --event-handler 'user:deploy=examples/handlers/print-user-event.py deploy --out /tmp/deploys.log'

The line goes to stdout, which chatterd logs with the run (handler_done, key stdout), or is
appended to --out FILE. Events of other names are ignored, so the filter may also be `user`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("name", help="the user event's name (its single top-level key)")
    p.add_argument("--out", help="append to this file instead of printing")
    args = p.parse_args()
    if os.environ.get("CHATTER_EVENT") != "user" or os.environ.get("CHATTER_USER_EVENT") != args.name:
        return 0
    row = json.load(sys.stdin)
    body = row["payload"].get(args.name, row["payload"])
    when = datetime.datetime.fromtimestamp(row["received_at"], datetime.UTC).isoformat(timespec="seconds")
    line = f"{when} {args.name} from {row['origin']} on {os.environ.get('CHATTER_SELF_NAME', '?')}: {json.dumps(body)}"
    if args.out:
        with open(args.out, "a") as f:
            print(line, file=f)
    else:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
