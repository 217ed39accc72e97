package main

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestParseProcStatus(t *testing.T) {
	const status = "Name:\tpgmoat\nVmPeak:\t 1300000 kB\nVmHWM:\t   30000 kB\nVmRSS:\t   20480 kB\nThreads:\t8\n"
	m, err := parseProcStatus(strings.NewReader(status))
	if err != nil {
		t.Fatal(err)
	}
	if m.RSS != 20480<<10 || m.Peak != 30000<<10 {
		t.Errorf("got %+v", m)
	}
	if _, err := parseProcStatus(strings.NewReader("Name:\tkthreadd\n")); err == nil {
		t.Error("no error for a status without VmRSS (a kernel thread)")
	}
}

// TestReadProcMem reads this process's own RSS, which cannot be zero.
func TestReadProcMem(t *testing.T) {
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("no /proc")
	}
	m, err := readProcMem(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if m.RSS <= 0 || m.Peak < m.RSS {
		t.Errorf("got %+v", m)
	}
}

func TestStreamSQL(t *testing.T) {
	if got, want := streamSQL(streamCopy, 1e9), "COPY (SELECT g, repeat('x', 1000) FROM generate_series(1, 1000000) g) TO STDOUT"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := streamSQL(streamSelect, 1e6); strings.HasPrefix(got, "COPY") || !strings.Contains(got, "generate_series(1, 1000)") {
		t.Errorf("got %q", got)
	}
}

func TestParallelDo(t *testing.T) {
	var running, peak, ran atomic.Int64
	err := parallelDo(context.Background(), 50, 4, func(ctx context.Context, i int) error {
		n := running.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(time.Millisecond)
		running.Add(-1)
		ran.Add(1)
		return nil
	})
	if err != nil || ran.Load() != 50 || peak.Load() > 4 {
		t.Fatalf("err %v, ran %d, peak concurrency %d; want nil, 50, at most 4", err, ran.Load(), peak.Load())
	}

	boom := errors.New("boom")
	ran.Store(0)
	err = parallelDo(context.Background(), 1000, 2, func(ctx context.Context, i int) error {
		ran.Add(1)
		if i == 1 {
			return boom
		}
		<-ctx.Done() // the others wait until the failure cancels them
		return nil
	})
	if !errors.Is(err, boom) || ran.Load() >= 1000 {
		t.Fatalf("err %v after %d calls; want boom, and no new calls after it", err, ran.Load())
	}
}
