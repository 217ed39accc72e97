package main

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// pgbench 15's report, as it printed it on this machine.
const pgbench15 = `pgbench (15.18 (Debian 15.18-0+deb12u1))
transaction type: <builtin: select only>
scaling factor: 10
query mode: prepared
number of clients: 8
number of threads: 2
maximum number of tries: 1
duration: 3 s
number of transactions actually processed: 147373
number of failed transactions: 0 (0.000%)
latency average = 0.163 ms
initial connection time = 13.793 ms
tps = 49034.844742 (without initial connection time)
`

// pgbench 13's report prints two tps lines.
const pgbench13 = `transaction type: <builtin: TPC-B (sort of)>
scaling factor: 10
query mode: simple
number of clients: 8
number of threads: 2
duration: 10 s
number of transactions actually processed: 24000
latency average = 3.333 ms
tps = 2390.000000 (including connections establishing)
tps = 2400.500000 (excluding connections establishing)
`

func TestParsePgbench(t *testing.T) {
	for _, tc := range []struct {
		name string
		out  string
		want pgbenchResult
	}{
		{"15", pgbench15, pgbenchResult{TPS: 49034.844742, LatencyMS: 0.163, Transactions: 147373, ConnectMS: 13.793}},
		{"13", pgbench13, pgbenchResult{TPS: 2400.5, LatencyMS: 3.333, Transactions: 24000}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parsePgbench(tc.out)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestParsePgbenchFailures(t *testing.T) {
	for _, tc := range []struct {
		name, out, wantErr string
	}{
		{"no summary", "pgbench: error: connection to server failed\n", "no tps"},
		{"failed transactions", strings.Replace(pgbench15, "failed transactions: 0 (0.000%)", "failed transactions: 12 (0.010%)", 1), "12 failed"},
		{"bad number", strings.Replace(pgbench15, "tps = 49034.844742", "tps = many", 1), "bad tps"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parsePgbench(tc.out)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("err = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestPgbenchArgs(t *testing.T) {
	r := pgbenchRun{Host: "127.0.0.1", Port: 5432, User: "postgres", DB: "bench",
		Script: "select", Mode: "prepared", Clients: 8, Jobs: 2, Duration: 3 * time.Second}
	want := []string{"-n", "-h", "127.0.0.1", "-p", "5432", "-U", "postgres", "-c", "8", "-j", "2", "-T", "4",
		"-M", "prepared", "-S", "bench"}
	if got := r.args(); !slices.Equal(got, want) {
		t.Errorf("args = %q, want %q", got, want)
	}
	r.Script = "tpcb"
	if got := r.args(); slices.Contains(got, "-S") {
		t.Errorf("TPC-B args contain -S: %q", got)
	}
	r.LogPrefix = "/tmp/x/run7"
	if got := r.args(); !slices.Contains(got, "-l") || !slices.Contains(got, "--log-prefix=/tmp/x/run7") {
		t.Errorf("args with a log prefix = %q", got)
	}
}

// TestPgbenchSeconds: -T leaves the clients time to connect on top of the
// duration they run for, more with more clients per job.
func TestPgbenchSeconds(t *testing.T) {
	for _, tc := range []struct {
		clients, jobs, want int
	}{
		{1, 1, 4}, {8, 2, 4}, {32, 2, 4}, {64, 2, 4}, {256, 2, 5},
	} {
		r := pgbenchRun{Clients: tc.clients, Jobs: tc.jobs, Duration: 3 * time.Second}
		if got := r.seconds(); got != tc.want {
			t.Errorf("%d clients, %d jobs: -T %d, want %d", tc.clients, tc.jobs, got, tc.want)
		}
	}
}
