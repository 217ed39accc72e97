#!/usr/bin/env bash
# bench/cachegrind.sh: pgmoat's own work per transaction, counted rather
# than timed, so that two builds can be compared on a busy machine.
#
#   bench/cachegrind.sh [flags] BIN [BIN_B]
#
# Runs pgmoat (each BIN; the word pgbouncer stands for PgBouncer in
# session mode, as the bench runs it) under valgrind's cachegrind in front of a
# throwaway PostgreSQL, with the bench's policy (the four pgbench tables
# protected), and drives it with pgbench -S (or TPC-B, -script tpcb).
# Each measurement is two runs of a fresh pgmoat, one of -t WARM and one
# of -t WARM+TX transactions per client; the difference, divided by the extra transactions, is the
# marginal cost of one transaction: start-up, the catalog load and the
# first statements cancel out. Reported per transaction: instructions
# (Ir), first-level instruction cache misses (I1: code fetched again
# because the path is larger than the cache), first-level data cache
# misses (D1: reads and writes; both simulated caches are 32 KiB, 8-way,
# as on the machines the bench runs on) and last-level misses.
# Instruction counts repeat to within a few percent whatever else the
# machine is doing, except for the scheduler's spins while the relay
# waits, which only ever add: each window is run -repeat
# times (builds alternating) and its least count kept. Garbage-collection
# cycles are whole events, so the second window is long enough to hold
# several.
# The kernel's share (system calls) is not counted: both relays make the
# same calls (bench/README.md), the difference is user-space work.
#
# Flags:
#   -clients LIST   client counts (default 64,256)
#   -modes LIST     pgbench -M protocols (default prepared,simple)
#   -script NAME    select (pgbench -S, the default) or tpcb (pgbench's
#                   TPC-B-like script: seven statements, three UPDATEs of
#                   protected tables)
#   -tx N           extra transactions per client in the second run (default 400)
#   -repeat N       runs of each window per cell and build (default 3)
#   -top N          also list the N functions whose cost per transaction
#                   differs most between BIN and BIN_B (default 0)
#   -keep DIR       keep cachegrind's output files (and the relays' logs) in DIR
#   -ll BYTES       size of the simulated last-level cache (default 33554432,
#                   32 MiB, as the machines' L3; 1048576 stands in for one
#                   core's L2, to see which misses leave it as sessions grow)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'bench/cachegrind.sh: %s\n' "$*" >&2; }
die() { printf 'bench/cachegrind.sh: error: %s\n' "$*" >&2; exit 1; }

clients=64,256 modes=prepared,simple script=select tx=400 warm=20 repeat=3 top=0 keep= llsize=33554432
while [ $# -gt 0 ]; do
	case $1 in
	-clients) clients=$2; shift 2 ;;
	-modes) modes=$2; shift 2 ;;
	-script) script=$2; shift 2 ;;
	-tx) tx=$2; shift 2 ;;
	-repeat) repeat=$2; shift 2 ;;
	-top) top=$2; shift 2 ;;
	-keep) keep=$2; shift 2 ;;
	-ll) llsize=$2; shift 2 ;;
	-h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	-*) die "unknown flag $1 (-h lists them)" ;;
	*) break ;;
	esac
done
case $script in
select) script_flags=(-S) ;;
tpcb) script_flags=() ;;
*) die "-script must be select or tpcb, not $script" ;;
esac
case $llsize in '' | *[!0-9]*) die "-ll must be a size in bytes, not $llsize" ;; esac
[ $# -ge 1 ] && [ $# -le 2 ] || die "usage: bench/cachegrind.sh [flags] BIN [BIN_B]"
bins=("$@")
for b in "${bins[@]}"; do
	if [ "$b" = pgbouncer ]; then
		command -v pgbouncer >/dev/null 2>&1 || die "pgbouncer is not installed (bench/run.sh installs Debian's package)"
		continue
	fi
	[ -x "$b" ] || die "$b is not an executable"
done

SUDO=
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO=sudo; fi
if ! command -v valgrind >/dev/null 2>&1; then
	command -v apt-get >/dev/null 2>&1 || die "valgrind is missing, and no apt-get to install it with"
	log "installing valgrind (Debian package)"
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends valgrind >/dev/null
fi
scripts/ensure-deps.sh >/dev/null

work=$(mktemp -d /tmp/pgmoat-cachegrind.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	if [ -n "$keep" ]; then mkdir -p "$keep" && cp "$work"/*.cg "$work"/*.log "$keep"/ 2>/dev/null || true; fi
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

go build -o bin/pgtmp ./internal/cmd/pgtmp
maxc=$(tr ',' '\n' <<<"$clients" | sort -n | tail -1)
bin/pgtmp -env-file "$work/env" -set "max_connections=$((maxc + 20))" >"$work/pgtmp.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 600); do
	[ -s "$work/env" ] && break
	kill -0 "${pids[0]}" 2>/dev/null || die "the throwaway PostgreSQL did not start: $(cat "$work/pgtmp.log")"
	sleep 0.1
done
# shellcheck disable=SC1091
. "$work/env"
export PGPASSWORD=$PGTMP_PASSWORD
pgbench -i -q -s 1 "$PGTMP_DSN" >"$work/init.log" 2>&1 || die "pgbench -i failed: $(cat "$work/init.log")"

free_port() {
	local p
	while :; do
		p=$((20000 + RANDOM % 20000))
		(exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
	done
}
port=$(free_port)
admin_port=$(free_port)
# PgBouncer refuses to run as root: run it (and valgrind, which is the
# same process) as the postgres OS user, in a directory it may write.
asuser=()
if [ "$(id -u)" -eq 0 ]; then asuser=(runuser -u postgres --); chmod 1777 "$work"; fi
cat >"$work/pgbouncer.ini" <<EOF
[databases]
* = host=127.0.0.1 port=$PGTMP_PORT

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = trust
auth_file = $work/userlist.txt
pool_mode = session
max_client_conn = $((maxc + 50))
default_pool_size = $((maxc + 8))
ignore_startup_parameters = extra_float_digits
log_connections = 0
log_disconnections = 0
EOF
printf '"%s" "%s"\n' "$PGTMP_USER" "$PGTMP_PASSWORD" >"$work/userlist.txt"
chmod 644 "$work/pgbouncer.ini" "$work/userlist.txt"
cat >"$work/pgmoat.yaml" <<EOF
listen: 127.0.0.1:$port
upstream: postgres://127.0.0.1:$PGTMP_PORT?sslmode=disable
limits:
  max_connections: $((maxc + 20))
log:
  level: warn
admin:
  listen: 127.0.0.1:$admin_port
policy:
  protect:
    - public.pgbench_accounts
    - public.pgbench_branches
    - public.pgbench_tellers
    - public.pgbench_history
audit:
  path: $work/audit.jsonl
  statements: decisions
EOF

# measure BIN MODE CLIENTS TXPERCLIENT OUT: one run of a fresh pgmoat
# under cachegrind; writes cachegrind's output to OUT.
measure() {
	local bin=$1 mode=$2 c=$3 t=$4 out=$5 vp stop=INT
	local vg=(valgrind --tool=cachegrind --cache-sim=yes --I1=32768,8,64 --D1=32768,8,64 --LL="$llsize",16,64
		--cachegrind-out-file="$out")
	if [ "$bin" = pgbouncer ]; then
		"${asuser[@]}" "${vg[@]}" "$(command -v pgbouncer)" "$work/pgbouncer.ini" >"$out.log" 2>&1 &
		stop=TERM # PgBouncer's SIGINT waits for its server connections
	else
		# Valgrind 3.19 does not know RDTSCP, which the Go runtime uses
		# when a spinning lock is contended (runtime.cputicks): without
		# this pgmoat dies of SIGILL now and then.
		GODEBUG=cpu.rdtscp=off "${vg[@]}" "$bin" serve --config "$work/pgmoat.yaml" >"$out.log" 2>&1 &
	fi
	vp=$!
	for _ in $(seq 1 600); do
		psql -h 127.0.0.1 -p "$port" -U "$PGTMP_USER" -d postgres -Atqc 'select 1' >/dev/null 2>&1 && break
		kill -0 "$vp" 2>/dev/null || die "$bin under valgrind exited: $(grep -v '^==' "$out.log" | tail -5)"
		sleep 0.2
	done
	if ! pgbench -n "${script_flags[@]}" -M "$mode" -c "$c" -j 2 -t "$t" -h 127.0.0.1 -p "$port" -U "$PGTMP_USER" postgres >"$out.pgbench" 2>&1; then
		kill -"$stop" "$vp"; wait "$vp" || true
		die "pgbench through $bin failed: $(tail -3 "$out.pgbench")"
	fi
	kill -"$stop" "$vp"
	wait "$vp" || true
	[ -s "$out" ] || die "cachegrind wrote nothing for $bin: $(tail -5 "$out.log")"
}

# pertx A B N: the events of cachegrind output B minus A, per transaction
# (N of them): Ir, I1 misses, D1 misses (read + write), LL misses (data
# and instructions).
pertx() {
	awk -v n="$3" '
		/^events:/ { for (i = 2; i <= NF; i++) ev[i-1] = $i }
		/^summary:/ { for (i = 2; i <= NF; i++) v[FILENAME, ev[i-1]] = $i }
		END {
			a = ARGV[1]; b = ARGV[2]
			ir = (v[b,"Ir"] - v[a,"Ir"]) / n
			i1 = (v[b,"I1mr"] - v[a,"I1mr"]) / n
			d1 = (v[b,"D1mr"] + v[b,"D1mw"] - v[a,"D1mr"] - v[a,"D1mw"]) / n
			ll = (v[b,"DLmr"] + v[b,"DLmw"] + v[b,"ILmr"] - v[a,"DLmr"] - v[a,"DLmw"] - v[a,"ILmr"]) / n
			printf "%.0f %.1f %.1f %.2f\n", ir, i1, d1, ll
		}' "$1" "$2"
}

# fndiff A1 B1 A2 B2 N: per function, (B2-A2) - (B1-A1) per transaction:
# where BIN_B's transaction costs more (or less) than BIN's.
fndiff() {
	awk -v n="$5" '
		/^events:/ { for (i = 2; i <= NF; i++) ev[i-1] = $i; next }
		/^fn=/ { fn = substr($0, 4); next }
		/^[0-9]/ {
			s = (FILENAME == ARGV[1] || FILENAME == ARGV[4]) ? 1 : -1
			for (i = 2; i <= NF; i++) {
				if (ev[i-1] == "Ir") ir[fn] += s * $i
				if (ev[i-1] == "I1mr") i1[fn] += s * $i
				if (ev[i-1] == "D1mr" || ev[i-1] == "D1mw") d1[fn] += s * $i
			}
		}
		END { for (f in ir) printf "%9.0f %7.2f %7.2f  %s\n", ir[f] / n, i1[f] / n, d1[f] / n, f }
	' "$1" "$2" "$3" "$4" | sort -g >"$work/fndiff"
	echo "    Ir/tx   I1/tx   D1/tx  function (most saved first)"
	head -n "$top" "$work/fndiff"
	echo "  ... (most added last)"
	tail -n "$top" "$work/fndiff"
}

# leastrun FILE...: the cachegrind output with the fewest instructions.
leastrun() {
	awk '/^summary:/ { if (best == "" || $2 < min) { min = $2; best = FILENAME } } END { print best }' "$@"
}

log "valgrind $(valgrind --version | sed 's/valgrind-//'), pgbench ${script_flags[*]:-TPC-B}, -t $warm and -t $((warm + tx)) per client, $repeat measurements per cell"
printf '| -M | clients | build | Ir/tx | I1 misses/tx | D1 misses/tx | LL misses/tx |\n|---|---:|---|---:|---:|---:|---:|\n'
declare -A res
for mode in ${modes//,/ }; do
	for c in ${clients//,/ }; do
		n=$((c * tx))
		for r in $(seq 1 "$repeat"); do
			for i in "${!bins[@]}"; do
				b=${bins[$i]}
				measure "$b" "$mode" "$c" "$warm" "$work/$mode-$c-$i-$r-a.cg"
				measure "$b" "$mode" "$c" "$((warm + tx))" "$work/$mode-$c-$i-$r-b.cg"
				log "$mode -c $c ${b}: run $r: $(pertx "$work/$mode-$c-$i-$r-a.cg" "$work/$mode-$c-$i-$r-b.cg" "$n" | awk '{ print $1 " Ir/tx, " $2 " I1 and " $3 " D1 misses/tx" }')"
			done
		done
		for i in "${!bins[@]}"; do
			# Waiting costs a relay under valgrind a varying number of
			# scheduler spins, so some runs count more than their
			# transactions did, never less: each window's least count of
			# the repeats is the one closest to its work alone.
			read -r ir i1 d1 ll < <(pertx "$(leastrun "$work/$mode-$c-$i-"*-a.cg)" "$(leastrun "$work/$mode-$c-$i-"*-b.cg)" "$n")
			res[$mode,$c,$i,ir]=$ir
			res[$mode,$c,$i,i1]=$i1
			res[$mode,$c,$i,d1]=$d1
			printf '| %s | %s | %s | %.0f | %.1f | %.1f | %.2f |\n' "$mode" "$c" "${bins[$i]}" "$ir" "$i1" "$d1" "$ll"
		done
		if [ ${#bins[@]} -eq 2 ]; then
			awk -v a="${res[$mode,$c,0,ir]}" -v b="${res[$mode,$c,1,ir]}" -v p="${res[$mode,$c,0,i1]}" -v q="${res[$mode,$c,1,i1]}" \
				-v x="${res[$mode,$c,0,d1]}" -v y="${res[$mode,$c,1,d1]}" -v m="$mode" -v c="$c" \
				'function r(u, v) { return u > 0 ? sprintf("%.2f×", v / u) : "" }
				BEGIN { printf "| %s | %s | B / A | %s | %s | %s | |\n", m, c, r(a, b), r(p, q), r(x, y) }'
			if [ "$top" -gt 0 ]; then
				{
					echo "-M $mode -c $c: Ir, I1 and D1 misses per tx, ${bins[1]} minus ${bins[0]}, by function:"
					fndiff "$(leastrun "$work/$mode-$c-0-"*-a.cg)" "$(leastrun "$work/$mode-$c-0-"*-b.cg)" \
						"$(leastrun "$work/$mode-$c-1-"*-a.cg)" "$(leastrun "$work/$mode-$c-1-"*-b.cg)" "$n"
				} >&2
			fi
		fi
	done
done
