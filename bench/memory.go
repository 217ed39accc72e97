package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// procMem is a process's resident memory, from /proc/PID/status.
type procMem struct {
	RSS  int64 // VmRSS, bytes
	Peak int64 // VmHWM (peak RSS since the process started), bytes
}

// readProcMem reads VmRSS and VmHWM of pid.
func readProcMem(pid int) (procMem, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return procMem{}, err
	}
	defer f.Close()
	return parseProcStatus(f)
}

func parseProcStatus(r io.Reader) (procMem, error) {
	var m procMem
	var haveRSS bool
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		fields := strings.Fields(v) // "12345 kB"
		if len(fields) != 2 || fields[1] != "kB" {
			return m, fmt.Errorf("unexpected %s line %q", k, sc.Text())
		}
		kb, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return m, fmt.Errorf("unexpected %s line %q", k, sc.Text())
		}
		if k == "VmRSS" {
			m.RSS, haveRSS = kb<<10, true
		} else {
			m.Peak = kb << 10
		}
	}
	if err := sc.Err(); err != nil {
		return m, err
	}
	if !haveRSS {
		return m, fmt.Errorf("no VmRSS in /proc status")
	}
	return m, nil
}

// rssSampler polls a process's RSS in the background and keeps the peak;
// VmHWM alone would also count any peak before the measured window.
type rssSampler struct {
	pid  int
	peak atomic.Int64
	stop chan struct{}
	done chan struct{}
}

func sampleRSS(pid int, every time.Duration) *rssSampler {
	s := &rssSampler{pid: pid, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			if m, err := readProcMem(pid); err == nil && m.RSS > s.peak.Load() {
				s.peak.Store(m.RSS)
			}
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// finish stops sampling and returns the peak RSS seen.
func (s *rssSampler) finish() int64 {
	close(s.stop)
	<-s.done
	if m, err := readProcMem(s.pid); err == nil && m.RSS > s.peak.Load() {
		s.peak.Store(m.RSS)
	}
	return s.peak.Load()
}

// idleResult is the idle-sessions step's outcome.
type idleResult struct {
	Sessions    int
	Upstream    int   // backends the server had for them (each session has its own)
	BaseRSS     int64 // pgmoat before the sessions opened
	OpenRSS     int64 // with every session open and idle
	ClosedRSS   int64 // after they all closed again
	OpenSeconds float64
}

// Delta is the memory the idle sessions cost.
func (r idleResult) Delta() int64 { return r.OpenRSS - r.BaseRSS }

// measureIdle opens n sessions through pgmoat, each runs one query (so
// its statement path is set up) and then stays idle, and reads pgmoat's
// RSS before, during and after. countBackends asks the server directly how
// many backends carry the sessions' application_name.
func measureIdle(ctx context.Context, n int, connStr string, pid int, countBackends func(context.Context) (int, error)) (idleResult, error) {
	res := idleResult{Sessions: n}
	// Warm up the query path (parser, caches), then let it settle.
	if err := oneQuery(ctx, connStr); err != nil {
		return res, err
	}
	time.Sleep(time.Second)
	m, err := readProcMem(pid)
	if err != nil {
		return res, err
	}
	res.BaseRSS = m.RSS

	conns := make([]*pgconn.PgConn, n)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close(context.Background())
			}
		}
	}()
	start := time.Now()
	if err := openAll(ctx, conns, connStr, 16); err != nil {
		return res, fmt.Errorf("opening %d idle sessions through pgmoat: %w", n, err)
	}
	res.OpenSeconds = time.Since(start).Seconds()
	if res.Upstream, err = countBackends(ctx); err != nil {
		return res, err
	}
	// Let the runtime settle (GC of start-up garbage), then take the
	// highest of a few readings.
	time.Sleep(2 * time.Second)
	for i := 0; i < 5; i++ {
		m, err := readProcMem(pid)
		if err != nil {
			return res, err
		}
		res.OpenRSS = max(res.OpenRSS, m.RSS)
		time.Sleep(200 * time.Millisecond)
	}
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.Close(ctx)
		}()
		conns[i] = nil
	}
	wg.Wait()
	time.Sleep(2 * time.Second)
	if m, err = readProcMem(pid); err != nil {
		return res, err
	}
	res.ClosedRSS = m.RSS
	return res, nil
}

// openAll fills conns with sessions that each ran one query, opening at
// most parallel at a time; it stops at the first failure.
func openAll(ctx context.Context, conns []*pgconn.PgConn, connStr string, parallel int) error {
	return parallelDo(ctx, len(conns), parallel, func(ctx context.Context, i int) error {
		c, err := pgconn.Connect(ctx, connStr)
		if err != nil {
			return fmt.Errorf("session %d: %w", i+1, err)
		}
		conns[i] = c
		if _, err := c.Exec(ctx, "SELECT abalance FROM pgbench_accounts WHERE aid = 1").ReadAll(); err != nil {
			return fmt.Errorf("session %d: %w", i+1, err)
		}
		return nil
	})
}

// parallelDo runs f(ctx, i) for i in [0, n), at most parallel at a time.
// The first error cancels the ctx the others run with, stops starting new
// ones and is returned once every started call has returned; so is ctx's
// own error.
func parallelDo(ctx context.Context, n, parallel int, f func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		once     sync.Once
		firstErr error
	)
	sem := make(chan struct{}, parallel)
	for i := 0; i < n; i++ {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := f(ctx, i); err != nil {
				once.Do(func() { firstErr = err; cancel() })
			}
		}()
	}
	wg.Wait()
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	return firstErr
}

// oneQuery opens a session, runs a query and closes it.
func oneQuery(ctx context.Context, connStr string) error {
	c, err := pgconn.Connect(ctx, connStr)
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	_, err = c.Exec(ctx, "SELECT abalance FROM pgbench_accounts WHERE aid = 1").ReadAll()
	return err
}

// streamKind is what the streaming step pulls through pgmoat.
type streamKind string

const (
	streamCopy   streamKind = "COPY TO STDOUT"
	streamSelect streamKind = "result set (extended protocol)"
)

// rowBytes is the width of a streamed row's payload.
const rowBytes = 1000

// streamSQL selects rows of rowBytes bytes totalling about size bytes.
// The rows are computed, not stored, so the server streams them too.
func streamSQL(kind streamKind, size int64) string {
	rows := size / rowBytes
	sel := fmt.Sprintf("SELECT g, repeat('x', %d) FROM generate_series(1, %d) g", rowBytes, rows)
	if kind == streamCopy {
		return "COPY (" + sel + ") TO STDOUT"
	}
	return sel
}

// streamResult is one transfer's outcome.
type streamResult struct {
	Kind    streamKind
	Bytes   int64   // payload the client received
	Seconds float64 // wall time of the transfer
	BaseRSS int64   // pgmoat before the transfer (0 for direct)
	PeakRSS int64   // highest RSS seen during it
}

// PeakDelta is how far pgmoat's memory rose during the transfer.
func (r streamResult) PeakDelta() int64 { return r.PeakRSS - r.BaseRSS }

// MBps is the client-side throughput in MB/s (10^6 bytes).
func (r streamResult) MBps() float64 { return float64(r.Bytes) / 1e6 / r.Seconds }

// measureStream pulls about size bytes through connStr; pid > 0 samples
// that process's RSS meanwhile.
func measureStream(ctx context.Context, kind streamKind, size int64, connStr string, pid int) (streamResult, error) {
	res := streamResult{Kind: kind}
	c, err := pgconn.Connect(ctx, connStr)
	if err != nil {
		return res, err
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "SELECT 1").ReadAll(); err != nil {
		return res, err
	}
	var sampler *rssSampler
	if pid > 0 {
		time.Sleep(500 * time.Millisecond)
		m, err := readProcMem(pid)
		if err != nil {
			return res, err
		}
		res.BaseRSS = m.RSS
		sampler = sampleRSS(pid, 10*time.Millisecond)
	}
	start := time.Now()
	switch kind {
	case streamCopy:
		var n countingWriter
		if _, err := c.CopyTo(ctx, &n, streamSQL(kind, size)); err != nil {
			if sampler != nil {
				sampler.finish()
			}
			return res, fmt.Errorf("%s: %w", kind, err)
		}
		res.Bytes = int64(n)
	case streamSelect:
		rr := c.ExecParams(ctx, streamSQL(kind, size), nil, nil, nil, nil)
		for rr.NextRow() {
			for _, v := range rr.Values() {
				res.Bytes += int64(len(v))
			}
		}
		if _, err := rr.Close(); err != nil {
			if sampler != nil {
				sampler.finish()
			}
			return res, fmt.Errorf("%s: %w", kind, err)
		}
	}
	res.Seconds = time.Since(start).Seconds()
	if sampler != nil {
		res.PeakRSS = sampler.finish()
	}
	if res.Bytes < size*9/10 {
		return res, fmt.Errorf("%s: received %d bytes, want about %d", kind, res.Bytes, size)
	}
	return res, nil
}

// countingWriter counts and discards what is written to it.
type countingWriter int64

func (w *countingWriter) Write(p []byte) (int, error) {
	*w += countingWriter(len(p))
	return len(p), nil
}

// idleStep measures idle sessions on a fresh pgmoat.
func (s *stack) idleStep(ctx context.Context, n int) (idleResult, error) {
	if err := s.restartPgmoat(s.pgmoat); err != nil {
		return idleResult{}, err
	}
	const app = "pgmoat-bench-idle"
	count := func(ctx context.Context) (int, error) {
		conn, err := s.superConn(ctx)
		if err != nil {
			return 0, err
		}
		defer conn.Close(ctx)
		rs, err := conn.Exec(ctx, "SELECT count(*) FROM pg_stat_activity WHERE application_name = '"+app+"'").ReadAll()
		if err != nil {
			return 0, err
		}
		return strconv.Atoi(string(rs[0].Rows[0][0]))
	}
	res, err := measureIdle(ctx, n, s.connString(s.pgmoat.port, app), s.pgmoat.pid(), count)
	if err == nil && res.Upstream < n {
		err = fmt.Errorf("the server had %d backends for %d sessions through pgmoat", res.Upstream, n)
	}
	return res, err
}

// streamStep pulls one transfer directly (for the throughput reference)
// and then through a fresh pgmoat, sampling its RSS.
func (s *stack) streamStep(ctx context.Context, kind streamKind, size int64) (streamPair, error) {
	var pair streamPair
	var err error
	if pair.Direct, err = measureStream(ctx, kind, size, s.connString(s.cluster.Port, "pgmoat-bench-stream"), 0); err != nil {
		return pair, fmt.Errorf("direct: %w", err)
	}
	if err := s.restartPgmoat(s.pgmoat); err != nil {
		return pair, err
	}
	if pair.Pgmoat, err = measureStream(ctx, kind, size, s.connString(s.pgmoat.port, "pgmoat-bench-stream"), s.pgmoat.pid()); err != nil {
		return pair, fmt.Errorf("through pgmoat: %w", err)
	}
	return pair, nil
}
