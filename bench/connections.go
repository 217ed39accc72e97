package main

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// The connections step measures what the matrix leaves out of the cost per
// transaction: a relay's CPU time to set up and tear down a session. Each
// round opens n sessions through each relay, connectParallel at a time;
// each runs one query and closes. pgmoat dials an upstream connection and
// relays the authentication for every session, and the enforcement reads
// the session's catalog; PgBouncer in session mode hands out a pooled
// server connection (its pool is warm from the matrix).

// connectParallel is how many sessions the connections step opens at once.
const connectParallel = 4

// connRun is one round of the connections step on one relay.
type connRun struct {
	Target   string
	Sessions int
	CPU      float64       // relay CPU seconds over the round
	Elapsed  time.Duration // wall time of the round
}

// CPUPerConn is the relay's CPU per session, in µs.
func (r connRun) CPUPerConn() float64 { return r.CPU / float64(r.Sessions) * 1e6 }

// connResult is the connections step: every round's run, per relay.
type connResult struct {
	Sessions int
	Runs     []connRun
}

// median is the median CPU per session of target's rounds (NaN if none).
func (c *connResult) median(target string) float64 {
	var xs []float64
	for _, r := range c.Runs {
		if r.Target == target {
			xs = append(xs, r.CPUPerConn())
		}
	}
	return median(xs)
}

// connectionsStep runs rounds of n sessions through each relay in ts
// (targets with a PID), alternating their order from round to round.
func (s *stack) connectionsStep(ctx context.Context, ts []target, n, rounds int) (connResult, error) {
	res := connResult{Sessions: n}
	var relays []target
	for _, t := range ts {
		if t.PID != nil {
			relays = append(relays, t)
		}
	}
	for round := 0; round < rounds; round++ {
		for k := range relays {
			t := relays[(round+k)%len(relays)]
			if err := waitQuiet(ctx, t.PID(), 0.05, 200*time.Millisecond, 10*time.Second); err != nil {
				return res, err
			}
			before, err := procCPU(t.PID())
			if err != nil {
				return res, err
			}
			start := time.Now()
			connStr := s.connString(t.Port, "pgmoat-bench-connect")
			err = parallelDo(ctx, n, connectParallel, func(ctx context.Context, i int) error {
				c, err := pgconn.Connect(ctx, connStr)
				if err != nil {
					return fmt.Errorf("session %d through %s: %w", i+1, t.Name, err)
				}
				defer c.Close(ctx)
				if _, err := c.Exec(ctx, "SELECT 1").ReadAll(); err != nil {
					return fmt.Errorf("session %d through %s: %w", i+1, t.Name, err)
				}
				return nil
			})
			if err != nil {
				return res, err
			}
			elapsed := time.Since(start)
			// The relay ends a session after the client has gone: wait
			// for it to finish before reading its CPU time.
			if err := waitQuiet(ctx, t.PID(), 0.02, 100*time.Millisecond, 10*time.Second); err != nil {
				return res, err
			}
			after, err := procCPU(t.PID())
			if err != nil {
				return res, err
			}
			res.Runs = append(res.Runs, connRun{Target: t.Name, Sessions: n, CPU: after - before, Elapsed: elapsed})
		}
	}
	return res, nil
}
