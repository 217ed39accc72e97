package main

import (
	"bytes"
	"context"
	"image/png"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// sampleReport is a run where pgmoat beats PgBouncer everywhere except
// TPC-B at 32 clients, and adds less latency than PgBouncer.
func sampleReport() *report {
	o := defaults(true)
	o.Scripts, o.Modes, o.Clients = []string{"select", "tpcb"}, []string{"prepared"}, []int{1, 8, 32, 64}
	r := &report{Opts: o, Targets: o.Targets, Cells: cells(o.Scripts, o.Modes, o.Clients),
		Stats: map[statKey]stat{}, Elapsed: time.Minute, Machine: machine{CPUs: 2, CPUModel: "Test CPU"}}
	cpu := map[string]float64{targetDirect: math.NaN(), targetPgBouncer: 20, targetPgmoat: 30, targetPgmoatB: 24}
	cs := map[string]float64{targetDirect: math.NaN(), targetPgBouncer: 0.5, targetPgmoat: 0.75, targetPgmoatB: 0.7}
	sys := map[string]float64{targetDirect: math.NaN(), targetPgBouncer: 4.25, targetPgmoat: 5.5, targetPgmoatB: 5}
	user := map[string]float64{targetDirect: math.NaN(), targetPgBouncer: 2.5, targetPgmoat: 6.25, targetPgmoatB: 5}
	set := func(c cell, t string, tps, lat float64) {
		r.Stats[statKey{c, t}] = stat{N: 1, TPS: tps, MinTPS: tps, MaxTPS: tps, LatencyMS: lat,
			CPUPerTx: cpu[t], UserPerTx: user[t], CSPerTx: cs[t], SyscallsPerTx: sys[t]}
	}
	for _, c := range r.Cells {
		base := 40000.0
		if c.Script == "tpcb" {
			base = 2000
		}
		set(c, targetDirect, base, 0.050)
		set(c, targetPgBouncer, base*0.6, 0.120)
		set(c, targetPgmoat, base*0.85, 0.080)
	}
	bad := cell{Script: "tpcb", Mode: "prepared", Clients: 32}
	set(bad, targetPgmoat, 1000, 30)
	r.Idle = &idleResult{Sessions: 1000, Upstream: 1000, BaseRSS: 10 << 20, OpenRSS: 60 << 20, ClosedRSS: 55 << 20}
	r.Streams = []streamPair{{
		Direct: streamResult{Kind: streamCopy, Bytes: 1 << 30, Seconds: 2},
		Pgmoat: streamResult{Kind: streamCopy, Bytes: 1 << 30, Seconds: 3, BaseRSS: 10 << 20, PeakRSS: 12 << 20},
	}}
	return r
}

func TestReportVerdicts(t *testing.T) {
	var b strings.Builder
	sampleReport().write(&b)
	md := b.String()
	for _, want := range []string{
		"pgmoat's relay CPU per transaction ≤ 1.00× PgBouncer's in every cell: **not met** (0 of 8 cells; highest 1.50× at -S -M prepared, 1 clients)",
		"pgmoat ≥ 1.00× PgBouncer's TPS in every cell at 8 clients or more: **not met** (5 of 6 cells; lowest 0.83× at TPC-B -M prepared, 32 clients)",
		"pgmoat ≥ 0.80× direct for `-S -M prepared` at 64 clients (on a machine with 16 cores; this one has 2, shared by pgbench, PostgreSQL and the relay, so this is what it shows rather than the target's verdict): met (0.85× at -S -M prepared, 64 clients)",
		"pgmoat's added latency ≤ PgBouncer's at 1 client, `-S -M prepared`: met (pgmoat +30.0 µs, PgBouncer +70.0 µs over direct)",
		"1,000 idle sessions add ≤ 100 MiB to pgmoat's RSS: met (50.0 MiB",
		"COPY TO STDOUT of 1.00 GiB streams with pgmoat's memory flat (peak rise under 32 MiB): met (+2.0 MiB)",
		"| -S | prepared | 8 | 40,000 | 24,000 | 34,000 | 1.42× | 0.85× |",
		"| prepared | 50.0 | 120.0 | 80.0 | +70.0 | +30.0 | 0.43 |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
}

// TestReportWithoutPgmoat is the direct + PgBouncer report (pgmoat left
// out with -targets): no ratio columns, no made-up verdicts.
func TestReportWithoutPgmoat(t *testing.T) {
	r := sampleReport()
	r.Targets = []string{targetDirect, targetPgBouncer}
	r.Idle, r.Streams = nil, nil
	var b strings.Builder
	r.write(&b)
	md := b.String()
	if strings.Contains(md, "pgmoat / PgBouncer") || strings.Contains(md, " met") {
		t.Errorf("report without pgmoat has pgmoat columns or verdicts:\n%s", md)
	}
	if !strings.Contains(md, "| -S | prepared | 8 | 40,000 | 24,000 | 0.050 / 0.120 |") {
		t.Errorf("report lacks the direct/PgBouncer row:\n%s", md)
	}
}

func TestChartData(t *testing.T) {
	r := sampleReport()
	delete(r.Stats, statKey{cell{"select", "prepared", 8}, targetPgBouncer})
	data, panels := chartData(r, tpsChart(r))
	if len(panels) != 2 {
		t.Fatalf("panels = %v", panels)
	}
	want := "# -S -M prepared\n1 40000.0 24000.0 34000.0\n8 40000.0 NaN 34000.0\n32 40000.0 24000.0 34000.0\n64 40000.0 24000.0 34000.0\n\n\n# TPC-B -M prepared\n"
	if !strings.HasPrefix(data, want) {
		t.Errorf("data:\n%s\nwant it to start with:\n%s", data, want)
	}
	// The CPU chart has the relays only.
	data, _ = chartData(r, cpuChart(r))
	want = "# -S -M prepared\n1 20.0 30.0\n8 NaN 30.0\n32 20.0 30.0\n64 20.0 30.0\n\n\n# TPC-B -M prepared\n"
	if !strings.HasPrefix(data, want) {
		t.Errorf("CPU data:\n%s\nwant it to start with:\n%s", data, want)
	}
}

// TestDrawChart draws the chart with the real gnuplot when there is one.
func TestDrawChart(t *testing.T) {
	if _, err := exec.LookPath("gnuplot"); err != nil {
		t.Skip("no gnuplot (bench/run.sh installs it)")
	}
	dir := t.TempDir()
	r := sampleReport()
	for _, spec := range []chartSpec{tpsChart(r), cpuChart(r)} {
		if err := drawChart(context.Background(), r, spec, dir); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(dir, spec.File))
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%s: not a PNG: %v", spec.File, err)
		}
		if w := img.Bounds().Dx(); w < 400 {
			t.Errorf("%s is %d px wide", spec.File, w)
		}
	}
}

func TestFmtThousands(t *testing.T) {
	for in, want := range map[float64]string{0: "0", 999.6: "1,000", 48212.3: "48,212", 1234567: "1,234,567", -4321: "-4,321"} {
		if got := fmtThousands(in); got != want {
			t.Errorf("fmtThousands(%v) = %q, want %q", in, got, want)
		}
	}
}

// TestReportFailedCell: a cell where pgmoat has no median (every run
// failed) fails the target and is named as the worst.
func TestReportFailedCell(t *testing.T) {
	r := sampleReport()
	c := cell{Script: "select", Mode: "prepared", Clients: 8}
	r.Stats[statKey{c, targetPgmoat}] = stat{Failed: 1, Err: "pgbench: ERROR: blocked by pgmoat"}
	var b strings.Builder
	r.write(&b)
	md := b.String()
	for _, want := range []string{
		"PgBouncer's TPS in every cell at 8 clients or more: **not met** (4 of 6 cells; lowest none at -S -M prepared, 8 clients, which has no median)",
		"| -S | prepared | 8 | 40,000 | 24,000 | failed | – | – | – |",
		"-S -M prepared, 8 clients on pgmoat: 1 run(s) failed: pgbench: ERROR: blocked by pgmoat",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
}

// TestReportCPU: the relay CPU section has each relay's µs per
// transaction and pgmoat's ratio to PgBouncer, and says why it matters.
func TestReportCPU(t *testing.T) {
	var b strings.Builder
	sampleReport().write(&b)
	md := b.String()
	for _, want := range []string{
		"## Relay CPU per transaction",
		"**This is the number to compare first**",
		"| script | -M | clients | PgBouncer µs/tx | pgmoat µs/tx | pgmoat / PgBouncer | PgBouncer user µs/tx | pgmoat user µs/tx | PgBouncer cs/tx | pgmoat cs/tx | PgBouncer syscalls/tx | pgmoat syscalls/tx |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
		"| -S | prepared | 8 | 20.0 | 30.0 | 1.50× | 2.50 | 6.25 | 0.50 | 0.75 | 4.25 | 5.50 |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	if strings.Contains(md, "pgmoat-b") {
		t.Errorf("a report without -pgmoat-b mentions pgmoat-b:\n%s", md)
	}
}

// TestReportAB is a run with -pgmoat-b: both pgmoats' columns, their
// ratio, and the targets checked for each.
func TestReportAB(t *testing.T) {
	r := sampleReport()
	r.Targets = append(r.Targets, targetPgmoatB)
	r.Machine.Pgmoat, r.Machine.PgmoatB = "pgmoat v1 (/a/pgmoat)", "pgmoat v2 (/b/pgmoat) with GOMAXPROCS=1"
	for _, c := range r.Cells {
		s := r.stat(c, targetPgmoat)
		s.TPS *= 1.1
		s.MinTPS, s.MaxTPS = s.TPS, s.TPS
		s.CPUPerTx = 24
		r.Stats[statKey{c, targetPgmoatB}] = s
	}
	var b strings.Builder
	r.write(&b)
	md := b.String()
	for _, want := range []string{
		"| pgmoat-b | pgmoat v2 (/b/pgmoat) with GOMAXPROCS=1 (the same policy; a second pgmoat in the same rotation) |",
		"| script | -M | clients | direct TPS | PgBouncer TPS | pgmoat TPS | pgmoat-b TPS | pgmoat / PgBouncer | pgmoat / direct | pgmoat-b / pgmoat | pgmoat spread |",
		"| -S | prepared | 8 | 40,000 | 24,000 | 34,000 | 37,400 | 1.42× | 0.85× | 1.10× | 34,000–34,000 |",
		"| PgBouncer µs/tx | pgmoat µs/tx | pgmoat-b µs/tx | pgmoat / PgBouncer | pgmoat-b / pgmoat |",
		"| -S | prepared | 8 | 20.0 | 30.0 | 24.0 | 1.50× | 0.80× |",
		"- pgmoat-b ≥ 1.00× PgBouncer's TPS in every cell at 8 clients or more: **not met** (5 of 6 cells; lowest 0.92× at TPC-B -M prepared, 32 clients)",
		"- pgmoat-b's added latency ≤ PgBouncer's at 1 client, `-S -M prepared`: met (pgmoat-b +30.0 µs",
		"| prepared | 50.0 | 120.0 | 80.0 | 80.0 | +70.0 | +30.0 | +30.0 | 0.43 |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	// Every table row has as many cells as its header.
	var header int
	for _, line := range strings.Split(md, "\n") {
		if !strings.HasPrefix(line, "|") {
			header = 0
			continue
		}
		n := strings.Count(line, "|") - strings.Count(line, `\|`)
		if header == 0 {
			header = n
		} else if n != header {
			t.Errorf("row with %d cells under a header of %d: %s", n-1, header-1, line)
		}
	}
}

// TestReportHolds: the pending-holds step's verdict and section.
func TestReportHolds(t *testing.T) {
	r := sampleReport()
	c := cell{Script: "select", Mode: "prepared", Clients: 8}
	run := func(target string, tps, lat float64) runRecord { return steadyRun(c, target, tps, lat, 25, 0.5) }
	r.Holds = &holdsResult{Holds: 1000, BaseRSS: 20 << 20, HeldRSS: 80 << 20, OpenSeconds: 3.2, Notices: 1000, HistoryRows: 1,
		Runs: []runRecord{run(holdsNone, 30000, 0.250), run(holdsPending, 29000, 0.260)}}
	var b strings.Builder
	r.write(&b)
	md := b.String()
	for _, want := range []string{
		"- 1,000 pending holds leave other sessions' latency within 10% of none pending: met (`-S -M prepared`, 8 clients: 0.260 ms with them, 0.250 ms without, 1.04×; TPS 0.97×).",
		"## Pending holds",
		"| no hold pending | 30,000 | 30,000–30,000 | 0.250 | 25.0 |",
		"| 1,000 holds pending | 29,000 | 29,000–29,000 | 0.260 | 25.0 |",
		"| pending / none | 0.97× | | 1.04× | 1.00× |",
		"(+61.4 KiB per held session",
		"- Not measured here: the analysis micro-benchmarks",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}

	r.Holds.Holds = 200
	r.Holds.Runs[1].Result.LatencyMS = 0.300
	b.Reset()
	r.write(&b)
	if want := "- 200 pending holds leave other sessions' latency within 10% of none pending: **not met** (`-S -M prepared`, 8 clients: 0.300 ms with them, 0.250 ms without, 1.20×; TPS 0.97×; the target is for 1,000)."; !strings.Contains(b.String(), want) {
		t.Errorf("report lacks %q:\n%s", want, b.String())
	}
}

// TestReportConnections: the connections step's section, per relay.
func TestReportConnections(t *testing.T) {
	r := sampleReport()
	r.Conns = &connResult{Sessions: 200, Runs: []connRun{
		{Target: targetPgBouncer, Sessions: 200, CPU: 0.05, Elapsed: time.Second},
		{Target: targetPgmoat, Sessions: 200, CPU: 0.5, Elapsed: 2 * time.Second},
		{Target: targetPgmoat, Sessions: 200, CPU: 0.6, Elapsed: 3 * time.Second},
		{Target: targetPgBouncer, Sessions: 200, CPU: 0.07, Elapsed: time.Second},
	}}
	r.Machine.Busy = []float64{0.1, 0.5, 0.2}
	var b strings.Builder
	r.write(&b)
	md := b.String()
	for _, want := range []string{
		"## Relay CPU per connection",
		"After the matrix, 2 round(s) of 200 sessions through each relay",
		"| PgBouncer | 300 | 250–350 | 1.00 |",
		"| pgmoat | 2,750 | 2,500–3,000 | 2.50 |",
		"| other processes | 0.20 of 2 cores busy with the bench's own stack idle (median of 3 one-second samples, one before each round; lowest 0.10, highest 0.50) |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	if got := r.Conns.median(targetPgmoat); got != 2750 {
		t.Errorf("median = %v µs, want 2750", got)
	}
}

// TestReportUnmeasured: runs without a steady state are counted in a note.
func TestReportUnmeasured(t *testing.T) {
	r := sampleReport()
	c := cell{Script: "select", Mode: "prepared", Clients: 64}
	s := r.stat(c, targetPgmoat)
	s.Unmeasured = 2
	r.Stats[statKey{c, targetPgmoat}] = s
	var b strings.Builder
	r.write(&b)
	if want := "2 run(s) passed without a steady state of at least 1s to measure"; !strings.Contains(b.String(), want) {
		t.Errorf("report lacks %q", want)
	}
}
