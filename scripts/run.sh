#!/usr/bin/env bash
# make run: pgmoat in front of $UPSTREAM, or in front of a throwaway local
# PostgreSQL (started from the system's binaries) when UPSTREAM is empty.
set -euo pipefail
cd "$(dirname "$0")/.."

CONFIG=${CONFIG:-examples/pgmoat.yaml}
LISTEN=${LISTEN:-127.0.0.1:6432}
ADMIN=${ADMIN:-127.0.0.1:6433}
pids=()
envfile=""
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "$envfile" ] && rm -f "$envfile"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

user=postgres
if [ -z "${UPSTREAM:-}" ]; then
  if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    echo "PostgreSQL server binaries not found; installing them (scripts/ensure-deps.sh)..." >&2
    scripts/ensure-deps.sh
  fi
  go build -o bin/pgtmp ./internal/cmd/pgtmp
  envfile=$(mktemp -u /tmp/pgmoat-run.XXXXXX)
  bin/pgtmp -env-file "$envfile" >/dev/null &
  pids+=($!)
  for _ in $(seq 1 300); do
    [ -s "$envfile" ] && break
    kill -0 "${pids[0]}" 2>/dev/null || { echo "the throwaway PostgreSQL did not start" >&2; exit 1; }
    sleep 0.1
  done
  # shellcheck disable=SC1090
  . "$envfile"
  UPSTREAM=$PGTMP_UPSTREAM
  user=$PGTMP_USER
  echo "Started a throwaway PostgreSQL on port $PGTMP_PORT (data in $PGTMP_DIR; removed on exit)."
fi

# The example config names two admin tokens by environment variable; make
# up values for this run unless the caller set them.
rand() { od -An -N16 -tx1 /dev/urandom | tr -d ' \n'; }
export PGMOAT_TOKEN_ONCALL=${PGMOAT_TOKEN_ONCALL:-$(rand)}
export PGMOAT_TOKEN_VIEWER=${PGMOAT_TOKEN_VIEWER:-$(rand)}

cat <<MSG

pgmoat listens on $LISTEN, in front of $UPSTREAM
  connect:    psql "postgres://$user@$LISTEN/postgres?sslmode=disable"
  admin API:  http://$ADMIN   (approver token: export PGMOAT_TOKEN=$PGMOAT_TOKEN_ONCALL PGMOAT_ADMIN_URL=http://$ADMIN)
  CLI:        bin/pgmoat; pgmoat's hints say \`pgmoat ...\`: export PATH="$PWD/bin:\$PATH" to run them as written
  policy:     $CONFIG
Ctrl-C stops pgmoat (and the throwaway PostgreSQL).

MSG
bin/pgmoat serve --config "$CONFIG" --listen "$LISTEN" --upstream "$UPSTREAM" &
pids+=($!)
wait "${pids[-1]}"
