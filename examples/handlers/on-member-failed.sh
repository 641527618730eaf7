#!/bin/sh
# Run a command when a member whose name matches a shell pattern fails.
#
#   chatterd ... --event-handler 'member-failed=examples/handlers/on-member-failed.sh "db-*" ./promote-replica.sh'
#
# PATTERN is a sh glob (as in `case`) matched against the failed member's name; COMMAND runs
# with the same environment (CHATTER_MEMBER_NAME, CHATTER_MEMBER_ADDR, ...) and the event on
# its stdin. Its exit status becomes the handler's. Once chatter has tags, a tag filter
# (role=db) will replace the name pattern.
set -eu
if [ $# -lt 2 ]; then
    echo "usage: on-member-failed.sh PATTERN COMMAND [ARG...]" >&2
    exit 2
fi
pattern=$1
shift
if [ "${CHATTER_EVENT:-}" != member-failed ]; then
    exit 0
fi
# shellcheck disable=SC2254 # the pattern is meant to be a glob
case "$CHATTER_MEMBER_NAME" in
$pattern) exec "$@" ;;
*) exit 0 ;;
esac
