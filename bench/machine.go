package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// machine describes where the numbers came from; ratios travel between
// machines, absolute numbers do not.
type machine struct {
	Date      string
	CPUs      int
	CPUModel  string
	Memory    string
	Kernel    string
	Postgres  string
	HugePages string // whether the cluster's shared memory is in huge pages
	PgBouncer string
	Pgbench   string
	Pgmoat    string // `pgmoat version`, and the environment it was given
	PgmoatB   string // the same for pgmoat-b; "" without -pgmoat-b
	Commit    string // git HEAD, "+uncommitted changes" when the tree is dirty
	Go        string
	// LoadStart and LoadEnd are /proc/loadavg's 1-minute figure when the
	// bench began and ended: anything well above 0 at the start is another
	// process competing for the cores.
	LoadStart, LoadEnd string
	// Busy is how many cores other processes kept busy, measured over a
	// second with the bench's stack idle before each round.
	Busy []float64
}

// busyText sums up Busy for the report ("" when it was not measured).
func (m machine) busyText() string {
	if len(m.Busy) == 0 {
		return ""
	}
	lo, hi := minMax(m.Busy)
	return fmt.Sprintf("%.2f of %d cores busy with the bench's own stack idle (median of %d one-second samples, one before each round; lowest %.2f, highest %.2f)",
		median(m.Busy), m.CPUs, len(m.Busy), lo, hi)
}

// loadAverage is the 1-minute load average, "" if unknown.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return ""
	}
	return f[0]
}

func describeMachine(ctx context.Context, s *stack, pgbenchBin string) machine {
	m := machine{
		Date:      time.Now().UTC().Format("2006-01-02 15:04 UTC"),
		CPUs:      runtime.NumCPU(),
		HugePages: s.hugePages,
		CPUModel:  procField("/proc/cpuinfo", "model name"),
		Kernel:    firstLine(cmdOutput("uname", "-srm")),
		PgBouncer: firstLine(cmdOutput("pgbouncer", "--version")),
		Pgbench:   firstLine(cmdOutput(pgbenchBin, "--version")),
		Go:        runtime.Version(),
	}
	if kb := procField("/proc/meminfo", "MemTotal"); kb != "" {
		var n int64
		if _, err := fmt.Sscanf(kb, "%d kB", &n); err == nil {
			m.Memory = fmt.Sprintf("%.1f GiB", float64(n)/(1<<20))
		}
	}
	if conn, err := s.superConn(ctx); err == nil {
		if rs, err := conn.Exec(ctx, "SELECT version()").ReadAll(); err == nil && len(rs) == 1 && len(rs[0].Rows) == 1 {
			m.Postgres = string(rs[0].Rows[0][0])
			if i := strings.Index(m.Postgres, " on "); i > 0 {
				m.Postgres = m.Postgres[:i]
			}
		}
		conn.Close(ctx)
	}
	if s.pgmoat != nil {
		m.Pgmoat = s.pgmoat.describe(s.pgmoatB != nil)
	}
	if s.pgmoatB != nil {
		m.PgmoatB = s.pgmoatB.describe(true)
	}
	m.Commit = firstLine(cmdOutput("git", "rev-parse", "--short=12", "HEAD"))
	if st := cmdOutput("git", "status", "--porcelain", "--untracked-files=no"); strings.TrimSpace(st) != "" {
		m.Commit += " (+ uncommitted changes in the tree)"
	}
	return m
}

// procField is the value of the first "key : value" line of a /proc file.
func procField(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func cmdOutput(name string, args ...string) string {
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		return "unknown"
	}
	return string(out)
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return l
}

// busyCores is how many of the machine's cores were busy, on average, over
// d (from /proc/stat): measured while the bench's own stack is idle, it is
// what other processes took from the run.
func busyCores(ctx context.Context, d time.Duration) (float64, error) {
	a, err := readCPUTimes()
	if err != nil {
		return 0, err
	}
	if err := sleepCtx(ctx, d); err != nil {
		return 0, err
	}
	b, err := readCPUTimes()
	if err != nil {
		return 0, err
	}
	total, idle := b.total-a.total, b.idle-a.idle
	if total <= 0 {
		return 0, fmt.Errorf("/proc/stat did not move over %s", d)
	}
	return float64(total-idle) / float64(total) * float64(runtime.NumCPU()), nil
}

type cpuTimes struct{ total, idle int64 }

// readCPUTimes reads the machine's "cpu" line of /proc/stat: the jiffies
// spent in each state since boot (idle and iowait count as idle).
func readCPUTimes() (cpuTimes, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTimes{}, err
	}
	return parseCPUTimes(string(b))
}

func parseCPUTimes(stat string) (cpuTimes, error) {
	line, _, _ := strings.Cut(stat, "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return cpuTimes{}, fmt.Errorf("unexpected /proc/stat line %q", line)
	}
	var t cpuTimes
	for i, v := range f[1:] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return cpuTimes{}, fmt.Errorf("unexpected /proc/stat line %q", line)
		}
		if i < 8 { // guest time is already in user time
			t.total += n
		}
		if i == 3 || i == 4 {
			t.idle += n
		}
	}
	return t, nil
}
