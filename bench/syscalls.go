package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// System calls per transaction come from `perf stat -I` counting the
// raw_syscalls:sys_enter tracepoint of the relay's threads, in intervals
// of syscallInterval, summed over the steady state. Counting a tracepoint
// slows every system call on the machine a little, so it runs in a pass of
// its own after the measured rounds, whose CPU and TPS do not enter the
// medians.

// syscallInterval is perf's counting interval.
const syscallInterval = 20 * time.Millisecond

// syscallCounter is a perf stat process counting one relay's system calls.
type syscallCounter struct {
	cmd   *exec.Cmd
	out   string
	start time.Time
}

// perfUsable reports why perf cannot count a process's system calls here,
// or nil: it is missing, or the kernel does not let it trace (tracefs,
// perf_event_paranoid).
func perfUsable(ctx context.Context) error {
	perf, err := exec.LookPath("perf")
	if err != nil {
		return errors.New("perf not found (Debian: linux-perf)")
	}
	cmd := exec.CommandContext(ctx, perf, "stat", "-x,", "-e", "raw_syscalls:sys_enter", "--", "true")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("perf stat -e raw_syscalls:sys_enter: %v: %s", err, tail(string(out), 2))
	}
	return nil
}

// countSyscalls starts counting pid's system calls into a file in dir.
func countSyscalls(pid int, dir string) (*syscallCounter, error) {
	f, err := os.CreateTemp(dir, "perf-*.csv")
	if err != nil {
		return nil, err
	}
	f.Close()
	c := &syscallCounter{out: f.Name()}
	c.cmd = exec.Command("perf", "stat", "-x,", "-I", strconv.Itoa(int(syscallInterval/time.Millisecond)),
		"-e", "raw_syscalls:sys_enter", "-p", strconv.Itoa(pid), "-o", c.out)
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	c.start = time.Now()
	if err := c.cmd.Start(); err != nil {
		os.Remove(c.out)
		return nil, err
	}
	return c, nil
}

// syscallCount is one of perf's interval counts.
type syscallCount struct {
	End   time.Time // end of the interval
	Count int64
}

// finish stops perf and returns its interval counts.
func (c *syscallCounter) finish() ([]syscallCount, error) {
	c.cmd.Process.Signal(os.Interrupt)
	c.cmd.Wait() // perf exits 130 on SIGINT
	defer os.Remove(c.out)
	f, err := os.Open(c.out)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parsePerfIntervals(f, c.start)
}

// parsePerfIntervals reads `perf stat -x, -I` output: "seconds since
// start,count,unit,event,..." per interval; "<not counted>" is an interval
// in which the process made no system call.
func parsePerfIntervals(r io.Reader, start time.Time) ([]syscallCount, error) {
	var out []syscallCount
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, ",")
		if len(f) < 4 || f[3] != "raw_syscalls:sys_enter" {
			continue
		}
		secs, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return nil, fmt.Errorf("bad perf line %q", line)
		}
		var n int64
		if !strings.HasPrefix(f[1], "<not") {
			if n, err = strconv.ParseInt(f[1], 10, 64); err != nil {
				return nil, fmt.Errorf("bad perf line %q", line)
			}
		}
		out = append(out, syscallCount{End: start.Add(time.Duration(secs * float64(time.Second))), Count: n})
	}
	if len(out) == 0 {
		return nil, errors.New("perf counted nothing")
	}
	return out, sc.Err()
}

// syscallsIn sums the intervals that end within (from, to]: the window
// loses at most one interval at each end, and the transactions are
// counted over the same span (see syscallWindow).
func syscallsIn(cs []syscallCount, from, to time.Time) (n int64, first, last time.Time) {
	for _, c := range cs {
		if c.End.After(to) {
			break
		}
		if !c.End.After(from.Add(syscallInterval)) {
			continue
		}
		if first.IsZero() {
			first = c.End.Add(-syscallInterval)
		}
		n += c.Count
		last = c.End
	}
	return n, first, last
}

// syscallWindow is the system calls per transaction of a counting run: the
// intervals inside its steady state, and the transactions that completed
// in them.
func syscallWindow(l txLog, cs []syscallCount) (perTx float64, err error) {
	if len(l.Done) == 0 {
		return 0, errors.New("no transaction completed")
	}
	n, from, to := syscallsIn(cs, l.Ready, l.Leaving)
	if from.IsZero() || to.Sub(from) < minWindow {
		return 0, fmt.Errorf("steady state too short to count system calls (%s)", l.Leaving.Sub(l.Ready).Round(time.Millisecond))
	}
	tx := countIn(l.Done, from, to)
	if tx == 0 {
		return 0, errors.New("no transaction in the counted intervals")
	}
	return float64(n) / float64(tx), nil
}
