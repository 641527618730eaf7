#!/bin/sh
# Append one line per member failure to a log file.
#
#   chatterd ... --event-handler 'member-failed=examples/handlers/log-failures.sh /var/log/chatter-failures.log'
#
# Line: <UTC timestamp> <member> <member addr> failed (seen by <this node>)
# The member and its address come from the environment chatterd sets; the event itself (JSON)
# is on stdin, unused here.
set -eu
out=${1:-chatter-failures.log}
if [ "${CHATTER_EVENT:-}" != member-failed ]; then
    exit 0 # registered without the member-failed filter: ignore the other events
fi
printf '%s %s %s failed (seen by %s)\n' \
    "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$CHATTER_MEMBER_NAME" "$CHATTER_MEMBER_ADDR" "$CHATTER_SELF_NAME" >>"$out"
