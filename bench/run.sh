#!/usr/bin/env bash
# bench/run.sh: `make bench` (full) and `make bench-quick` (QUICK=1).
#
# Installs what the bench needs and the tests do not (PgBouncer and gnuplot
# from Debian's packages), builds the bench program (bench/*.go) and runs
# it. The program starts a throwaway PostgreSQL, PgBouncer and pgmoat,
# runs the pgbench matrix and the memory steps, writes bench/results/ and
# stops everything it started on exit, on Ctrl-C and on SIGTERM (its
# children also get a parent-death signal should it be killed outright).
#
# Extra flags go to the program: bench/run.sh -rounds 3 -modes prepared,
# or BENCH_FLAGS='-rounds 3' make bench. bin/pgmoat-bench -h lists them.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'bench/run.sh: %s\n' "$*" >&2; }
die() { printf 'bench/run.sh: error: %s\n' "$*" >&2; exit 1; }

SUDO=
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO=sudo; fi

missing=()
command -v pgbouncer >/dev/null 2>&1 || missing+=(pgbouncer)
command -v gnuplot >/dev/null 2>&1 || missing+=(gnuplot-nox)
# gnuplot's PNG terminal needs at least one font.
if ! fc-list 2>/dev/null | grep -q .; then missing+=(fonts-dejavu-core); fi
if [ ${#missing[@]} -gt 0 ]; then
	command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]}, and no apt-get to install them with"
	if [ "$(id -u)" -ne 0 ] && [ -z "$SUDO" ]; then die "missing ${missing[*]}; run as root (or install sudo)"; fi
	log "installing ${missing[*]} (Debian packages)"
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	# Debian's package starts a system PgBouncer on 127.0.0.1:6432 where
	# systemd runs, which is pgmoat's default port too; the bench starts
	# its own.
	case " ${missing[*]} " in
	*" pgbouncer "*)
		if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet pgbouncer 2>/dev/null; then
			log "stopping and disabling the pgbouncer service the package started"
			$SUDO systemctl disable --now pgbouncer >/dev/null 2>&1 || true
		fi
		;;
	esac
fi
command -v pgbench >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/pgbench >/dev/null 2>&1 ||
	die "pgbench not found; run scripts/ensure-deps.sh (make deps) first"
[ -x bin/pgmoat ] || die "bin/pgmoat missing; run make build (make bench does)"

go build -o bin/pgmoat-bench ./bench

# 1,000 idle sessions hold two sockets each in pgmoat and one per client
# here: lift the soft descriptor limit to the hard one.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# Huge pages for the bench cluster's shared memory (shared_buffers 256MB and
# the rest of the segment: 512 MiB, as bench/stack.go asks). Without them
# every new backend faults on each 4 KiB page it touches, and backends a
# relay opens per session run far slower than PgBouncer's pooled ones
# (bench/README.md, "Huge pages"). The reservation is given back on exit.
hp_file=/proc/sys/vm/nr_hugepages
hp_before=
hp_kb=$(awk '/^Hugepagesize:/{print $2}' /proc/meminfo 2>/dev/null || true)
hp_free=$(awk '/^HugePages_Free:/{f=$2} /^HugePages_Rsvd:/{r=$2} END{if (f != "") print f - r}' /proc/meminfo 2>/dev/null || true)
if [ -n "$hp_kb" ] && [ -n "$hp_free" ] && { [ -w "$hp_file" ] || [ -n "$SUDO" ]; }; then
	hp_need=$(( (512 * 1024 + hp_kb - 1) / hp_kb ))
	if [ "$hp_free" -lt "$hp_need" ]; then
		hp_before=$(cat "$hp_file")
		want=$(( hp_before + hp_need - hp_free ))
		if echo "$want" | $SUDO tee "$hp_file" >/dev/null 2>&1; then
			log "reserved huge pages for the bench cluster (vm.nr_hugepages $hp_before -> $(cat "$hp_file")); given back on exit"
		else
			hp_before=
		fi
	fi
fi
restore_hugepages() {
	if [ -n "$hp_before" ]; then echo "$hp_before" | $SUDO tee "$hp_file" >/dev/null 2>&1 || true; fi
}

args=()
if [ "${QUICK:-}" = 1 ]; then args+=(-quick); fi
# Not exec: the reservation is given back when the program ends. It runs in
# the background so that SIGTERM to this script reaches it too (Ctrl-C
# reaches the whole process group); it stops its children, then this
# script gives the pages back.
trap restore_hugepages EXIT
# shellcheck disable=SC2086 # BENCH_FLAGS is a list of flags
bin/pgmoat-bench "${args[@]}" ${BENCH_FLAGS:-} "$@" &
bench_pid=$!
trap 'kill -TERM "$bench_pid" 2>/dev/null || true' INT TERM
rc=0
wait "$bench_pid" || rc=$?
while kill -0 "$bench_pid" 2>/dev/null; do # a signal ended the wait, not the program
	rc=0
	wait "$bench_pid" || rc=$?
done
exit "$rc"
