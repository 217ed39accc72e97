package main

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"os"
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
	Seconds int
	Start   time.Time
	Result  pgbenchResult
	Err     string
	// RelayCPU is the CPU time (user + system, seconds) the relay's
	// process used from just before pgbench started to just after it
	// ended; RelayCPUOK is false for direct, or when it could not be read.
	RelayCPU   float64
	RelayCPUOK bool
}

// CPUPerTx is the relay's CPU time per transaction of the run, in µs;
// NaN when there is no relay CPU time or no transaction.
func (r runRecord) CPUPerTx() float64 {
	if !r.RelayCPUOK || r.Result.Transactions <= 0 {
		return math.NaN()
	}
	return r.RelayCPU / float64(r.Result.Transactions) * 1e6
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
	Round  int
	Cell   cell
	Target target
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
}

func (m *matrix) run(ctx context.Context, p []plannedRun, w *csv.Writer) ([]runRecord, error) {
	recs := make([]runRecord, 0, len(p))
	for i, pr := range p {
		rec, err := m.runOne(ctx, pr)
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

// runOne runs pgbench once and reads the relay's CPU time around it. A
// pgbench failure is recorded in the record; the error is for what ends
// the whole run: an interruption, or the target's process gone.
func (m *matrix) runOne(ctx context.Context, pr plannedRun) (runRecord, error) {
	if err := ctx.Err(); err != nil {
		return runRecord{}, err
	}
	if pr.Cell.Script == "tpcb" {
		if err := m.resetTPCB(ctx); err != nil {
			return runRecord{}, fmt.Errorf("resetting the TPC-B tables: %w", err)
		}
	}
	jobs := min(pr.Cell.Clients, m.maxJobs)
	r := pgbenchRun{
		Bin: m.pgbench, Host: pr.Target.Host, Port: pr.Target.Port,
		User: m.user, Password: m.password, DB: benchDB,
		Script: pr.Cell.Script, Mode: pr.Cell.Mode, Clients: pr.Cell.Clients, Jobs: jobs,
		Duration: m.duration,
	}
	rec := runRecord{Round: pr.Round, Cell: pr.Cell, Target: pr.Target.Name,
		Jobs: jobs, Seconds: int(m.duration / time.Second), Start: time.Now().UTC()}
	pid, cpuBefore, cpuErr := 0, 0.0, error(nil)
	if pr.Target.PID != nil {
		pid = pr.Target.PID()
		cpuBefore, cpuErr = procCPU(pid)
	}
	res, err := r.run(ctx)
	rec.Result = res
	if pid != 0 && cpuErr == nil {
		var cpuAfter float64
		if cpuAfter, cpuErr = procCPU(pid); cpuErr == nil {
			rec.RelayCPU, rec.RelayCPUOK = cpuAfter-cpuBefore, true
		}
	}
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
	}
	if cpuErr != nil && rec.Err == "" {
		// The target is running (Gone said so, or the run passed), so
		// this is the bench's fault: say so rather than show no number.
		fmt.Fprintf(m.log, "bench: reading %s's CPU time: %v\n", pr.Target.Name, cpuErr)
	}
	return rec, nil
}

// logRun prints one line per run: where it is in the plan, the cell, the
// target and what pgbench (and the relay's CPU time) said.
func (m *matrix) logRun(rec runRecord, where string) {
	status := fmt.Sprintf("%9.0f tps  %7.3f ms", rec.Result.TPS, rec.Result.LatencyMS)
	if cpu := rec.CPUPerTx(); !math.IsNaN(cpu) {
		status += fmt.Sprintf("  %6.1f µs cpu/tx", cpu)
	}
	if rec.Err != "" {
		status = "FAILED: " + rec.Err
	}
	fmt.Fprintf(m.log, "[%s] round %d  %-6s -M %-8s -c %2d  %-9s %s\n",
		where, rec.Round, rec.Cell.Script, rec.Cell.Mode, rec.Cell.Clients, rec.Target, status)
}

// warmUp runs a short untimed -S load through every target, so that the
// first measured run does not pay for cold caches or lazily started pieces.
func (m *matrix) warmUp(ctx context.Context, ts []target) error {
	for _, t := range ts {
		r := pgbenchRun{Bin: m.pgbench, Host: t.Host, Port: t.Port, User: m.user, Password: m.password,
			DB: benchDB, Script: "select", Mode: "simple", Clients: 8, Jobs: m.maxJobs, Duration: 2 * time.Second}
		if _, err := r.run(ctx); err != nil {
			return fmt.Errorf("warm-up through %s: %w", t.Name, err)
		}
	}
	return nil
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
var csvHeader = []string{"seq", "round", "script", "mode", "clients", "jobs", "target", "seconds",
	"tps", "latency_ms", "transactions", "failed", "connect_ms", "relay_cpu_s", "relay_cpu_us_per_tx",
	"start_utc", "error"}

func (r runRecord) csvRow() []string {
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', 3, 64) }
	cpu, perTx := "", ""
	if r.RelayCPUOK {
		cpu = f(r.RelayCPU)
		if x := r.CPUPerTx(); !math.IsNaN(x) {
			perTx = f(x)
		}
	}
	return []string{
		strconv.Itoa(r.Seq), strconv.Itoa(r.Round), r.Cell.Script, r.Cell.Mode,
		strconv.Itoa(r.Cell.Clients), strconv.Itoa(r.Jobs), r.Target, strconv.Itoa(r.Seconds),
		f(r.Result.TPS), f(r.Result.LatencyMS), strconv.FormatInt(r.Result.Transactions, 10),
		strconv.FormatInt(r.Result.Failed, 10), f(r.Result.ConnectMS), cpu, perTx,
		r.Start.Format(time.RFC3339), r.Err,
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
