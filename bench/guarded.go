package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// The guarded step measures what guarded execution adds to a statement
// that static analysis cannot settle. One session through pgmoat and one
// straight to the server run, in alternation, a targeted UPDATE of
// pgbench_accounts that pgmoat proves harmless (its WHERE fixes the key:
// no guard) and one it cannot prove (a range: run under guard, the rows it
// changed counted, then committed). Both change the same one row.
const (
	guardedKeyed = "UPDATE pgbench_accounts SET filler = filler WHERE aid = 1"
	guardedRange = "UPDATE pgbench_accounts SET filler = filler WHERE aid < 2"
)

// guardedResult is the guarded step's outcome: median latencies in µs.
type guardedResult struct {
	N                      int
	DirectKeyed, DirectRng float64 // straight to the server
	MoatKeyed, MoatRange   float64 // through pgmoat: proven harmless, guarded
	Guarded                float64 // pgmoat_guarded_statements_total{outcome="passed"} over the step
}

// relayUS is what pgmoat adds to a statement it proves harmless.
func (g guardedResult) relayUS() float64 { return g.MoatKeyed - g.DirectKeyed }

// guardUS is what pgmoat adds to a statement it runs under guard.
func (g guardedResult) guardUS() float64 { return g.MoatRange - g.DirectRng }

func (s *stack) guardedStep(ctx context.Context, n int) (guardedResult, error) {
	r := guardedResult{N: n}
	if s.pgmoat == nil {
		return r, fmt.Errorf("no pgmoat to measure")
	}
	moat, err := pgconn.Connect(ctx, s.connString(s.pgmoat.port, "pgmoat-bench-guarded"))
	if err != nil {
		return r, fmt.Errorf("connecting through pgmoat: %w", err)
	}
	defer moat.Close(ctx)
	direct, err := pgconn.Connect(ctx, s.connString(s.cluster.Port, "pgmoat-bench-guarded"))
	if err != nil {
		return r, fmt.Errorf("connecting to the server: %w", err)
	}
	defer direct.Close(ctx)
	before, err := scrapeCounters(ctx, s.pgmoat.adminPort)
	if err != nil {
		return r, err
	}
	runs := []struct {
		conn *pgconn.PgConn
		sql  string
		out  *float64
		took []float64
	}{
		{conn: direct, sql: guardedKeyed, out: &r.DirectKeyed},
		{conn: moat, sql: guardedKeyed, out: &r.MoatKeyed},
		{conn: direct, sql: guardedRange, out: &r.DirectRng},
		{conn: moat, sql: guardedRange, out: &r.MoatRange},
	}
	// A first round warms both sessions (pgmoat reads the catalog and
	// prepares its snapshot query once per session).
	for i := -1; i < n; i++ {
		for j := range runs {
			start := time.Now()
			if _, err := runs[j].conn.Exec(ctx, runs[j].sql).ReadAll(); err != nil {
				return r, fmt.Errorf("%s: %w", runs[j].sql, err)
			}
			if i >= 0 {
				runs[j].took = append(runs[j].took, float64(time.Since(start).Microseconds()))
			}
		}
	}
	for _, run := range runs {
		*run.out = median(run.took)
	}
	after, err := scrapeCounters(ctx, s.pgmoat.adminPort)
	if err != nil {
		return r, err
	}
	const passed = `pgmoat_guarded_statements_total{outcome="passed"}`
	r.Guarded = after[passed] - before[passed]
	if r.Guarded < float64(n) {
		return r, fmt.Errorf("pgmoat guarded %v of the %d range updates: the step measured no guard", r.Guarded, n+1)
	}
	return r, nil
}

// writeGuarded shows the guarded-execution step, and how many statements
// of the pgbench matrix pgmoat ran under guard (none: pgbench's statements
// are proven harmless on the fast path).
func (r *report) writeGuarded(w io.Writer) {
	g := r.Guarded
	if g == nil {
		return
	}
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	p("## Guarded execution\n\n")
	p("One session through pgmoat and one straight to the server send, in alternation, %d times each (after one warm-up "+
		"round), `%s` (its WHERE fixes the key: pgmoat proves it harmless, no guard) and `%s` (a range: pgmoat cannot prove "+
		"which rows it matches, so it runs it under guard: snapshot, statement, snapshot, commit, in one write and one more "+
		"round trip). Both change the same one row of the protected `pgbench_accounts`. pgmoat counted %s guarded statements "+
		"that passed over the step. Median latencies:\n\n",
		g.N, guardedKeyed, guardedRange, fmtThousands(g.Guarded))
	p("| statement | direct µs | through pgmoat µs | pgmoat adds µs |\n|---|---:|---:|---:|\n")
	p("| key (fast path) | %.0f | %.0f | %.0f |\n", g.DirectKeyed, g.MoatKeyed, g.relayUS())
	p("| range (guarded) | %.0f | %.0f | %.0f |\n\n", g.DirectRng, g.MoatRange, g.guardUS())
	var matrix float64
	have := false
	for _, c := range r.Counters {
		for k, v := range c {
			if strings.HasPrefix(k, "pgmoat_guarded_statements_total") {
				matrix += v
			}
		}
		have = true
	}
	if have {
		p("Over the pgbench matrix (protected tables, every statement judged) pgmoat ran %s statements under guard.\n\n", fmtThousands(matrix))
	}
}
