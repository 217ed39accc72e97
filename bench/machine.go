package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
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
