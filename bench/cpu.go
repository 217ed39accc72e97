package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

// procCPU is the CPU time a process has used so far, user plus system, in
// seconds, over all its threads: utime + stime from /proc/PID/stat.
//
// This is the relay's own cost per transaction when divided by what a run
// processed, and unlike TPS it does not depend on what else competes for
// the cores: a neighbour's burst slows the relay down, but does not make it
// spend more CPU per transaction.
func procCPU(pid int) (float64, error) {
	user, system, err := procTimes(pid)
	return user + system, err
}

// procTimes is procCPU split in two: the time the process spent running
// its own code (user: for pgmoat, Go code and the runtime) and the
// kernel's time on its behalf (system: mostly its system calls, where
// relaying loopback TCP spends most of its time), in seconds. Two relays
// making the same system calls spend about the same system time per
// transaction, so the user time shows where a difference comes from.
func procTimes(pid int) (user, system float64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	u, s, err := parseProcStatTimes(string(b))
	if err != nil {
		return 0, 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	hz := float64(clockTicks())
	return float64(u) / hz, float64(s) / hz, nil
}

// parseProcStatTimes returns utime and stime, in clock ticks, from the
// text of /proc/PID/stat. The process name (field 2) is in parentheses and
// may itself contain spaces and parentheses, so the fields are counted
// from the last ')'. utime and stime are fields 14 and 15 (proc(5)).
func parseProcStatTimes(stat string) (utime, stime int64, err error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("no process name in %q", stat)
	}
	f := strings.Fields(stat[i+1:]) // f[0] is field 3 (state)
	const ui, si = 14 - 3, 15 - 3
	if len(f) <= si {
		return 0, 0, fmt.Errorf("%d fields after the process name, want at least %d", len(f), si+1)
	}
	if utime, err = strconv.ParseInt(f[ui], 10, 64); err != nil {
		return 0, 0, fmt.Errorf("utime %q: %w", f[ui], err)
	}
	if stime, err = strconv.ParseInt(f[si], 10, 64); err != nil {
		return 0, 0, fmt.Errorf("stime %q: %w", f[si], err)
	}
	return utime, stime, nil
}

// clockTicks is the unit of /proc/PID/stat's times, per second.
var clockTicks = sync.OnceValue(func() int64 {
	// sysconf(_SC_CLK_TCK), which Go's syscall package does not expose.
	// USER_HZ is 100 on every architecture Linux runs Go on; getconf is
	// asked in case one day it is not.
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err == nil {
		if n, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64); err == nil && n > 0 {
			return n
		}
	}
	return 100
})

// procName is the command name of pid (/proc/PID/comm), to make sure the
// process whose CPU is read is the relay and not a wrapper that started it.
func procName(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// checkProcName fails unless pid runs a program whose name starts with
// want (comm is truncated to 15 bytes).
func checkProcName(pid int, want string) error {
	got, err := procName(pid)
	if err != nil {
		return err
	}
	if want = want[:min(len(want), 15)]; !strings.HasPrefix(got, want) {
		return fmt.Errorf("process %d is %q, not %s: its CPU time would not be the relay's", pid, got, want)
	}
	return nil
}

// waitQuiet waits until pid uses less than busy cores over a window of
// every, or until timeout: a relay that just accepted (or dropped) a
// thousand sessions is still collecting garbage and growing or shrinking
// its heap for a while, which a run started at once would measure.
func waitQuiet(ctx context.Context, pid int, busy float64, every, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	last, err := procCPU(pid)
	if err != nil {
		return err
	}
	for {
		if err := sleepCtx(ctx, every); err != nil {
			return err
		}
		now, err := procCPU(pid)
		if err != nil {
			return err
		}
		if (now-last)/every.Seconds() < busy || time.Now().After(deadline) {
			return nil
		}
		last = now
	}
}
