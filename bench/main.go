package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// options are the run's settings; defaults differ between the full run and
// the quick (smoke) run.
type options struct {
	Quick         bool
	Rounds        int
	Duration      time.Duration
	Scale         int
	Scripts       []string
	Modes         []string
	Clients       []int
	Targets       []string
	ConnSessions  int   // sessions per round of the connections step; 0 skips it
	CountSyscalls bool  // run the system-call counting pass (perf)
	IdleSessions  int   // 0 skips the idle-sessions step
	PendingHolds  int   // 0 skips the pending-holds step
	GuardedRuns   int   // statements of each kind the guarded step times; 0 skips it
	StreamBytes   int64 // 0 skips the streaming step
	Out           string
	PgmoatBin     string
	PgmoatEnv     []string // K=V added to pgmoat's environment
	PgmoatB       string   // a second pgmoat binary, run as target pgmoat-b; "" for none
	PgmoatBEnv    []string // K=V added to pgmoat-b's environment
	Keep          bool
	Profile       string // directory for pgmoat's CPU and allocation profiles of the matrix; "" for none
}

// defaults: the full matrix the targets are checked on, a concurrency
// sweep from 1 to 256 clients: 30 cells × 3 targets × 3 rounds × 2 s of
// steady state, plus the time to connect (5-10 s for 256 clients through
// pgmoat), then a counting pass of every cell on each relay and the memory
// and holds steps, an estimated 45-50 minutes on 2 busy cores; and a quick
// run of about 9 minutes. Many short alternating
// runs make better medians on a shared machine than a few long ones:
// -rounds 5 -duration 3s for a steadier (and twice as long) run.
func defaults(quick bool) options {
	o := options{
		Quick:         quick,
		Rounds:        3,
		Duration:      2 * time.Second,
		Scale:         10,
		Scripts:       []string{"select", "tpcb"},
		Modes:         []string{"simple", "extended", "prepared"},
		Clients:       []int{1, 8, 32, 64, 256},
		Targets:       []string{targetDirect, targetPgBouncer, targetPgmoat},
		ConnSessions:  200,
		CountSyscalls: true,
		IdleSessions:  1000,
		PendingHolds:  1000,
		GuardedRuns:   300,
		StreamBytes:   1 << 30,
		Out:           "bench/results",
		PgmoatBin:     "bin/pgmoat",
	}
	if quick {
		o.Rounds = 1
		o.Scale = 2
		o.Modes = []string{"simple", "prepared"}
		o.Clients = []int{1, 8, 64}
		o.ConnSessions = 50
		o.GuardedRuns = 50
		o.StreamBytes = 100 << 20
	}
	return o
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	quick := os.Getenv("QUICK") == "1"
	for _, a := range args {
		if a == "-quick" || a == "--quick" {
			quick = true
		}
	}
	o, err := parseOptions(args, defaults(quick), stderr)
	if err != nil {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	if err := bench(ctx, o, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 1
	}
	return 0
}

func parseOptions(args []string, o options, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.BoolVar(&o.Quick, "quick", o.Quick, "smoke run: 1 round, fewer protocols, smaller data (also QUICK=1)")
	fs.IntVar(&o.Rounds, "rounds", o.Rounds, "rounds of the matrix; each cell's number is the median over them")
	fs.DurationVar(&o.Duration, "duration", o.Duration, "steady state of one pgbench run, once its clients are connected (whole seconds)")
	fs.IntVar(&o.Scale, "scale", o.Scale, "pgbench -i scale")
	fs.Func("scripts", "pgbench scripts, comma-separated: select (-S), tpcb (default "+strings.Join(o.Scripts, ",")+")", func(s string) error {
		o.Scripts = flagList(s)
		return checkList("script", o.Scripts, "select", "tpcb")
	})
	fs.Func("modes", "pgbench -M protocols, comma-separated (default "+strings.Join(o.Modes, ",")+")", func(s string) error {
		o.Modes = flagList(s)
		return checkList("mode", o.Modes, "simple", "extended", "prepared")
	})
	fs.Func("clients", "pgbench client counts, comma-separated (default "+joinInts(o.Clients)+")", func(s string) error {
		o.Clients = nil
		for _, f := range flagList(s) {
			n, err := strconv.Atoi(f)
			if err != nil || n < 1 {
				return fmt.Errorf("bad client count %q", f)
			}
			o.Clients = append(o.Clients, n)
		}
		return nil
	})
	fs.Func("targets", "targets, comma-separated (default "+strings.Join(o.Targets, ",")+")", func(s string) error {
		o.Targets = flagList(s)
		return checkList("target", o.Targets, targetDirect, targetPgBouncer, targetPgmoat, targetPgmoatB)
	})
	fs.IntVar(&o.ConnSessions, "connections", o.ConnSessions, "sessions each relay opens and closes per round of the connections step (0 skips)")
	fs.BoolVar(&o.CountSyscalls, "count-syscalls", o.CountSyscalls, "after the rounds, run every cell once more on each relay counting its system calls with perf")
	fs.IntVar(&o.IdleSessions, "idle-sessions", o.IdleSessions, "idle sessions held open through pgmoat for the memory step (0 skips)")
	fs.IntVar(&o.GuardedRuns, "guarded", o.GuardedRuns, "statements of each kind the guarded-execution step times (0 skips)")
	fs.IntVar(&o.PendingHolds, "pending-holds", o.PendingHolds, "held statements pending in pgmoat while the pending-holds step measures other sessions' latency (0 skips)")
	fs.Int64Var(&o.StreamBytes, "stream-bytes", o.StreamBytes, "bytes of the COPY OUT and of the result set streamed through pgmoat (0 skips)")
	fs.StringVar(&o.Out, "out", o.Out, "directory for latest.md, latest.csv and tps.png")
	fs.StringVar(&o.PgmoatBin, "pgmoat", o.PgmoatBin, "pgmoat binary")
	fs.Func("pgmoat-env", "`K=V` added to pgmoat's environment (repeatable), e.g. GOMAXPROCS=1", func(s string) error {
		return appendEnv(&o.PgmoatEnv, s)
	})
	fs.StringVar(&o.PgmoatB, "pgmoat-b", o.PgmoatB, "a second pgmoat `binary`, measured as target pgmoat-b in the same rotation (A/B of two builds or settings)")
	fs.Func("pgmoat-b-env", "`K=V` added to pgmoat-b's environment only (repeatable)", func(s string) error {
		return appendEnv(&o.PgmoatBEnv, s)
	})
	fs.BoolVar(&o.Keep, "keep", o.Keep, "keep the work directory (configs, logs, audit file)")
	fs.StringVar(&o.Profile, "profile", o.Profile, "write pgmoat's CPU and allocation profiles of the matrix to this `directory` (narrow the matrix with -scripts, -modes, -clients)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "bench: unexpected arguments %q\n", fs.Args())
		return o, errors.New("usage")
	}
	withB := hasTarget(o, targetPgmoatB)
	switch {
	case o.PgmoatB != "" && !withB:
		// -pgmoat-b is what asks for the target; -targets may narrow
		// the others.
		o.Targets = append(o.Targets, targetPgmoatB)
	case o.PgmoatB == "" && withB:
		fmt.Fprintln(stderr, "bench: target pgmoat-b needs -pgmoat-b (the binary to run)")
		return o, errors.New("usage")
	}
	if o.PgmoatB == "" && len(o.PgmoatBEnv) > 0 {
		fmt.Fprintln(stderr, "bench: -pgmoat-b-env needs -pgmoat-b")
		return o, errors.New("usage")
	}
	o.Targets = orderTargets(o.Targets)
	if o.Rounds < 1 || o.Duration < time.Second || len(o.Scripts) == 0 || len(o.Modes) == 0 || len(o.Clients) == 0 || len(o.Targets) == 0 {
		fmt.Fprintln(stderr, "bench: need at least one round of at least 1s, and at least one script, mode, client count and target")
		return o, errors.New("usage")
	}
	return o, nil
}

// appendEnv adds one K=V environment setting to env.
func appendEnv(env *[]string, kv string) error {
	k, _, ok := strings.Cut(kv, "=")
	if !ok || k == "" || strings.ContainsAny(k, " \t") {
		return fmt.Errorf("want K=V, got %q", kv)
	}
	*env = append(*env, kv)
	return nil
}

// orderTargets puts targets in the order tables and charts show them,
// without duplicates.
func orderTargets(ts []string) []string {
	var out []string
	for _, t := range []string{targetDirect, targetPgBouncer, targetPgmoat, targetPgmoatB} {
		if slices.Contains(ts, t) {
			out = append(out, t)
		}
	}
	return out
}

// flagList splits a list flag's value at commas and spaces.
func flagList(s string) []string {
	var out []string
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' }) {
		out = append(out, strings.TrimSpace(f))
	}
	return out
}

func checkList(what string, got []string, allowed ...string) error {
	for _, g := range got {
		ok := false
		for _, a := range allowed {
			ok = ok || g == a
		}
		if !ok {
			return fmt.Errorf("unknown %s %q (want one of %s)", what, g, strings.Join(allowed, ", "))
		}
	}
	return nil
}

func joinInts(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ",")
}

func hasTarget(o options, t string) bool {
	for _, n := range o.Targets {
		if n == t {
			return true
		}
	}
	return false
}

// Work directories are named workDirPrefix*; ownerFile in one holds the
// pid of the bench using it, and is removed when the directory is kept on
// purpose.
const (
	workDirPrefix = "pgmoat-bench-"
	ownerFile     = "owner.pid"
)

// removeStaleWorkDirs removes the work directories of bench runs that
// were killed outright (nothing else could clean them up).
func removeStaleWorkDirs() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), workDirPrefix+"*"))
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, ownerFile))
		if err != nil {
			continue // kept on purpose, or not ours
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			os.RemoveAll(d)
		}
	}
}

// findBinary is the absolute path of bin, which must exist.
func findBinary(bin, what, hint string) (string, error) {
	abs, err := filepath.Abs(bin)
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(abs); err != nil {
		return "", fmt.Errorf("%s: %w (%s)", what, err, hint)
	}
	return abs, nil
}

// envSuffix shows the environment a pgmoat was given, for the log.
func envSuffix(env []string) string {
	if len(env) == 0 {
		return ""
	}
	return " with " + strings.Join(env, " ")
}

// findPgbench finds pgbench on PATH or next to a server under
// /usr/lib/postgresql.
func findPgbench() (string, error) {
	if p, err := exec.LookPath("pgbench"); err == nil {
		return p, nil
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pgbench")
	if len(matches) > 0 {
		return matches[len(matches)-1], nil
	}
	return "", errors.New("pgbench not found (Debian: postgresql-contrib or the server package; make deps installs it)")
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	tmp := to + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, to)
}

func prefixAll(prefix string, xs []string) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = prefix + x
	}
	return out
}
