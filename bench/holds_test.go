package main

import (
	"math"
	"testing"

	"github.com/pgmoat/pgmoat/approvals"
)

func TestCountHolds(t *testing.T) {
	hs := []approvals.HoldInfo{
		{Application: holdApp, Status: approvals.StatusPending},
		{Application: holdApp, Status: approvals.StatusPending},
		{Application: holdApp, Status: approvals.StatusWithdrawn},
		{Application: "goose", Status: approvals.StatusPending},
	}
	if got := countHolds(hs, holdApp, approvals.StatusPending); got != 2 {
		t.Errorf("pending holds of %s: %d, want 2 (another application's do not count)", holdApp, got)
	}
	if got := countHolds(hs, holdApp, approvals.StatusApproved); got != 0 {
		t.Errorf("approved: %d, want 0", got)
	}
}

func TestHoldsResultStats(t *testing.T) {
	c := cell{Script: "select", Mode: "prepared", Clients: 8}
	run := func(target string, tps, lat float64) runRecord { return steadyRun(c, target, tps, lat, 20, 0.5) }
	h := holdsResult{Holds: 1000, Runs: []runRecord{
		run(holdsNone, 30000, 0.260), run(holdsPending, 29000, 0.270),
		run(holdsPending, 28000, 0.280), run(holdsNone, 31000, 0.250),
		run(holdsNone, 20000, 0.400), run(holdsPending, 29500, 0.275),
	}}
	none, pending := h.stats()
	if none.N != 3 || pending.N != 3 || none.LatencyMS != 0.260 || pending.LatencyMS != 0.275 || none.TPS != 30000 {
		t.Errorf("none %+v, pending %+v", none, pending)
	}
	if got := h.latencyRatio(); math.Abs(got-0.275/0.260) > 1e-12 {
		t.Errorf("latency ratio %v, want %v", got, 0.275/0.260)
	}
	if math.Abs(pending.CPUPerTx-20) > 1e-9 {
		t.Errorf("CPU µs/tx with holds pending: %v, want 20", pending.CPUPerTx)
	}
	if !math.IsNaN((holdsResult{Holds: 10}).latencyRatio()) {
		t.Error("a latency ratio without runs")
	}
}
