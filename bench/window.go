package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// A run's numbers are taken over its steady state: from the moment every
// client has finished a transaction (all of them are connected and past
// their first round trip) to the moment the first client completed its
// last one (all of them were still running). pgbench counts its -T from
// before it connects, and a relay's work to set up sessions is no part of
// what it costs per transaction: through pgmoat a session costs
// milliseconds of CPU to set up (its own upstream connection,
// authentication, the session's catalog), through PgBouncer in session
// mode much less (its server connections are pooled). Counted over the
// whole run, that set-up would swamp the cost per transaction at 64 and
// 256 clients; the connections step measures it on its own. So with
// tearing sessions down: once -T is over, each client disconnects when its
// transaction in flight completes, and the relay ends its session while
// the others finish theirs (at 256 clients, pgmoat's last clients took
// 350 ms to finish, at twice the CPU per transaction or more:
// bench/README.md, "Where a run ends").
//
// pgbench writes every transaction's completion time (-l), the bench
// samples the relay's CPU time and context switches every sampleEvery,
// and the window runs from the first sample after the last client's first
// transaction to the last sample before the first client's last one.

// sampleEvery is how often a relay's counters are read during a run.
const sampleEvery = 20 * time.Millisecond

// relaySample is a relay's counters at one moment.
type relaySample struct {
	At   time.Time
	CPU  float64 // seconds of CPU (procCPU)
	User float64 // of which in user space (procTimes)
	CS   int64   // context switches of all its threads (procSwitches)
}

// sampler reads a relay's counters every sampleEvery until stopped.
type sampler struct {
	pid     int
	mu      sync.Mutex
	samples []relaySample
	err     error
	stop    chan struct{}
	done    chan struct{}
}

func startSampler(pid int) *sampler {
	s := &sampler{pid: pid, stop: make(chan struct{}), done: make(chan struct{})}
	s.take()
	go func() {
		defer close(s.done)
		t := time.NewTicker(sampleEvery)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				s.take()
				return
			case <-t.C:
				s.take()
			}
		}
	}()
	return s
}

func (s *sampler) take() {
	at := time.Now()
	user, system, err := procTimes(s.pid)
	var cs int64
	if err == nil {
		cs, err = procSwitches(s.pid)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if s.err == nil {
			s.err = err
		}
		return
	}
	s.samples = append(s.samples, relaySample{At: at, CPU: user + system, User: user, CS: cs})
}

// finish stops the sampler and returns its samples, in time order.
func (s *sampler) finish() ([]relaySample, error) {
	close(s.stop)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.samples, s.err
}

// procSwitches is the number of context switches, voluntary and not, of
// all of pid's threads (/proc/PID/task/*/status; a thread that exits takes
// its count with it, and neither Go nor PgBouncer ends threads while
// relaying).
func procSwitches(pid int) (int64, error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0, err
	}
	var total int64
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, t.Name()))
		if err != nil {
			continue // the thread ended meanwhile
		}
		n, err := parseSwitches(string(b))
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/task/%s/status: %w", pid, t.Name(), err)
		}
		total += n
	}
	return total, nil
}

// parseSwitches adds voluntary_ctxt_switches and nonvoluntary_ctxt_switches
// from the text of a /proc status file.
func parseSwitches(status string) (int64, error) {
	var total int64
	found := 0
	for _, line := range strings.Split(status, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "voluntary_ctxt_switches" && k != "nonvoluntary_ctxt_switches") {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("bad %s line %q", k, line)
		}
		total += n
		found++
	}
	if found != 2 {
		return 0, errors.New("no context switch counts")
	}
	return total, nil
}

// txLog is what pgbench -l wrote: every transaction's completion time, and
// each client's first.
type txLog struct {
	Done  []time.Time // sorted
	Ready time.Time   // the latest of the clients' first completions
	// Leaving is the earliest of the clients' last completions: from
	// then on clients are disconnecting.
	Leaving time.Time
}

// readTxLogs reads the per-transaction logs pgbench wrote with
// --log-prefix=prefix (prefix.PID, and prefix.PID.N for its other
// threads), then removes them.
func readTxLogs(prefix string) (txLog, error) {
	files, err := filepath.Glob(prefix + ".*")
	if err != nil {
		return txLog{}, err
	}
	if len(files) == 0 {
		return txLog{}, fmt.Errorf("pgbench wrote no transaction log %s.*", prefix)
	}
	var l txLog
	first, last := map[int]time.Time{}, map[int]time.Time{}
	for _, f := range files {
		err := func() error {
			fh, err := os.Open(f)
			if err != nil {
				return err
			}
			defer fh.Close()
			return parseTxLog(fh, &l, first, last)
		}()
		os.Remove(f)
		if err != nil {
			return txLog{}, fmt.Errorf("%s: %w", f, err)
		}
	}
	slices.SortFunc(l.Done, func(a, b time.Time) int { return a.Compare(b) })
	for _, t := range first {
		if t.After(l.Ready) {
			l.Ready = t
		}
	}
	for _, t := range last {
		if l.Leaving.IsZero() || t.Before(l.Leaving) {
			l.Leaving = t
		}
	}
	return l, nil
}

// parseTxLog reads pgbench's per-transaction log lines: "client_id
// transaction_no time script_no time_epoch time_us [...]", the last two
// being when the transaction completed.
func parseTxLog(r io.Reader, l *txLog, first, last map[int]time.Time) error {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 6 {
			return fmt.Errorf("short line %q", sc.Text())
		}
		client, err1 := strconv.Atoi(f[0])
		sec, err2 := strconv.ParseInt(f[4], 10, 64)
		usec, err3 := strconv.ParseInt(f[5], 10, 64)
		if err := errors.Join(err1, err2, err3); err != nil {
			return fmt.Errorf("line %q: %w", sc.Text(), err)
		}
		t := time.Unix(sec, usec*1000)
		l.Done = append(l.Done, t)
		if f0, ok := first[client]; !ok || t.Before(f0) {
			first[client] = t
		}
		if l0, ok := last[client]; !ok || t.After(l0) {
			last[client] = t
		}
	}
	return sc.Err()
}

// window is a run's steady state and what happened in it.
type window struct {
	Start, End time.Time
	Tx         int64   // transactions completed in (Start, End]
	CPU        float64 // relay CPU seconds; with Relay
	User       float64 // of which in user space
	CS         int64   // relay context switches; with Relay
	Relay      bool    // the relay's counters cover the window
}

// Seconds is the window's length.
func (w window) Seconds() float64 { return w.End.Sub(w.Start).Seconds() }

// minWindow is the shortest steady state a run's numbers are taken from.
const minWindow = time.Second

// steadyWindow is the window of a run from its transaction log and, for a
// relay, the samples of its counters (nil for direct).
func steadyWindow(l txLog, samples []relaySample) (window, error) {
	if len(l.Done) == 0 {
		return window{}, errors.New("no transaction completed")
	}
	w := window{Start: l.Ready, End: l.Leaving}
	if samples != nil {
		i := slices.IndexFunc(samples, func(s relaySample) bool { return !s.At.Before(l.Ready) })
		j := -1
		for k := len(samples) - 1; k >= 0; k-- {
			if !samples[k].At.After(l.Leaving) {
				j = k
				break
			}
		}
		if i < 0 || j <= i {
			return window{}, errors.New("no relay samples in the steady state")
		}
		s0, s1 := samples[i], samples[j]
		w.Start, w.End = s0.At, s1.At
		w.CPU, w.User, w.CS, w.Relay = s1.CPU-s0.CPU, s1.User-s0.User, s1.CS-s0.CS, true
	}
	if d := w.End.Sub(w.Start); d < minWindow {
		return window{}, fmt.Errorf("steady state of %s (all clients had run a transaction at %s, the first finished at %s), want at least %s: raise -duration",
			d.Round(time.Millisecond), l.Ready.Format("15:04:05.000"), l.Leaving.Format("15:04:05.000"), minWindow)
	}
	w.Tx = countIn(l.Done, w.Start, w.End)
	return w, nil
}

// countIn counts the times in (from, to] of sorted ts.
func countIn(ts []time.Time, from, to time.Time) int64 {
	lo, _ := slices.BinarySearchFunc(ts, from, func(t, x time.Time) int {
		if t.After(x) {
			return 1
		}
		return -1
	})
	hi, _ := slices.BinarySearchFunc(ts, to, func(t, x time.Time) int {
		if t.After(x) {
			return 1
		}
		return -1
	})
	return int64(hi - lo)
}
