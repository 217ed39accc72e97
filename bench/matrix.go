package main

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// cell is one configuration of the matrix; every target runs it once per
// round.
type cell struct {
	Script  string // select (-S) or tpcb
	Mode    string // simple, extended, prepared
	Clients int
}

// runRecord is one pgbench run: a cell against a target in a round.
type runRecord struct {
	Round   int
	Seq     int // position in the whole run, 1-based
	Cell    cell
	Target  string
	Jobs    int
	Seconds int // pgbench's -T
	Start   time.Time
	Result  pgbenchResult
	Err     string
	// Window is the run's steady state (window.go), with the relay's CPU
	// time and context switches over it for PgBouncer and pgmoat;
	// WindowErr says why a run that passed has none, and it then counts
	// for nothing.
	Window    window
	WindowErr string
	// Counting marks a run of the system-call counting pass: only
	// SyscallsPerTx is taken from it.
	Counting      bool
	SyscallsPerTx float64 // NaN unless counted
}

// measured reports whether the run's numbers enter the medians.
func (r runRecord) measured() bool {
	return r.Err == "" && r.WindowErr == "" && !r.Counting && r.Window.Tx > 0
}

// TPS is the transactions per second of the run's steady state; NaN when
// it has none.
func (r runRecord) TPS() float64 {
	if r.Window.Tx <= 0 || r.Window.Seconds() <= 0 {
		return math.NaN()
	}
	return float64(r.Window.Tx) / r.Window.Seconds()
}

// CPUPerTx is the relay's CPU time per transaction of the steady state, in
// µs; NaN for direct, or when there is no steady state.
func (r runRecord) CPUPerTx() float64 {
	if !r.Window.Relay || r.Window.Tx <= 0 {
		return math.NaN()
	}
	return r.Window.CPU / float64(r.Window.Tx) * 1e6
}

// UserPerTx is the part of CPUPerTx the relay spent in user space.
func (r runRecord) UserPerTx() float64 {
	if !r.Window.Relay || r.Window.Tx <= 0 {
		return math.NaN()
	}
	return r.Window.User / float64(r.Window.Tx) * 1e6
}

// CSPerTx is the relay's context switches per transaction of the steady
// state; NaN for direct, or when there is no steady state.
func (r runRecord) CSPerTx() float64 {
	if !r.Window.Relay || r.Window.Tx <= 0 {
		return math.NaN()
	}
	return float64(r.Window.CS) / float64(r.Window.Tx)
}

// cells is the cross product of scripts, modes and client counts, in the
// order tables show them.
func cells(scripts, modes []string, clients []int) []cell {
	var cs []cell
	for _, s := range scripts {
		for _, m := range modes {
			for _, c := range clients {
				cs = append(cs, cell{Script: s, Mode: m, Clients: c})
			}
		}
	}
	return cs
}

// plannedRun is a cell against a target, before it runs.
type plannedRun struct {
	Round    int
	Cell     cell
	Target   target
	Counting bool // a run of the system-call counting pass
}

// plan orders the runs: round by round, cell by cell, every target once per
// cell, the targets' order rotating from one cell (and round) to the next
// so that no target always runs first, last or right after another's
// warm-up.
func plan(rounds int, cs []cell, ts []target) []plannedRun {
	var p []plannedRun
	for r := 0; r < rounds; r++ {
		for i, c := range cs {
			off := (r + i) % len(ts)
			for k := range ts {
				p = append(p, plannedRun{Round: r + 1, Cell: c, Target: ts[(off+k)%len(ts)]})
			}
		}
	}
	return p
}

// countingPlan is the system-call counting pass: after the rounds, every
// cell once against each relay (targets with a PID).
func countingPlan(rounds int, cs []cell, ts []target) []plannedRun {
	var p []plannedRun
	for _, c := range cs {
		for _, t := range ts {
			if t.PID != nil {
				p = append(p, plannedRun{Round: rounds + 1, Cell: c, Target: t, Counting: true})
			}
		}
	}
	return p
}

// matrix runs the plan and writes each run to w (CSV) as it completes, so
// an interrupted run keeps what it measured.
type matrix struct {
	pgbench  string
	user     string
	password string
	duration time.Duration
	maxJobs  int
	// resetTPCB puts the TPC-B tables back as pgbench itself would before
	// a run (empty history, vacuumed branches and tellers), directly on
	// the server so that no target pays for it.
	resetTPCB func(ctx context.Context) error
	log       io.Writer
	// dir holds pgbench's transaction logs and perf's counts while a run
	// reads them.
	dir string
	// perClient is how long a client of a job took to connect to each
	// target last time (noteConnect, slackFor).
	perClient map[string]time.Duration
	// ready is how long a target's clients took to be ready last time,
	// by client count.
	ready map[readyKey]time.Duration
	seq   int
	// beforeRound, when set, runs before each round starts (and before the
	// counting pass).
	beforeRound func(ctx context.Context, round int) error
}

func (m *matrix) run(ctx context.Context, p []plannedRun, w *csv.Writer) ([]runRecord, error) {
	recs := make([]runRecord, 0, len(p))
	for i, pr := range p {
		if m.beforeRound != nil && (i == 0 || p[i-1].Round != pr.Round) {
			if err := m.beforeRound(ctx, pr.Round); err != nil {
				return recs, err
			}
		}
		rec, err := m.runOne(ctx, pr)
		if err == nil && rec.Err == "" && rec.WindowErr != "" {
			// Most likely the clients took longer to be ready than the
			// run gave them: once more, with the time this run showed.
			m.logRun(rec, fmt.Sprintf("%3d/%d", i+1, len(p)))
			rec, err = m.runOne(ctx, pr)
		}
		if err != nil {
			return recs, err
		}
		rec.Seq = i + 1
		recs = append(recs, rec)
		m.logRun(rec, fmt.Sprintf("%3d/%d", i+1, len(p)))
		if err := w.Write(rec.csvRow()); err != nil {
			return recs, err
		}
		w.Flush()
		if err := w.Error(); err != nil {
			return recs, err
		}
	}
	return recs, nil
}

// runOne runs pgbench once, samples the relay's counters (or, in the
// counting pass, counts its system calls) meanwhile, and takes the numbers
// over the run's steady state. A pgbench failure is recorded in the
// record; the error is for what ends the whole run: an interruption, or
// the target's process gone.
func (m *matrix) runOne(ctx context.Context, pr plannedRun) (runRecord, error) {
	if err := ctx.Err(); err != nil {
		return runRecord{}, err
	}
	if pr.Cell.Script == "tpcb" {
		if err := m.resetTPCB(ctx); err != nil {
			return runRecord{}, fmt.Errorf("resetting the TPC-B tables: %w", err)
		}
	}
	m.seq++
	jobs := min(pr.Cell.Clients, m.maxJobs)
	r := pgbenchRun{
		Bin: m.pgbench, Host: pr.Target.Host, Port: pr.Target.Port,
		User: m.user, Password: m.password, DB: benchDB,
		Script: pr.Cell.Script, Mode: pr.Cell.Mode, Clients: pr.Cell.Clients, Jobs: jobs,
		Duration: m.duration, Slack: m.slackFor(pr.Target.Name, pr.Cell.Clients, jobs),
		LogPrefix: filepath.Join(m.dir, fmt.Sprintf("tx-%d", m.seq)),
	}
	rec := runRecord{Round: pr.Round, Cell: pr.Cell, Target: pr.Target.Name, Counting: pr.Counting,
		Jobs: jobs, Seconds: r.seconds(), Start: time.Now().UTC(), SyscallsPerTx: math.NaN()}
	var (
		smp     *sampler
		counter *syscallCounter
		probErr error
	)
	if pr.Target.PID != nil {
		if pr.Counting {
			counter, probErr = countSyscalls(pr.Target.PID(), m.dir)
		} else {
			smp = startSampler(pr.Target.PID())
		}
	}
	began := time.Now()
	res, err := r.run(ctx)
	rec.Result = res
	var (
		samples []relaySample
		counts  []syscallCount
	)
	if smp != nil {
		samples, probErr = smp.finish()
		if samples == nil {
			samples = []relaySample{}
		}
	}
	if counter != nil {
		counts, probErr = counter.finish()
	}
	txs, logErr := readTxLogs(r.LogPrefix)
	if err != nil {
		if ctx.Err() != nil {
			return rec, ctx.Err()
		}
		if pr.Target.Gone != nil {
			if gone := pr.Target.Gone(); gone != nil {
				return rec, gone
			}
		}
		rec.Err = err.Error()
		return rec, nil
	}
	m.noteConnect(pr.Target.Name, readyMS(res, txs, logErr, began), pr.Cell.Clients, jobs)
	switch {
	case logErr != nil:
		rec.WindowErr = logErr.Error()
	case probErr != nil:
		// The target is running (the run passed), so this is the
		// bench's fault: say so rather than show no number.
		rec.WindowErr = fmt.Sprintf("reading %s's counters: %v", pr.Target.Name, probErr)
	case pr.Counting:
		if rec.Window, err = steadyWindow(txs, nil); err != nil {
			rec.WindowErr = err.Error()
		} else if rec.SyscallsPerTx, err = syscallWindow(txs, counts); err != nil {
			rec.WindowErr = err.Error()
			rec.SyscallsPerTx = math.NaN()
		}
	default:
		if pr.Target.PID == nil {
			samples = nil // direct: the window is the transactions'
		}
		if rec.Window, err = steadyWindow(txs, samples); err != nil {
			rec.WindowErr = err.Error()
		}
	}
	if rec.WindowErr != "" {
		fmt.Fprintf(m.log, "bench: %s on %s: %s\n", pr.Cell, pr.Target.Name, rec.WindowErr)
	}
	return rec, nil
}

// logRun prints one line per run: where it is in the plan, the cell, the
// target and what its steady state (and the relay's counters) showed.
func (m *matrix) logRun(rec runRecord, where string) {
	status := fmt.Sprintf("%9.0f tps  %7.3f ms", rec.TPS(), rec.Result.LatencyMS)
	if cpu := rec.CPUPerTx(); !math.IsNaN(cpu) {
		status += fmt.Sprintf("  %6.1f µs cpu/tx  %5.2f cs/tx", cpu, rec.CSPerTx())
	}
	if !math.IsNaN(rec.SyscallsPerTx) {
		status += fmt.Sprintf("  %5.2f syscalls/tx", rec.SyscallsPerTx)
	}
	if rec.Err != "" {
		status = "FAILED: " + rec.Err
	} else if rec.WindowErr != "" {
		status = "NOT MEASURED: " + rec.WindowErr
	}
	round := fmt.Sprintf("round %d", rec.Round)
	if rec.Counting {
		round = "counting"
	}
	fmt.Fprintf(m.log, "[%s] %-8s %-6s -M %-8s -c %3d  %-9s %s\n",
		where, round, rec.Cell.Script, rec.Cell.Mode, rec.Cell.Clients, rec.Target, status)
}

// warmUp runs a short untimed -S load through every target, with as many
// clients as the largest cell, so that the first measured run does not pay
// for cold caches, lazily started pieces or PgBouncer's pool filling up
// (it opens server connections as clients need them). How long the
// clients took to connect seeds the time each target's runs give them.
func (m *matrix) warmUp(ctx context.Context, ts []target, clients int) error {
	clients = max(clients, 8)
	jobs := min(clients, m.maxJobs)
	for _, t := range ts {
		// Nothing is known yet of how long connecting takes: 100 ms a
		// client is several times what a busy 2-core machine needs.
		slack := time.Duration((clients+jobs-1)/jobs) * 100 * time.Millisecond
		if known := m.slackFor(t.Name, clients, jobs); known > 0 {
			slack = known
		}
		r := pgbenchRun{Bin: m.pgbench, Host: t.Host, Port: t.Port, User: m.user, Password: m.password,
			DB: benchDB, Script: "select", Mode: "simple", Clients: clients, Jobs: jobs, Duration: 2 * time.Second,
			Slack: slack, LogPrefix: filepath.Join(m.dir, "warm-up-"+t.Name)}
		began := time.Now()
		res, err := r.run(ctx)
		txs, logErr := readTxLogs(r.LogPrefix)
		if err != nil {
			return fmt.Errorf("warm-up through %s: %w", t.Name, err)
		}
		m.noteConnect(t.Name, readyMS(res, txs, logErr, began), clients, jobs)
	}
	return nil
}

// readyMS is how long a run's clients took to be ready, in ms: connected
// and past their first transaction, which through PgBouncer may take much
// longer than connecting (it opens a server connection when a client first
// needs one). It is pgbench's connection time when the transaction log
// says nothing.
func readyMS(res pgbenchResult, txs txLog, logErr error, began time.Time) float64 {
	if logErr != nil || txs.Ready.IsZero() {
		return res.ConnectMS
	}
	return max(res.ConnectMS, float64(txs.Ready.Sub(began))/float64(time.Millisecond))
}

// noteConnect remembers how long a target's clients took to be ready, for
// that many clients and per client of a job, so that the next runs give
// theirs as long with margin.
func (m *matrix) noteConnect(target string, connectMS float64, clients, jobs int) {
	if connectMS <= 0 {
		return
	}
	d := time.Duration(connectMS * float64(time.Millisecond))
	perJob := (clients + jobs - 1) / max(jobs, 1)
	m.perClient[target] = d / time.Duration(perJob)
	m.ready[readyKey{target, clients}] = d
}

// readyKey is a target and a client count.
type readyKey struct {
	target  string
	clients int
}

// slackFor is the time c's clients get to connect to target: 1.5 times what
// as many took last time, or, the first time, what the last run's took per
// client of a job; and a second more. Readiness does not scale with the
// clients: PgBouncer connects its clients at once but opens the server
// connections its pool lacks one at a time.
func (m *matrix) slackFor(target string, clients, jobs int) time.Duration {
	if d, ok := m.ready[readyKey{target, clients}]; ok {
		return d*3/2 + time.Second
	}
	d, ok := m.perClient[target]
	if !ok {
		return 0
	}
	perJob := (clients + jobs - 1) / max(jobs, 1)
	return d*time.Duration(perJob)*3/2 + time.Second
}

// resetTPCB is pgbench's own pre-run clean-up, run directly on the server.
func resetTPCB(connect func(context.Context) (*pgconn.PgConn, error)) func(context.Context) error {
	return func(ctx context.Context) error {
		conn, err := connect(ctx)
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		// One statement per query: VACUUM refuses to run in the implicit
		// transaction of a multi-statement query.
		for _, q := range []string{"VACUUM pgbench_branches", "VACUUM pgbench_tellers", "TRUNCATE pgbench_history"} {
			if _, err := conn.Exec(ctx, q).ReadAll(); err != nil {
				return fmt.Errorf("%s: %w", q, err)
			}
		}
		return nil
	}
}

// csvHeader names the columns of results/latest.csv.
var csvHeader = []string{"seq", "round", "pass", "script", "mode", "clients", "jobs", "target", "seconds",
	"pgbench_tps", "latency_ms", "transactions", "failed", "connect_ms",
	"window_s", "window_tx", "tps", "relay_cpu_s", "relay_cpu_us_per_tx", "relay_user_us_per_tx", "relay_cs", "relay_cs_per_tx",
	"syscalls_per_tx", "start_utc", "error"}

func (r runRecord) csvRow() []string {
	f := func(v float64) string {
		if math.IsNaN(v) {
			return ""
		}
		return strconv.FormatFloat(v, 'f', 3, 64)
	}
	pass := "measure"
	if r.Counting {
		pass = "count"
	}
	var winS, winTx, cpu, cs string
	if r.Window.Tx > 0 {
		winS, winTx = f(r.Window.Seconds()), strconv.FormatInt(r.Window.Tx, 10)
	}
	if r.Window.Relay {
		cpu, cs = f(r.Window.CPU), strconv.FormatInt(r.Window.CS, 10)
	}
	errText := r.Err
	if errText == "" && r.WindowErr != "" {
		errText = "not measured: " + r.WindowErr
	}
	return []string{
		strconv.Itoa(r.Seq), strconv.Itoa(r.Round), pass, r.Cell.Script, r.Cell.Mode,
		strconv.Itoa(r.Cell.Clients), strconv.Itoa(r.Jobs), r.Target, strconv.Itoa(r.Seconds),
		f(r.Result.TPS), f(r.Result.LatencyMS), strconv.FormatInt(r.Result.Transactions, 10),
		strconv.FormatInt(r.Result.Failed, 10), f(r.Result.ConnectMS),
		winS, winTx, f(r.TPS()), cpu, f(r.CPUPerTx()), f(r.UserPerTx()), cs, f(r.CSPerTx()),
		f(r.SyscallsPerTx), r.Start.Format(time.RFC3339), errText,
	}
}

// openCSV creates path with the header row.
func openCSV(path string) (*os.File, *csv.Writer, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, nil, err
	}
	w := csv.NewWriter(f)
	if err := w.Write(csvHeader); err != nil {
		f.Close()
		return nil, nil, err
	}
	w.Flush()
	return f, w, w.Error()
}
