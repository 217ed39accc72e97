package main

import (
	"math"
	"testing"
)

// TestPlanAlternates checks what makes the medians comparable: every
// target runs every cell once per round, and no target keeps the same
// position in the order.
func TestPlanAlternates(t *testing.T) {
	ts := []target{{Name: "direct"}, {Name: "pgbouncer"}, {Name: "pgmoat"}}
	cs := cells([]string{"select", "tpcb"}, []string{"simple", "prepared"}, []int{1, 8, 32})
	if len(cs) != 12 {
		t.Fatalf("%d cells, want 12", len(cs))
	}
	const rounds = 3
	p := plan(rounds, cs, ts)
	if len(p) != rounds*len(cs)*len(ts) {
		t.Fatalf("%d runs, want %d", len(p), rounds*len(cs)*len(ts))
	}
	type key struct {
		round  int
		c      cell
		target string
	}
	seen := map[key]int{}
	position := map[string][3]int{} // target → how often first, second, third
	for i, r := range p {
		seen[key{r.Round, r.Cell, r.Target.Name}]++
		pos := position[r.Target.Name]
		pos[i%len(ts)]++
		position[r.Target.Name] = pos
		if i%len(ts) != 0 && p[i-1].Cell != r.Cell {
			t.Fatalf("run %d: a cell's targets are not run back to back", i)
		}
	}
	for _, r := range p {
		if n := seen[key{r.Round, r.Cell, r.Target.Name}]; n != 1 {
			t.Errorf("round %d %v %s runs %d times", r.Round, r.Cell, r.Target.Name, n)
		}
	}
	for name, pos := range position {
		if pos[0] != pos[1] || pos[1] != pos[2] {
			t.Errorf("%s is first/second/third %v times; want equal", name, pos)
		}
	}
}

// TestCSVRelayCPU: the relay's CPU time and its cost per transaction are
// in the CSV for relays, and empty for direct.
func TestCSVRelayCPU(t *testing.T) {
	c := cell{Script: "select", Mode: "prepared", Clients: 8}
	relay := steadyRun(c, targetPgmoat, 30000, 0.25, 30, 0.5)
	if got := relay.CPUPerTx(); math.Abs(got-30) > 1e-9 {
		t.Errorf("CPUPerTx = %v µs, want 30", got)
	}
	direct := steadyRun(c, targetDirect, 30000, 0.25, math.NaN(), 0)
	if !math.IsNaN(direct.CPUPerTx()) {
		t.Errorf("direct has a relay CPU time per transaction: %v", direct.CPUPerTx())
	}
	col := func(row []string, name string) string {
		for i, h := range csvHeader {
			if h == name {
				return row[i]
			}
		}
		t.Fatalf("no column %q", name)
		return ""
	}
	counted := relay
	counted.Counting, counted.SyscallsPerTx = true, 4.25
	for _, tc := range []struct {
		r                              runRecord
		cpu, perTx, cs, tps, sys, pass string
	}{
		{relay, "2.700", "30.000", "0.500", "30000.000", "", "measure"},
		{direct, "", "", "", "30000.000", "", "measure"},
		{counted, "2.700", "30.000", "0.500", "30000.000", "4.250", "count"},
	} {
		row := tc.r.csvRow()
		if len(row) != len(csvHeader) {
			t.Fatalf("%d fields, %d columns", len(row), len(csvHeader))
		}
		if got := col(row, "relay_cpu_s"); got != tc.cpu {
			t.Errorf("%s: relay_cpu_s = %q, want %q", tc.r.Target, got, tc.cpu)
		}
		if got := col(row, "relay_cpu_us_per_tx"); got != tc.perTx {
			t.Errorf("%s: relay_cpu_us_per_tx = %q, want %q", tc.r.Target, got, tc.perTx)
		}
		for _, c := range [][2]string{{"relay_cs_per_tx", tc.cs}, {"tps", tc.tps}, {"syscalls_per_tx", tc.sys}, {"pass", tc.pass}, {"window_s", "3.000"}} {
			if got := col(row, c[0]); got != c[1] {
				t.Errorf("%s: %s = %q, want %q", tc.r.Target, c[0], got, c[1])
			}
		}
	}
}
