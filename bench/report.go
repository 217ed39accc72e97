package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"
)

// streamPair is one streaming transfer, direct and through pgmoat.
type streamPair struct {
	Direct, Pgmoat streamResult
}

// report is everything latest.md shows.
type report struct {
	Opts     options
	Machine  machine
	Cells    []cell
	Targets  []string // target names in the matrix, in table order
	Stats    map[statKey]stat
	Counters map[string]counters // each pgmoat's counters over the matrix, by target; nil if not scraped
	Idle     *idleResult
	Holds    *holdsResult   // the pending-holds step; nil if skipped or failed
	Guarded  *guardedResult // the guarded-execution step; nil if skipped or failed
	Streams  []streamPair
	Conns    *connResult // the connections step; nil if skipped or failed
	Problems []string    // steps that failed, in words; the run exits non-zero
	Notes    []string    // what the reader must know to trust the numbers
	Elapsed  time.Duration
	Charts   []string // chart files drawn next to the report (tps.png, cpu.png)
}

// Thresholds the report checks: what a firewall in front of production
// may cost compared with the pooler it stands beside (PgBouncer) and with
// no proxy at all, in CPU per transaction, throughput, memory per idle
// session, memory while streaming, and other sessions' latency while
// statements are held.
const (
	targetCPUVsPgBouncer   = 1.0  // pgmoat's relay CPU per transaction / PgBouncer's, every cell
	targetVsPgBouncer      = 1.0  // pgmoat TPS / PgBouncer TPS, every cell at 8 clients or more
	targetVsDirectPrepared = 0.80 // pgmoat TPS / direct TPS, -S -M prepared, 64 clients ...
	targetDirectCores      = 16   // ... on a machine with this many cores, where the relay has cores of its own
	targetDirectClients    = 64
	targetIdleMiB          = 100  // MiB for 1,000 idle sessions
	targetStreamMiB        = 32   // "flat": peak RSS rise while streaming
	targetHoldsLatency     = 1.10 // latency with 1,000 holds pending / with none
)

func (r *report) stat(c cell, t string) stat { return r.Stats[statKey{c, t}] }

// relays are the run's targets whose CPU the bench reads: all but direct.
func (r *report) relays() []string {
	var ts []string
	for _, t := range r.Targets {
		if t != targetDirect {
			ts = append(ts, t)
		}
	}
	return ts
}

func (r *report) has(t string) bool {
	for _, n := range r.Targets {
		if n == t {
			return true
		}
	}
	return false
}

// write renders the report as Markdown.
func (r *report) write(w io.Writer) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	mode := "full"
	if r.Opts.Quick {
		mode = "quick (`make bench-quick`: a smoke run, not a measurement)"
	}
	p("# pgmoat benchmark: latest results\n\n")
	p("Written by `make bench` (bench/run.sh), %s run, on %s, in %s. "+
		"Each cell is the **median of %d round(s)** of %s pgbench runs; within each round the targets "+
		"run one after the other in a rotating order. pgbench scale %d, `-j` = min(clients, %d). "+
		"How to read this: [README.md](../README.md).\n\n",
		mode, r.Machine.Date, r.Elapsed.Round(time.Second), r.Opts.Rounds, r.Opts.Duration, r.Opts.Scale, r.Machine.CPUs)

	p("## Machine\n\n| | |\n|---|---|\n")
	rows := [][2]string{
		{"CPU", fmt.Sprintf("%d × %s", r.Machine.CPUs, r.Machine.CPUModel)},
		{"memory", r.Machine.Memory},
		{"kernel", r.Machine.Kernel},
		{"PostgreSQL", r.Machine.Postgres + fmt.Sprintf(" (throwaway cluster, fsync off, shared_buffers %dMB, huge pages %s)", sharedBuffersMiB, r.Machine.HugePages)},
		{"PgBouncer", r.Machine.PgBouncer + " (session mode, plain TCP)"},
		{"pgbench", r.Machine.Pgbench},
		{"pgmoat", r.Machine.Pgmoat + " (bench policy: the four pgbench tables protected)"},
		{"pgmoat-b", r.Machine.PgmoatB + " (the same policy; a second pgmoat in the same rotation)"},
		{"git commit", r.Machine.Commit},
		{"Go", r.Machine.Go},
		{"load average (1 min)", fmt.Sprintf("%s before the bench started, %s at the end (other processes on the machine add noise; see the spread column)",
			r.Machine.LoadStart, r.Machine.LoadEnd)},
		{"other processes", r.Machine.busyText()},
	}
	for _, row := range rows {
		if row[0] == targetPgmoatB && r.Machine.PgmoatB == "" || row[1] == "" {
			continue
		}
		p("| %s | %s |\n", row[0], mdEscape(row[1]))
	}
	p("\n")

	if len(r.Problems) > 0 {
		p("## Problems in this run\n\n")
		for _, pr := range r.Problems {
			p("- %s\n", mdEscape(pr))
		}
		p("\n")
	}
	if notes := r.notes(); len(notes) > 0 {
		p("## Notes\n\n")
		for _, n := range notes {
			p("- %s\n", mdEscape(n))
		}
		p("\n")
	}

	r.writeTargets(w)
	r.writeThroughput(w)
	r.writeCPU(w)
	r.writeConnections(w)
	r.writeLatency(w)
	r.writeMemory(w)
	r.writeHolds(w)
	r.writeGuarded(w)
	r.writeCounters(w)

	p("## Raw data\n\n[latest.csv](latest.csv) has one row per pgbench run of the matrix and of the counting pass (round, pass, " +
		"cell, target, pgbench's own TPS, average latency and connection time; the steady state's length, transactions and TPS; " +
		"the relay's CPU seconds, µs per transaction (and its user-space part) and context switches per transaction over it; system calls per transaction in the " +
		"counting pass). The spread column above is the lowest and highest TPS of pgmoat's runs of the cell.\n")
}

// writeTargets checks the thresholds above, for pgmoat and, where it
// ran, pgmoat-b.
func (r *report) writeTargets(w io.Writer) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	p("## Targets\n\n")
	relays := r.pgmoatTargets()
	if len(relays) == 0 {
		p("pgmoat was not measured in this run.\n\n")
		return
	}
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "**not met**"
	}
	every := func(cell) bool { return true }
	loaded := func(c cell) bool { return c.Clients >= 8 }
	for _, who := range relays {
		if r.has(targetPgBouncer) {
			if rc := r.checkCPU(who, targetPgBouncer, targetCPUVsPgBouncer, every); rc.n > 0 {
				p("- %s's relay CPU per transaction ≤ %.2f× PgBouncer's in every cell: %s (%d of %d cells; highest %s).\n",
					who, targetCPUVsPgBouncer, verdict(rc.met == rc.n), rc.met, rc.n, rc.worstText())
			}
			if rc := r.checkRatio(who, targetPgBouncer, targetVsPgBouncer, loaded); rc.n > 0 {
				p("- %s ≥ %.2f× PgBouncer's TPS in every cell at 8 clients or more: %s (%d of %d cells; lowest %s).\n",
					who, targetVsPgBouncer, verdict(rc.met == rc.n), rc.met, rc.n, rc.worstText())
			}
		}
		if r.has(targetDirect) {
			prepared := func(c cell) bool {
				return c.Clients == targetDirectClients && c.Script == "select" && c.Mode == "prepared"
			}
			if rc := r.checkRatio(who, targetDirect, targetVsDirectPrepared, prepared); rc.n > 0 {
				where := fmt.Sprintf("a machine with %d cores", targetDirectCores)
				if r.Machine.CPUs < targetDirectCores {
					where += fmt.Sprintf("; this one has %d, shared by pgbench, PostgreSQL and the relay, so this is what it shows rather than the target's verdict", r.Machine.CPUs)
				}
				p("- %s ≥ %.2f× direct for `-S -M prepared` at %d clients (on %s): %s (%s).\n",
					who, targetVsDirectPrepared, targetDirectClients, where, verdict(rc.met == rc.n), rc.worstText())
			}
		}
		if r.has(targetDirect) && r.has(targetPgBouncer) {
			for _, c := range r.Cells {
				if c.Script != "select" || c.Clients != 1 {
					continue
				}
				d, b, m := r.stat(c, targetDirect), r.stat(c, targetPgBouncer), r.stat(c, who)
				if !d.ok() || !b.ok() || !m.ok() {
					p("- %s's added latency at 1 client, `-S -M %s`: no measurement.\n", who, c.Mode)
					continue
				}
				addB, addM := (b.LatencyMS-d.LatencyMS)*1000, (m.LatencyMS-d.LatencyMS)*1000
				p("- %s's added latency ≤ PgBouncer's at 1 client, `-S -M %s`: %s (%s +%.1f µs, PgBouncer +%.1f µs over direct).\n",
					who, c.Mode, verdict(addM <= addB), who, addM, addB)
			}
		}
	}
	if r.Idle != nil {
		per1000 := float64(r.Idle.Delta()) * 1000 / float64(r.Idle.Sessions) / (1 << 20)
		p("- 1,000 idle sessions add ≤ %d MiB to pgmoat's RSS: %s (%s for %d sessions, %.1f MiB per 1,000).\n",
			targetIdleMiB, verdict(per1000 <= targetIdleMiB), fmtMiB(r.Idle.Delta()), r.Idle.Sessions, per1000)
	}
	if h := r.Holds; h != nil {
		none, pending := h.stats()
		x := h.latencyRatio()
		asked := ""
		if h.Holds != 1000 {
			asked = "; the target is for 1,000"
		}
		if math.IsNaN(x) {
			p("- %s pending holds leave other sessions' latency within %.0f%% of none pending: **not met** (no measurement%s).\n",
				fmtThousands(float64(h.Holds)), (targetHoldsLatency-1)*100, asked)
		} else {
			p("- %s pending holds leave other sessions' latency within %.0f%% of none pending: %s (`-S -M prepared`, 8 clients: "+
				"%.3f ms with them, %.3f ms without, %s; TPS %s%s).\n",
				fmtThousands(float64(h.Holds)), (targetHoldsLatency-1)*100, verdict(x <= targetHoldsLatency),
				pending.LatencyMS, none.LatencyMS, fmtRatio(x), fmtRatio(ratio(pending, none)), asked)
		}
	}
	for _, s := range r.Streams {
		if s.Pgmoat.Bytes == 0 {
			continue
		}
		d := s.Pgmoat.PeakDelta()
		p("- %s of %s streams with pgmoat's memory flat (peak rise under %d MiB): %s (+%s).\n",
			s.Pgmoat.Kind, fmtBytes(s.Pgmoat.Bytes), targetStreamMiB, verdict(d < targetStreamMiB<<20), fmtMiB(d))
	}
	notMeasured := "the analysis micro-benchmarks (`go test -bench` in rules/)"
	if r.Holds == nil {
		notMeasured = "1,000 pending holds vs other sessions' latency; " + notMeasured
	}
	p("- Not measured here: %s.\n\n", notMeasured)
}

// pgmoatTargets are the pgmoat targets of the run: pgmoat, pgmoat-b.
func (r *report) pgmoatTargets() []string {
	var ts []string
	for _, t := range []string{targetPgmoat, targetPgmoatB} {
		if r.has(t) {
			ts = append(ts, t)
		}
	}
	return ts
}

// ratioCheck is how the cells a target covers compare with a threshold.
type ratioCheck struct {
	n, met    int
	worst     float64 // the ratio furthest from the threshold; NaN when a cell has no ratio at all
	worstCell cell
}

func (rc ratioCheck) worstText() string {
	if math.IsNaN(rc.worst) {
		return fmt.Sprintf("none at %s, which has no median", rc.worstCell)
	}
	return fmt.Sprintf("%s at %s", fmtRatio(rc.worst), rc.worstCell)
}

// checkRatio compares who's median TPS with against's in the cells in
// picks: how many reach threshold, and the lowest. A cell without a ratio
// (a target failed every run) does not reach it, and is the worst.
func (r *report) checkRatio(who, against string, threshold float64, in func(cell) bool) ratioCheck {
	return r.check(in, func(c cell) float64 { return ratio(r.stat(c, who), r.stat(c, against)) },
		func(x float64) bool { return x >= threshold }, func(x, y float64) bool { return x < y })
}

// checkCPU compares who's median relay CPU per transaction with
// against's: how many cells stay at or under threshold, and the highest.
func (r *report) checkCPU(who, against string, threshold float64, in func(cell) bool) ratioCheck {
	return r.check(in, func(c cell) float64 { return cpuRatio(r.stat(c, who), r.stat(c, against)) },
		func(x float64) bool { return x <= threshold }, func(x, y float64) bool { return x > y })
}

// check counts the cells in in whose ratio is good, and finds the worst
// (a cell without a ratio is never good, and is the worst of all).
func (r *report) check(in func(cell) bool, ratioOf func(cell) float64, good func(float64) bool, worse func(x, y float64) bool) ratioCheck {
	rc := ratioCheck{worst: math.NaN()}
	first := true
	for _, c := range r.Cells {
		if !in(c) {
			continue
		}
		x := ratioOf(c)
		rc.n++
		if !math.IsNaN(x) && good(x) {
			rc.met++
		}
		switch {
		case first:
			rc.worst, rc.worstCell = x, c
		case math.IsNaN(rc.worst):
		case math.IsNaN(x) || worse(x, rc.worst):
			rc.worst, rc.worstCell = x, c
		}
		first = false
	}
	return rc
}

func (r *report) writeThroughput(w io.Writer) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	p("## Throughput\n\nMedian TPS over each run's steady state: from the moment every client has completed a transaction " +
		"to the moment the first client completed its last (every client was running throughout), counted from pgbench's per-transaction log. Ratios divide the medians. " +
		"Latency is pgbench's average, in ms.\n\n")
	p("| script | -M | clients |")
	for _, t := range r.Targets {
		p(" %s TPS |", targetTitle(t))
	}
	both := r.has(targetPgmoat) && r.has(targetPgBouncer)
	vsDirect := r.has(targetPgmoat) && r.has(targetDirect)
	if both {
		p(" pgmoat / PgBouncer |")
	}
	if vsDirect {
		p(" pgmoat / direct |")
	}
	ab := r.has(targetPgmoat) && r.has(targetPgmoatB)
	if ab {
		p(" pgmoat-b / pgmoat |")
	}
	if r.has(targetPgmoat) {
		p(" pgmoat spread |")
	}
	p(" latency ms (%s) |\n", strings.Join(titles(r.Targets), " / "))
	n := 3 + len(r.Targets) + 1
	if both {
		n++
	}
	if vsDirect {
		n++
	}
	if ab {
		n++
	}
	if r.has(targetPgmoat) {
		n++
	}
	p("|---|---|%s\n", strings.Repeat("---:|", n-2))
	for _, c := range r.Cells {
		p("| %s | %s | %d |", scriptTitle(c.Script), c.Mode, c.Clients)
		var lats []string
		for _, t := range r.Targets {
			s := r.stat(c, t)
			p(" %s |", fmtTPS(s))
			if s.ok() {
				lats = append(lats, fmt.Sprintf("%.3f", s.LatencyMS))
			} else {
				lats = append(lats, "–")
			}
		}
		m := r.stat(c, targetPgmoat)
		if both {
			p(" %s |", fmtRatio(ratio(m, r.stat(c, targetPgBouncer))))
		}
		if vsDirect {
			p(" %s |", fmtRatio(ratio(m, r.stat(c, targetDirect))))
		}
		if ab {
			p(" %s |", fmtRatio(ratio(r.stat(c, targetPgmoatB), m)))
		}
		if r.has(targetPgmoat) {
			if m.ok() {
				p(" %s–%s |", fmtThousands(m.MinTPS), fmtThousands(m.MaxTPS))
			} else {
				p(" – |")
			}
		}
		p(" %s |\n", strings.Join(lats, " / "))
	}
	p("\n")
	if slices.Contains(r.Charts, "tps.png") {
		p("![TPS by client count, per script and protocol](tps.png)\n\n")
	}
	var failed []string
	for _, c := range r.Cells {
		for _, t := range r.Targets {
			if s := r.stat(c, t); s.Failed > 0 {
				failed = append(failed, fmt.Sprintf("%s on %s: %d run(s) failed: %s", c, t, s.Failed, s.Err))
			}
		}
	}
	if len(failed) > 0 {
		p("Failed runs:\n\n")
		for _, f := range failed {
			p("- %s\n", mdEscape(f))
		}
		p("\n")
	}
}

// writeCPU shows what each relay spends per transaction: CPU time,
// context switches and system calls.
func (r *report) writeCPU(w io.Writer) {
	relays := r.relays()
	if len(relays) == 0 {
		return
	}
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	p("## Relay CPU per transaction\n\n" +
		"CPU time (user + system, all threads, from `/proc/PID/stat`) charged to each relay's process over each run's " +
		"steady state, divided by the transactions completed in it: µs per transaction, median of the rounds. " +
		"**This is the number to compare first**: a busy neighbour or an unlucky round lowers TPS much more than " +
		"the work the relay does per transaction. Lower is better; PostgreSQL's and pgbench's own CPU are not in it, " +
		"nor is setting sessions up (see the next section). " +
		"The user columns are the part of it spent in the relay's own code (for pgmoat, Go code and its runtime); " +
		"the rest is the kernel's, mostly on the relay's system calls, which cost about the same per call whichever " +
		"relay makes them: with equal system calls per transaction, the user columns show where a difference comes from. " +
		"Context switches are those of all the relay's threads (`/proc/PID/task/*/status`), over the same window. " +
		"System calls come from a separate pass after the rounds, one run of each cell on each relay with " +
		"`perf stat -e raw_syscalls:sys_enter` counting over its steady state (counting slows system calls, so those " +
		"runs' CPU and TPS are left out).\n\n")
	pb := r.has(targetPgBouncer) && r.has(targetPgmoat)
	ab := r.has(targetPgmoat) && r.has(targetPgmoatB)
	p("| script | -M | clients |")
	for _, t := range relays {
		p(" %s µs/tx |", targetTitle(t))
	}
	if pb {
		p(" pgmoat / PgBouncer |")
	}
	if ab {
		p(" pgmoat-b / pgmoat |")
	}
	for _, t := range relays {
		p(" %s user µs/tx |", targetTitle(t))
	}
	for _, t := range relays {
		p(" %s cs/tx |", targetTitle(t))
	}
	for _, t := range relays {
		p(" %s syscalls/tx |", targetTitle(t))
	}
	n := 4*len(relays) + map[bool]int{true: 1}[pb] + map[bool]int{true: 1}[ab]
	p("\n|---|---|---:|%s\n", strings.Repeat("---:|", n))
	for _, c := range r.Cells {
		p("| %s | %s | %d |", scriptTitle(c.Script), c.Mode, c.Clients)
		for _, t := range relays {
			p(" %s |", fmtCPU(r.stat(c, t)))
		}
		m := r.stat(c, targetPgmoat)
		if pb {
			p(" %s |", fmtRatio(cpuRatio(m, r.stat(c, targetPgBouncer))))
		}
		if ab {
			p(" %s |", fmtRatio(cpuRatio(r.stat(c, targetPgmoatB), m)))
		}
		for _, t := range relays {
			p(" %s |", fmtPerTx(r.stat(c, t).UserPerTx))
		}
		for _, t := range relays {
			p(" %s |", fmtPerTx(r.stat(c, t).CSPerTx))
		}
		for _, t := range relays {
			p(" %s |", fmtPerTx(r.stat(c, t).SyscallsPerTx))
		}
		p("\n")
	}
	p("\n")
	if slices.Contains(r.Charts, "cpu.png") {
		p("![Relay CPU per transaction by client count, per script and protocol](cpu.png)\n\n")
	}
}

// writeConnections shows what each relay spends to set a session up and
// tear it down.
func (r *report) writeConnections(w io.Writer) {
	c := r.Conns
	if c == nil || len(c.Runs) == 0 {
		return
	}
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	rounds := 0
	for _, run := range c.Runs {
		if run.Target == c.Runs[0].Target {
			rounds++
		}
	}
	p("## Relay CPU per connection\n\n"+
		"After the matrix, %d round(s) of %s sessions through each relay (the order alternating), %d at a time: each "+
		"connects, runs `SELECT 1` and closes. The relay's CPU time over a round, until it is idle again, divided by the "+
		"sessions: what a session costs to set up and tear down, which the cost per transaction above leaves out. "+
		"pgmoat dials an upstream connection and relays the authentication for each session, and its enforcement reads the "+
		"session's catalog; PgBouncer in session mode hands out a pooled server connection.\n\n",
		rounds, fmtThousands(float64(c.Sessions)), connectParallel)
	p("| relay | CPU µs per session (median) | lowest–highest | seconds per round (median) |\n|---|---:|---:|---:|\n")
	for _, t := range r.relays() {
		var cpu, secs []float64
		for _, run := range c.Runs {
			if run.Target == t {
				cpu = append(cpu, run.CPUPerConn())
				secs = append(secs, run.Elapsed.Seconds())
			}
		}
		if len(cpu) == 0 {
			continue
		}
		lo, hi := minMax(cpu)
		p("| %s | %s | %s–%s | %.2f |\n", targetTitle(t), fmtThousands(median(cpu)), fmtThousands(lo), fmtThousands(hi), median(secs))
	}
	p("\n")
}

func (r *report) writeLatency(w io.Writer) {
	if !r.has(targetDirect) {
		return
	}
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	var cs []cell
	for _, c := range r.Cells {
		if c.Script == "select" && c.Clients == 1 {
			cs = append(cs, c)
		}
	}
	if len(cs) == 0 {
		return
	}
	p("## Latency at 1 client (`-S`)\n\nAverage latency per transaction, µs (median of the rounds); " +
		"\"adds\" is the difference to direct.\n\n")
	p("| -M |")
	for _, t := range r.Targets {
		p(" %s µs |", targetTitle(t))
	}
	var others []string
	for _, t := range r.Targets {
		if t != targetDirect {
			others = append(others, t)
			p(" %s adds µs |", targetTitle(t))
		}
	}
	both := r.has(targetPgmoat) && r.has(targetPgBouncer)
	if both {
		p(" pgmoat adds / PgBouncer adds |")
	}
	p("\n|---|%s\n", strings.Repeat("---:|", len(r.Targets)+len(others)+map[bool]int{true: 1}[both]))
	for _, c := range cs {
		d := r.stat(c, targetDirect)
		p("| %s |", c.Mode)
		for _, t := range r.Targets {
			p(" %s |", fmtMicros(r.stat(c, t)))
		}
		for _, t := range others {
			s := r.stat(c, t)
			if s.ok() && d.ok() {
				p(" %+.1f |", (s.LatencyMS-d.LatencyMS)*1000)
			} else {
				p(" – |")
			}
		}
		if both {
			m, b := r.stat(c, targetPgmoat), r.stat(c, targetPgBouncer)
			if m.ok() && b.ok() && d.ok() && b.LatencyMS != d.LatencyMS {
				p(" %.2f |", (m.LatencyMS-d.LatencyMS)/(b.LatencyMS-d.LatencyMS))
			} else {
				p(" – |")
			}
		}
		p("\n")
	}
	p("\n")
}

func (r *report) writeMemory(w io.Writer) {
	if r.Idle == nil && len(r.Streams) == 0 {
		return
	}
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	p("## Memory (pgmoat's RSS, /proc/PID/status)\n\nEach step runs against a freshly started pgmoat.\n\n")
	if i := r.Idle; i != nil {
		p("### %d idle sessions\n\n", i.Sessions)
		p("Each session connects through pgmoat (so it has its own upstream connection: the server counted %d "+
			"backends for them), runs one query and stays idle.\n\n", i.Upstream)
		p("| before | all open and idle | added | per session | after they closed | time to open them |\n|---:|---:|---:|---:|---:|---:|\n")
		p("| %s | %s | %s | %.1f KiB | %s | %.1f s |\n\n", fmtMiB(i.BaseRSS), fmtMiB(i.OpenRSS), fmtMiB(i.Delta()),
			float64(i.Delta())/float64(i.Sessions)/1024, fmtMiB(i.ClosedRSS), i.OpenSeconds)
	}
	if len(r.Streams) > 0 {
		p("### Streaming\n\nOne client pulls rows of %d bytes, computed by the server as it sends them; pgmoat's "+
			"RSS is sampled every 10 ms during the transfer.\n\n", rowBytes)
		p("| transfer | size | direct MB/s | pgmoat MB/s | pgmoat RSS before | peak during | peak rise |\n|---|---:|---:|---:|---:|---:|---:|\n")
		for _, s := range r.Streams {
			p("| %s | %s | %.0f | %.0f | %s | %s | %s |\n", s.Pgmoat.Kind, fmtBytes(s.Pgmoat.Bytes),
				s.Direct.MBps(), s.Pgmoat.MBps(), fmtMiB(s.Pgmoat.BaseRSS), fmtMiB(s.Pgmoat.PeakRSS), fmtMiB(s.Pgmoat.PeakDelta()))
		}
		p("\n")
	}
}

// writeHolds shows the pending-holds step.
func (r *report) writeHolds(w io.Writer) {
	h := r.Holds
	if h == nil {
		return
	}
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	none, pending := h.stats()
	n := fmtThousands(float64(h.Holds))
	p("## Pending holds\n\n")
	p("pgbench `-S -M prepared`, 8 clients, %s runs through a freshly started pgmoat, %d round(s) of one run with no hold "+
		"pending and one with %s pending, the order alternating from round to round. For each run with holds, %s sessions "+
		"with application_name `%s` (the bench policy holds their destructive statements) connect through pgmoat and send "+
		"`%s`; pgmoat's admin API (`GET /api/v1/holds`) listed %s pending holds before the run and after it, and the "+
		"server's `pg_stat_activity` showed their %s backends, none of which had been sent the statement. Each run started once pgmoat was "+
		"quiet (under 5%% of a core). The sessions then closed, which withdraws their holds. pgbench_history kept its %s row(s) throughout: no held statement ran.\n\n",
		r.Opts.Duration, len(h.Runs)/2, n, n, holdApp, heldStatement, n, n, fmtThousands(float64(h.HistoryRows)))
	p("| | TPS | TPS spread | latency ms | pgmoat CPU µs/tx |\n|---|---:|---:|---:|---:|\n")
	row := func(name string, s stat) {
		if !s.ok() {
			p("| %s | – | – | – | – |\n", name)
			return
		}
		p("| %s | %s | %s–%s | %.3f | %s |\n", name, fmtThousands(s.TPS), fmtThousands(s.MinTPS), fmtThousands(s.MaxTPS),
			s.LatencyMS, fmtCPU(s))
	}
	row("no hold pending", none)
	row(n+" holds pending", pending)
	p("| pending / none | %s | | %s | %s |\n\n", fmtRatio(ratio(pending, none)), fmtRatio(h.latencyRatio()),
		fmtRatio(cpuRatio(pending, none)))
	idle := ""
	if r.Idle != nil {
		idle = "; compare the idle sessions above"
	}
	p("pgmoat's RSS: %s before the first held session, %s with the first round's %s holds pending (%+.1f KiB per held session, "+
		"its upstream connection included%s). Opening the sessions until every hold was listed took at most %.1f s; "+
		"each round's sessions received at least %s hold notices.\n\n",
		fmtMiB(h.BaseRSS), fmtMiB(h.HeldRSS), n, float64(h.HeldRSS-h.BaseRSS)/float64(h.Holds)/1024, idle,
		h.OpenSeconds, fmtThousands(float64(h.Notices)))
}

// notes are r.Notes and what pgmoat's counters and the runs without a
// steady state say about the run.
func (r *report) notes() []string {
	notes := append([]string(nil), r.Notes...)
	unmeasured := 0
	for _, c := range r.Cells {
		for _, t := range r.Targets {
			unmeasured += r.stat(c, t).Unmeasured
		}
	}
	if unmeasured > 0 {
		notes = append(notes, fmt.Sprintf("%d run(s) passed without a steady state of at least %s to measure (see latest.csv) and are left out of the medians.",
			unmeasured, minWindow))
	}
	for _, t := range r.pgmoatTargets() {
		if c := r.Counters[t]; c != nil && c.sum("pgmoat_statements_total") == 0 {
			notes = append(notes, t+" judged no statements during the matrix (pgmoat_statements_total did not move): "+
				"this build does not analyse statements on the query path yet, so its numbers measure the relay alone.")
		}
	}
	return notes
}

func (r *report) writeCounters(w io.Writer) {
	for _, t := range r.pgmoatTargets() {
		if c := r.Counters[t]; c != nil {
			writeCounters(w, t, c)
		}
	}
}

// writeCounters shows one pgmoat's counters.
func writeCounters(w io.Writer, who string, c counters) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	p("## %s's counters over the matrix\n\nFrom its admin `/metrics`, after minus before: "+
		"whether pgbench's statements went through the analysis.\n\n", who)
	p("- client connections: %s; bytes relayed: %s\n", fmtThousands(c.sum("pgmoat_client_connections_total")),
		fmtBytes(int64(c.sum("pgmoat_relayed_bytes_total"))))
	total := c.sum("pgmoat_statements_total")
	p("- statements judged: %s", fmtThousands(total))
	var parts []string
	for _, d := range c.labelValues("pgmoat_statements_total", "decision") {
		if v := c.sum("pgmoat_statements_total", fmt.Sprintf("decision=%q", d)); v > 0 {
			parts = append(parts, fmt.Sprintf("%s %s", d, fmtThousands(v)))
		}
	}
	if len(parts) > 0 {
		p(" (%s)", strings.Join(parts, ", "))
	}
	p("\n")
	hit, miss := c.sum("pgmoat_analysis_cache_requests_total", `result="hit"`), c.sum("pgmoat_analysis_cache_requests_total", `result="miss"`)
	if hit+miss > 0 {
		p("- decision cache: %s hits, %s misses (%.1f%% hits)\n", fmtThousands(hit), fmtThousands(miss), 100*hit/(hit+miss))
	}
	if n := c.sum("pgmoat_analysis_duration_seconds_count"); n > 0 {
		p("- analysis time: %.2f µs per message on average (%s messages)\n",
			c.sum("pgmoat_analysis_duration_seconds_sum")/n*1e6, fmtThousands(n))
	}
	p("\n")
}

func (c cell) String() string {
	return fmt.Sprintf("%s -M %s, %d clients", scriptTitle(c.Script), c.Mode, c.Clients)
}

func scriptTitle(s string) string {
	if s == "select" {
		return "-S"
	}
	return "TPC-B"
}

func targetTitle(t string) string {
	if t == targetPgBouncer {
		return "PgBouncer"
	}
	return t
}

func titles(ts []string) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = targetTitle(t)
	}
	return out
}

func fmtTPS(s stat) string {
	switch {
	case s.ok() && s.Failed > 0:
		return fmtThousands(s.TPS) + " (failures)"
	case s.ok():
		return fmtThousands(s.TPS)
	case s.Failed > 0:
		return "failed"
	}
	return "–"
}

func fmtCPU(s stat) string {
	if !s.hasCPU() {
		return "–"
	}
	return fmt.Sprintf("%.1f", s.CPUPerTx)
}

// fmtPerTx shows a count per transaction ("–" for none).
func fmtPerTx(x float64) string {
	if math.IsNaN(x) {
		return "–"
	}
	return fmt.Sprintf("%.2f", x)
}

func fmtMicros(s stat) string {
	if !s.ok() {
		return "–"
	}
	return fmt.Sprintf("%.1f", s.LatencyMS*1000)
}

func fmtRatio(x float64) string {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return "–"
	}
	return fmt.Sprintf("%.2f×", x)
}

// fmtThousands rounds x and groups its digits by thousands.
func fmtThousands(x float64) string {
	if math.IsNaN(x) {
		return "–"
	}
	s := fmt.Sprintf("%.0f", math.Abs(x))
	var b strings.Builder
	if x < 0 {
		b.WriteByte('-')
	}
	for i, ch := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(ch)
	}
	return b.String()
}

func fmtMiB(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

func fmtBytes(n int64) string {
	if n >= 1<<30 {
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	}
	return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20))
}

// mdEscape keeps free text from breaking a table row.
func mdEscape(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ").Replace(s)
}
