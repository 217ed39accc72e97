package main

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// steadyRun is a measured run of c on target with a 3-second steady state
// of tps transactions per second; relays (cpuPerTx not NaN) used cpuPerTx
// µs and csPerTx context switches per transaction in it.
func steadyRun(c cell, target string, tps, latMS, cpuPerTx, csPerTx float64) runRecord {
	start := time.Unix(1_800_000_000, 0)
	tx := int64(tps * 3)
	w := window{Start: start, End: start.Add(3 * time.Second), Tx: tx}
	if !math.IsNaN(cpuPerTx) {
		w.Relay, w.CPU, w.CS = true, cpuPerTx*float64(tx)/1e6, int64(csPerTx*float64(tx))
	}
	return runRecord{Cell: c, Target: target, Result: pgbenchResult{TPS: tps, LatencyMS: latMS, Transactions: tx},
		Window: w, SyscallsPerTx: math.NaN()}
}

func TestParseSwitches(t *testing.T) {
	status := "Name:\tpgmoat\nvoluntary_ctxt_switches:\t120\nnonvoluntary_ctxt_switches:\t7\n"
	if n, err := parseSwitches(status); err != nil || n != 127 {
		t.Errorf("parseSwitches = %d, %v; want 127", n, err)
	}
	if _, err := parseSwitches("Name:\tx\n"); err == nil {
		t.Error("no error without the counts")
	}
}

func TestProcSwitches(t *testing.T) {
	a, err := procSwitches(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		time.Sleep(time.Millisecond) // each sleep is a voluntary switch
	}
	b, err := procSwitches(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if b-a < 10 {
		t.Errorf("%d context switches over 10 sleeps", b-a)
	}
}

// txLines writes a pgbench -l log: client, transaction number, latency,
// script, completion second and µs.
func writeTxLog(t *testing.T, path string, lines ...string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestReadTxLogs: every thread's file is read (and removed); the steady
// state starts when the last client completes its first transaction and
// ends when the first client completes its last.
func TestReadTxLogs(t *testing.T) {
	dir := t.TempDir()
	prefix := filepath.Join(dir, "tx-3")
	writeTxLog(t, prefix+".100",
		"0 1 500 0 1800000000 100000",
		"0 2 400 0 1800000000 900000",
		"0 3 400 0 1800000002 0")
	writeTxLog(t, prefix+".100.1",
		"1 1 500 0 1800000000 600000",
		"1 2 500 0 1800000001 500000 0")
	l, err := readTxLogs(prefix)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Done) != 5 {
		t.Fatalf("%d completions, want 5", len(l.Done))
	}
	if want := time.Unix(1_800_000_000, 600_000_000); !l.Ready.Equal(want) {
		t.Errorf("ready at %v, want %v (client 1's first)", l.Ready, want)
	}
	if want := time.Unix(1_800_000_001, 500_000_000); !l.Leaving.Equal(want) {
		t.Errorf("leaving at %v, want %v (client 1's last; client 0 ran on)", l.Leaving, want)
	}
	if left, _ := filepath.Glob(prefix + ".*"); len(left) > 0 {
		t.Errorf("logs left behind: %v", left)
	}
	if _, err := readTxLogs(prefix); err == nil {
		t.Error("no error without logs")
	}
	writeTxLog(t, prefix+".1", "0 1 500")
	if _, err := readTxLogs(prefix); err == nil {
		t.Error("no error for a short line")
	}
}

func TestSteadyWindow(t *testing.T) {
	at := func(ms int) time.Time { return time.Unix(1_800_000_000, int64(ms)*int64(time.Millisecond)) }
	var l txLog
	for ms := 100; ms <= 3000; ms += 10 { // 100 transactions a second
		l.Done = append(l.Done, at(ms))
	}
	l.Ready, l.Leaving = at(500), at(3000)

	// Direct: the window is the transactions'.
	w, err := steadyWindow(l, nil)
	if err != nil {
		t.Fatal(err)
	}
	if w.Relay || w.Tx != 250 || w.Seconds() != 2.5 {
		t.Errorf("direct window %+v, want 250 transactions over 2.5 s", w)
	}

	// A relay: from the first sample at or after Ready to the last at or
	// before Leaving; its counters are the differences.
	var samples []relaySample
	for ms := 0; ms <= 3100; ms += 20 {
		samples = append(samples, relaySample{At: at(ms + 5), CPU: float64(ms) / 1000 * 0.25, CS: int64(ms)})
	}
	w, err = steadyWindow(l, samples)
	if err != nil {
		t.Fatal(err)
	}
	if !w.Start.Equal(at(505)) || !w.End.Equal(at(2985)) {
		t.Errorf("window %v – %v, want 0.505 – 2.985 s", w.Start, w.End)
	}
	if !w.Relay || w.Tx != 248 || w.CS != 2480 || math.Abs(w.CPU-0.62) > 1e-9 {
		t.Errorf("relay window %+v, want 248 transactions, 2480 switches, 0.62 s CPU", w)
	}
	rec := runRecord{Window: w}
	if got := rec.CPUPerTx(); math.Abs(got-2500) > 1e-6 {
		t.Errorf("CPUPerTx = %v µs, want 2500", got)
	}
	if got := rec.CSPerTx(); got != 10 {
		t.Errorf("CSPerTx = %v, want 10", got)
	}
	if got := rec.TPS(); math.Abs(got-100) > 1e-9 {
		t.Errorf("TPS = %v, want 100", got)
	}

	// Clients leaving: what completes after the first client's last
	// transaction is not counted.
	leaving := l
	leaving.Leaving = at(2000)
	if w, err := steadyWindow(leaving, nil); err != nil || w.Tx != 150 || w.Seconds() != 1.5 {
		t.Errorf("window with clients leaving at 2 s: %+v, %v; want 150 transactions over 1.5 s", w, err)
	}

	if _, err := steadyWindow(l, []relaySample{}); err == nil {
		t.Error("a relay window without samples")
	}
	short := l
	short.Ready = at(2500)
	if _, err := steadyWindow(short, nil); err == nil || !strings.Contains(err.Error(), "raise -duration") {
		t.Errorf("a 0.5 s steady state: err = %v", err)
	}
	if _, err := steadyWindow(txLog{}, nil); err == nil {
		t.Error("a window without transactions")
	}
}

func TestParsePerfIntervals(t *testing.T) {
	start := time.Unix(1_800_000_000, 0)
	out := `# started on Sat Dec  5 06:07:00 2026

     0.020208130,<not counted>,,raw_syscalls:sys_enter,0,100.00,,
     0.040166312,1200,,raw_syscalls:sys_enter,20017963,100.00,,
     0.060417674,1300,,raw_syscalls:sys_enter,20017963,100.00,,
`
	cs, err := parsePerfIntervals(strings.NewReader(out), start)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 3 || cs[0].Count != 0 || cs[2].Count != 1300 || !cs[1].End.Equal(start.Add(40166312)) {
		t.Errorf("intervals %+v", cs)
	}
	if _, err := parsePerfIntervals(strings.NewReader("garbage\n"), start); err == nil {
		t.Error("no error for output without counts")
	}
}

// TestSyscallWindow: the counted intervals inside the steady state, over
// the transactions that completed in the same span.
func TestSyscallWindow(t *testing.T) {
	at := func(ms int) time.Time { return time.Unix(1_800_000_000, int64(ms)*int64(time.Millisecond)) }
	var cs []syscallCount
	for ms := 20; ms <= 3000; ms += 20 {
		n := int64(100)
		if ms <= 500 {
			n = 5000 // connecting: many more calls
		}
		cs = append(cs, syscallCount{End: at(ms), Count: n})
	}
	var l txLog
	for ms := 505; ms <= 2995; ms += 10 {
		l.Done = append(l.Done, at(ms))
	}
	l.Ready, l.Leaving = at(505), at(2995)
	perTx, err := syscallWindow(l, cs)
	if err != nil {
		t.Fatal(err)
	}
	// Intervals (520, 540] … (2960, 2980]: 123 intervals of 100 calls,
	// 246 transactions.
	if math.Abs(perTx-50) > 1e-9 {
		t.Errorf("%v syscalls/tx, want 50", perTx)
	}
	l.Ready = at(2500)
	if _, err := syscallWindow(l, cs); err == nil {
		t.Error("a steady state under a second was counted")
	}
}

func TestParseCPUTimes(t *testing.T) {
	ct, err := parseCPUTimes("cpu  100 5 50 800 20 0 10 7 3 0\ncpu0 1 2 3 4\n")
	if err != nil {
		t.Fatal(err)
	}
	// user nice system idle iowait irq softirq steal (guest is in user)
	if ct.total != 992 || ct.idle != 820 {
		t.Errorf("%+v, want total 992, idle 820", ct)
	}
	if _, err := parseCPUTimes("intr 1 2 3\n"); err == nil {
		t.Error("no error for a line that is not cpu")
	}
}

func TestSummarizeCounting(t *testing.T) {
	c := cell{Script: "select", Mode: "prepared", Clients: 8}
	measured := steadyRun(c, targetPgmoat, 10000, 1, 30, 1)
	counted := steadyRun(c, targetPgmoat, 5000, 2, 90, 3) // slowed by perf: must not count
	counted.Counting, counted.SyscallsPerTx = true, 5.5
	noWindow := steadyRun(c, targetPgmoat, 20000, 1, 10, 1)
	noWindow.WindowErr = "no steady state"
	st := summarize([]runRecord{measured, counted, noWindow})[statKey{c, targetPgmoat}]
	if st.N != 1 || st.TPS != 10000 || st.CPUPerTx != 30 || st.CSPerTx != 1 || st.SyscallsPerTx != 5.5 || st.Unmeasured != 1 {
		t.Errorf("%+v: want the measured run's TPS and CPU, the counted run's system calls, one unmeasured", st)
	}
}
