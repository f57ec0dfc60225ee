#!/usr/bin/env bash
# Start/stop the real Redmine used by the integration tests (see redmine-test-server.py).
#   scripts/redmine-test-server.sh start   # installs Debian's redmine if missing; fresh database, free port;
#                                          # writes .redmine-test/state.json + api-key (mode 0600) and
#                                          # .redmine-test/env (ICD_REDMINE_STATE=..., REDMINE_URL=...; no key)
#   scripts/redmine-test-server.sh stop    # stops that server by its pid and removes its instance
set -euo pipefail
cd "$(dirname "$0")/.."
STATE="${ICD_REDMINE_STATE_DIR:-$PWD/.redmine-test}"
case "${1:-}" in
  start)
    python3 scripts/redmine-test-server.py start --state "$STATE" >/dev/null
    umask 077
    printf 'ICD_REDMINE_STATE=%s\nREDMINE_URL=%s\nREDMINE_KEY_FILE=%s\n' \
      "$STATE" "$(cat "$STATE/url")" "$STATE/api-key" > "$STATE/env"
    echo "Redmine at $(cat "$STATE/url") (state in $STATE)"
    ;;
  stop)
    python3 scripts/redmine-test-server.py stop --state "$STATE"
    rm -f "$STATE/env"
    ;;
  install)
    python3 scripts/redmine-test-server.py install
    ;;
  *)
    echo "usage: $0 start|stop|install" >&2; exit 2 ;;
esac
