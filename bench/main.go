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
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// options are the run's settings; defaults differ between the full run and
// the quick (smoke) run.
type options struct {
	Quick        bool
	Rounds       int
	Duration     time.Duration
	Scale        int
	Scripts      []string
	Modes        []string
	Clients      []int
	Targets      []string
	IdleSessions int   // 0 skips the idle-sessions step
	PendingHolds int   // 0 skips the pending-holds step
	StreamBytes  int64 // 0 skips the streaming step
	Out          string
	PgmoatBin    string
	PgmoatEnv    []string // K=V added to pgmoat's environment
	PgmoatB      string   // a second pgmoat binary, run as target pgmoat-b; "" for none
	PgmoatBEnv   []string // K=V added to pgmoat-b's environment
	Keep         bool
	Profile      string // directory for pgmoat's CPU and allocation profiles of the matrix; "" for none
}

// defaults: the full matrix the targets are checked on, in under 20
// minutes on 2 cores (18 cells × 3 targets × 5 rounds × 3 s ≈ 14 min of
// pgbench, 15 min in all), and a quick run of about 2 minutes. Many short alternating runs
// make better medians on a shared machine than a few long ones.
func defaults(quick bool) options {
	o := options{
		Quick:        quick,
		Rounds:       5,
		Duration:     3 * time.Second,
		Scale:        10,
		Scripts:      []string{"select", "tpcb"},
		Modes:        []string{"simple", "extended", "prepared"},
		Clients:      []int{1, 8, 32},
		Targets:      []string{targetDirect, targetPgBouncer, targetPgmoat},
		IdleSessions: 1000,
		PendingHolds: 1000,
		StreamBytes:  1 << 30,
		Out:          "bench/results",
		PgmoatBin:    "bin/pgmoat",
	}
	if quick {
		o.Rounds = 1
		o.Scale = 2
		o.Modes = []string{"simple", "prepared"}
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
	fs.DurationVar(&o.Duration, "duration", o.Duration, "length of one pgbench run (whole seconds)")
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
	fs.IntVar(&o.IdleSessions, "idle-sessions", o.IdleSessions, "idle sessions held open through pgmoat for the memory step (0 skips)")
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

// bench runs the whole sequence (see doc.go) and writes the results.
func bench(ctx context.Context, o options, stdout, stderr io.Writer) (err error) {
	began := time.Now()
	loadStart := loadAverage()
	logf := func(format string, a ...any) { fmt.Fprintf(stderr, "bench: "+format+"\n", a...) }

	removeStaleWorkDirs()
	dir, err := os.MkdirTemp("", workDirPrefix)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return err
	}
	// PgBouncer runs as the postgres OS user when we are root: it must be
	// able to read its configuration.
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	defer func() {
		// Keep what explains a failure; an interrupted run needs nothing.
		if o.Keep || (err != nil && ctx.Err() == nil) {
			os.Remove(filepath.Join(dir, ownerFile))
			logf("work directory (configs, logs, raw CSV) kept: %s", dir)
			return
		}
		os.RemoveAll(dir)
	}()

	s := &stack{dir: dir}
	defer s.stop()
	profileDir := ""
	if o.Profile != "" {
		if profileDir, err = filepath.Abs(o.Profile); err != nil {
			return err
		}
		if err := os.MkdirAll(profileDir, 0o755); err != nil {
			return err
		}
	}
	withPgmoat, withB := hasTarget(o, targetPgmoat), hasTarget(o, targetPgmoatB)
	var pgmoatBin, pgmoatBBin string
	if withPgmoat {
		if pgmoatBin, err = findBinary(o.PgmoatBin, "pgmoat binary", "make build makes it; -targets direct,pgbouncer leaves pgmoat out"); err != nil {
			return err
		}
	}
	if withB {
		if pgmoatBBin, err = findBinary(o.PgmoatB, "-pgmoat-b binary", "build the other version with go build -o PATH ./cmd/pgmoat"); err != nil {
			return err
		}
	}

	pgbenchBin, err := findPgbench()
	if err != nil {
		return err
	}
	maxConns := 300
	if withPgmoat {
		maxConns = max(maxConns, o.IdleSessions+200, o.PendingHolds+200)
	}
	logf("starting PostgreSQL (max_connections %d) and loading pgbench scale %d", maxConns, o.Scale)
	if err := s.startCluster(ctx, maxConns, o.Scale, pgbenchBin); err != nil {
		return err
	}
	if hasTarget(o, targetPgBouncer) {
		logf("starting PgBouncer (session mode)")
		if err := s.startPgBouncer(maxClients(cells(o.Scripts, o.Modes, o.Clients))); err != nil {
			return err
		}
	}
	pgmoatConns := max(1000, o.IdleSessions+100, o.PendingHolds+100)
	if withPgmoat {
		if s.pgmoat, err = s.newPgmoat(targetPgmoat, pgmoatBin, o.PgmoatEnv, pgmoatConns); err != nil {
			return err
		}
		s.pgmoat.profileDir = profileDir
		logf("starting pgmoat (%s%s)", pgmoatBin, envSuffix(o.PgmoatEnv))
		if err := s.startPgmoat(s.pgmoat); err != nil {
			return err
		}
	}
	if withB {
		if s.pgmoatB, err = s.newPgmoat(targetPgmoatB, pgmoatBBin, o.PgmoatBEnv, pgmoatConns); err != nil {
			return err
		}
		s.pgmoatB.profileDir = profileDir
		logf("starting pgmoat-b (%s%s)", pgmoatBBin, envSuffix(o.PgmoatBEnv))
		if err := s.startPgmoat(s.pgmoatB); err != nil {
			return err
		}
	}
	pgmoats := s.pgmoats()

	rep := &report{Opts: o, Machine: describeMachine(ctx, s, pgbenchBin), Targets: o.Targets,
		Cells: cells(o.Scripts, o.Modes, o.Clients)}
	rep.Machine.LoadStart = loadStart

	// The matrix.
	csvPath := filepath.Join(dir, "latest.csv")
	csvFile, csvW, err := openCSV(csvPath)
	if err != nil {
		return err
	}
	defer csvFile.Close()
	m := &matrix{pgbench: pgbenchBin, user: s.cluster.Superuser, password: s.cluster.SuperPassword,
		duration: o.Duration, maxJobs: runtime.NumCPU(), resetTPCB: resetTPCB(s.superConn), log: stderr}
	if err := m.warmUp(ctx, s.targets(o.Targets)); err != nil {
		return err
	}
	before := map[string]counters{}
	for _, pm := range pgmoats {
		c, err := scrapeCounters(ctx, pm.adminPort)
		if err != nil {
			rep.Notes = append(rep.Notes, pm.name+"'s /metrics could not be read, so nothing here shows that the analysis ran: "+err.Error())
			continue
		}
		before[pm.name] = c
	}
	p := plan(o.Rounds, rep.Cells, s.targets(o.Targets))
	logf("matrix: %d runs of %s (about %s)", len(p), o.Duration, (time.Duration(len(p)) * (o.Duration + 200*time.Millisecond)).Round(time.Second))
	recs, err := m.run(ctx, p, csvW)
	if err != nil {
		return err
	}
	rep.Stats = summarize(recs)
	for _, pm := range pgmoats {
		if before[pm.name] == nil {
			continue
		}
		after, err := scrapeCounters(ctx, pm.adminPort)
		if err != nil {
			rep.Notes = append(rep.Notes, pm.name+"'s /metrics could not be read, so nothing here shows that the analysis ran: "+err.Error())
			continue
		}
		if rep.Counters == nil {
			rep.Counters = map[string]counters{}
		}
		rep.Counters[pm.name] = after.minus(before[pm.name])
	}
	for _, pm := range pgmoats {
		if pm.profileDir != "" {
			// pgmoat writes its profiles when it stops.
			pm.proc.stop(30 * time.Second)
			logf("%s's profiles of the matrix: %s/%s.{cpu,mem}.pprof (go tool pprof %s %s/%s.cpu.pprof)",
				pm.name, pm.profileDir, pm.name, pm.bin, pm.profileDir, pm.name)
		}
	}
	if s.pgmoatB != nil {
		// The steps below measure pgmoat alone.
		s.pgmoatB.proc.stop(30 * time.Second)
	}

	// Memory steps, each on a fresh pgmoat.
	if withPgmoat && o.IdleSessions > 0 {
		logf("memory: %d idle sessions through pgmoat", o.IdleSessions)
		idle, err := s.idleStep(ctx, o.IdleSessions)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			rep.Problems = append(rep.Problems, "idle sessions step failed: "+err.Error())
		} else {
			rep.Idle = &idle
		}
	}
	if withPgmoat && o.PendingHolds > 0 {
		logf("pending holds: -S -M prepared -c 8 through pgmoat with none and with %d holds pending, %d round(s)", o.PendingHolds, o.Rounds)
		h, err := s.holdsStep(ctx, m, o.PendingHolds, o.Rounds)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			rep.Problems = append(rep.Problems, "pending holds step failed: "+err.Error())
		} else {
			rep.Holds = &h
		}
	}
	if withPgmoat && o.StreamBytes > 0 {
		for _, kind := range []streamKind{streamCopy, streamSelect} {
			logf("memory: %s of %s through pgmoat", kind, fmtBytes(o.StreamBytes))
			pair, err := s.streamStep(ctx, kind, o.StreamBytes)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				rep.Problems = append(rep.Problems, fmt.Sprintf("streaming step (%s) failed: %v", kind, err))
				continue
			}
			rep.Streams = append(rep.Streams, pair)
		}
	}
	for _, r := range recs {
		if r.Err != "" {
			rep.Problems = append(rep.Problems, "some pgbench runs failed (see Throughput)")
			break
		}
	}

	// Results: written to the work directory, then moved into place
	// together so that latest.* always come from one run.
	rep.Elapsed = time.Since(began)
	rep.Machine.LoadEnd = loadAverage()
	pngPath := filepath.Join(dir, "tps.png")
	if err := drawChart(ctx, rep, dir, pngPath); err != nil {
		rep.Problems = append(rep.Problems, "no chart: "+err.Error())
		logf("no chart: %v", err)
	} else {
		rep.Chart = "tps.png"
	}
	var md strings.Builder
	rep.write(&md)
	if err := os.WriteFile(filepath.Join(dir, "latest.md"), []byte(md.String()), 0o644); err != nil {
		return err
	}
	if err := csvFile.Close(); err != nil {
		return err
	}
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return err
	}
	files := []string{"latest.md", "latest.csv"}
	if rep.Chart != "" {
		files = append(files, "tps.png")
	}
	for _, f := range files {
		if err := copyFile(filepath.Join(dir, f), filepath.Join(o.Out, f)); err != nil {
			return err
		}
	}
	fmt.Fprint(stdout, md.String())
	logf("wrote %s in %s", strings.Join(prefixAll(o.Out+"/", files), ", "), time.Since(began).Round(time.Second))
	if len(rep.Problems) > 0 {
		return fmt.Errorf("%d problem(s) in this run; see %s", len(rep.Problems), filepath.Join(o.Out, "latest.md"))
	}
	return nil
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
