// Command bench measures what pgmoat costs on the query path, side by side
// with PgBouncer, the relay users already know. `make bench` (bench/run.sh)
// installs what it needs, builds this program and runs it; see README.md for
// what is measured and how to read the results.
//
// One run is a sequence:
//
//	throwaway PostgreSQL (internal/pgtest) ── pgbench -i
//	PgBouncer (session mode) and pgmoat (bench policy) in front of it;
//	        with -pgmoat-b, a second pgmoat from another binary (pgmoat-b)
//	matrix: rounds × cells (script, protocol, clients) × targets
//	        (direct, pgbouncer, pgmoat[, pgmoat-b], in a rotating order);
//	        around each run, the relay's CPU time from /proc/PID/stat
//	memory: 1,000 idle sessions through a freshly started pgmoat
//	holds:  -S -M prepared at 8 clients with none and with 1,000 held
//	        statements pending (verified through the admin API, then
//	        withdrawn by disconnecting; none may run)
//	memory: a large COPY OUT and a large result set, each through a
//	        freshly started pgmoat, sampling its RSS
//	report: results/latest.csv (every run of the matrix), latest.md
//	        (medians, ratios, relay CPU per transaction, targets,
//	        machine), tps.png (gnuplot)
//
// Every process it starts (PostgreSQL, PgBouncer, pgmoat) is stopped when it
// returns, is interrupted, or dies (the children get a parent-death signal).
//
// Next to it, cachegrind.sh counts instead of timing: pgmoat's instructions
// and simulated cache misses per pgbench transaction under valgrind, for
// one build or two, which repeat where CPU time does not.
package main
