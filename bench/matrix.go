package main

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
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
		if err := ctx.Err(); err != nil {
			return recs, err
		}
		if pr.Cell.Script == "tpcb" {
			if err := m.resetTPCB(ctx); err != nil {
				return recs, fmt.Errorf("resetting the TPC-B tables: %w", err)
			}
		}
		jobs := min(pr.Cell.Clients, m.maxJobs)
		r := pgbenchRun{
			Bin: m.pgbench, Host: pr.Target.Host, Port: pr.Target.Port,
			User: m.user, Password: m.password, DB: benchDB,
			Script: pr.Cell.Script, Mode: pr.Cell.Mode, Clients: pr.Cell.Clients, Jobs: jobs,
			Duration: m.duration,
		}
		rec := runRecord{Round: pr.Round, Seq: i + 1, Cell: pr.Cell, Target: pr.Target.Name,
			Jobs: jobs, Seconds: int(m.duration / time.Second), Start: time.Now().UTC()}
		res, err := r.run(ctx)
		rec.Result = res
		if err != nil {
			if ctx.Err() != nil {
				return recs, ctx.Err()
			}
			if pr.Target.Gone != nil {
				if gone := pr.Target.Gone(); gone != nil {
					return recs, gone
				}
			}
			rec.Err = err.Error()
		}
		recs = append(recs, rec)
		status := fmt.Sprintf("%9.0f tps  %7.3f ms", res.TPS, res.LatencyMS)
		if rec.Err != "" {
			status = "FAILED: " + rec.Err
		}
		fmt.Fprintf(m.log, "[%3d/%d] round %d  %-6s -M %-8s -c %2d  %-9s %s\n",
			i+1, len(p), pr.Round, pr.Cell.Script, pr.Cell.Mode, pr.Cell.Clients, pr.Target.Name, status)
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
	"tps", "latency_ms", "transactions", "failed", "connect_ms", "start_utc", "error"}

func (r runRecord) csvRow() []string {
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', 3, 64) }
	return []string{
		strconv.Itoa(r.Seq), strconv.Itoa(r.Round), r.Cell.Script, r.Cell.Mode,
		strconv.Itoa(r.Cell.Clients), strconv.Itoa(r.Jobs), r.Target, strconv.Itoa(r.Seconds),
		f(r.Result.TPS), f(r.Result.LatencyMS), strconv.FormatInt(r.Result.Transactions, 10),
		strconv.FormatInt(r.Result.Failed, 10), f(r.Result.ConnectMS),
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
