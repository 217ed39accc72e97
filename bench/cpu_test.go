package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestParseProcStatTimes(t *testing.T) {
	// A name with spaces and parentheses: fields count from the last ')'.
	const stat = "4242 (pg (bouncer) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 125 0 0 20 0 1 0 99 12345 678 18446744073709551615\n"
	u, s, err := parseProcStatTimes(stat)
	if err != nil {
		t.Fatal(err)
	}
	if u != 250 || s != 125 {
		t.Errorf("utime, stime = %d, %d, want 250, 125", u, s)
	}
	for _, bad := range []string{"", "4242 pgbouncer S 1", "4242 (pgbouncer) S 1 2 3",
		"4242 (p) S 1 4242 4242 0 -1 4194560 1234 0 0 0 x 125", "4242 (p) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 y"} {
		if _, _, err := parseProcStatTimes(bad); err == nil {
			t.Errorf("no error for %q", bad)
		}
	}
}

// TestProcCPU reads this process's own CPU time, which grows while it
// works (in steps of a clock tick).
func TestProcCPU(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	if n := clockTicks(); n <= 0 {
		t.Fatalf("clockTicks() = %d", n)
	}
	before, err := procCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if before < 0 {
		t.Errorf("this process has used %v s of CPU", before)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		after, err := procCPU(os.Getpid())
		if err != nil {
			t.Fatal(err)
		}
		if after > before {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("CPU time stayed at %v s while the test spun for 30 s", before)
		}
		for i := 0; i < 1e6; i++ {
			spin++
		}
	}
}

var spin int

func TestCheckProcName(t *testing.T) {
	if _, err := os.Stat("/proc/self/comm"); err != nil {
		t.Skip("no /proc")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if err := checkProcName(os.Getpid(), filepath.Base(self)); err != nil {
		t.Error(err)
	}
	if err := checkProcName(os.Getpid(), "pgbouncer"); err == nil {
		t.Error("this test binary passed for pgbouncer")
	}
}

// TestWaitQuiet: an idle process is quiet at once; one that is gone is
// an error, not a wait.
func TestWaitQuiet(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	// This test process is idle while it sleeps: well under 10 cores.
	if err := waitQuiet(context.Background(), os.Getpid(), 10, 50*time.Millisecond, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := waitQuiet(context.Background(), 1<<30, 10, 50*time.Millisecond, time.Minute); err == nil {
		t.Error("no error for a process that does not exist")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := waitQuiet(ctx, os.Getpid(), 0, 50*time.Millisecond, time.Minute); err == nil {
		t.Error("no error when the context is done")
	}
}
