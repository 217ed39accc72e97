package main

import (
	"math"
	"testing"
)

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
		{[]float64{10, 10, 1000, 10, 1}, 10},
	} {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
	if !math.IsNaN(median(nil)) {
		t.Error("median of nothing is a number")
	}
}

func TestSummarize(t *testing.T) {
	c := cell{Script: "select", Mode: "simple", Clients: 8}
	rec := func(target string, tps, lat float64, err string) runRecord {
		r := steadyRun(c, target, tps, lat, math.NaN(), 0)
		r.Err = err
		return r
	}
	st := summarize([]runRecord{
		rec("direct", 100, 1, ""), rec("direct", 300, 3, ""), rec("direct", 200, 2, ""),
		rec("pgmoat", 90, 1, ""), rec("pgmoat", 0, 0, "pgbench: blocked"), rec("pgmoat", 110, 1, ""),
	})
	d := st[statKey{c, "direct"}]
	if d.N != 3 || d.TPS != 200 || d.LatencyMS != 2 || d.MinTPS != 100 || d.MaxTPS != 300 || d.Failed != 0 {
		t.Errorf("direct: %+v", d)
	}
	m := st[statKey{c, "pgmoat"}]
	if m.N != 2 || m.TPS != 100 || m.Failed != 1 || m.Err != "pgbench: blocked" {
		t.Errorf("pgmoat: %+v (a failed run must not count as 0 TPS, and must be reported)", m)
	}
	if got := ratio(m, d); got != 0.5 {
		t.Errorf("ratio = %v, want 0.5", got)
	}
	if !math.IsNaN(ratio(m, st[statKey{c, "pgbouncer"}])) {
		t.Error("ratio against a target that did not run is a number")
	}
}

func TestSummarizeCPU(t *testing.T) {
	c := cell{Script: "select", Mode: "prepared", Clients: 8}
	rec := func(target string, tx int64, cpu float64, ok bool, err string) runRecord {
		perTx := math.NaN()
		if ok {
			perTx = cpu / float64(tx) * 1e6
		}
		r := steadyRun(c, target, float64(tx)/3, 1, perTx, 1)
		r.Err = err
		return r
	}
	st := summarize([]runRecord{
		rec(targetDirect, 100000, 0, false, ""),
		rec(targetPgBouncer, 100000, 2, true, ""), rec(targetPgBouncer, 100000, 3, true, ""), rec(targetPgBouncer, 100000, 1, true, ""),
		// A failed run's CPU time does not count.
		rec(targetPgmoat, 100000, 4, true, ""), rec(targetPgmoat, 1000, 50, true, "pgbench: blocked"),
		// A run whose CPU time could not be read has none.
		rec("relay-without-cpu", 100000, 0, false, ""),
	})
	d, b, m, mb := st[statKey{c, targetDirect}], st[statKey{c, targetPgBouncer}], st[statKey{c, targetPgmoat}], st[statKey{c, "relay-without-cpu"}]
	if d.hasCPU() || mb.hasCPU() {
		t.Errorf("direct or a run without CPU time has a CPU median: %+v, %+v", d, mb)
	}
	if b.CPUPerTx != 20 || m.CPUPerTx != 40 {
		t.Errorf("µs/tx: PgBouncer %v, pgmoat %v; want 20 and 40", b.CPUPerTx, m.CPUPerTx)
	}
	if got := cpuRatio(m, b); got != 2 {
		t.Errorf("cpuRatio = %v, want 2", got)
	}
	if !math.IsNaN(cpuRatio(m, d)) || !math.IsNaN(cpuRatio(m, stat{})) {
		t.Error("a CPU ratio against a target without CPU time is a number")
	}
}
