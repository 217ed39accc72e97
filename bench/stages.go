package main

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// benchRun is one bench run, stage by stage: start the stack, run the matrix,
// run the memory and pending-holds steps on pgmoat alone, write the
// results. Each stage fills in the report.
type benchRun struct {
	o       options
	dir     string // work directory
	s       *stack
	pgbench string // pgbench binary
	rep     *report
	stderr  io.Writer // progress, and pgbench's complaints
	logf    func(format string, a ...any)
}

// bench runs the whole sequence (see doc.go) and writes the results.
func bench(ctx context.Context, o options, stdout, stderr io.Writer) (err error) {
	began := time.Now()
	loadStart := loadAverage()
	r := &benchRun{o: o, stderr: stderr, logf: func(format string, a ...any) { fmt.Fprintf(stderr, "bench: "+format+"\n", a...) }}

	removeStaleWorkDirs()
	if r.dir, err = newWorkDir(); err != nil {
		return err
	}
	defer func() {
		// Keep what explains a failure; an interrupted run needs nothing.
		if o.Keep || (err != nil && ctx.Err() == nil) {
			os.Remove(filepath.Join(r.dir, ownerFile))
			r.logf("work directory (configs, logs, raw CSV) kept: %s", r.dir)
			return
		}
		os.RemoveAll(r.dir)
	}()

	r.s = &stack{dir: r.dir}
	defer r.s.stop()
	if err := r.startStack(ctx); err != nil {
		return err
	}
	r.rep = &report{Opts: o, Machine: describeMachine(ctx, r.s, r.pgbench), Targets: o.Targets,
		Cells: cells(o.Scripts, o.Modes, o.Clients)}
	r.rep.Machine.LoadStart = loadStart

	csvFile, csvW, err := openCSV(filepath.Join(r.dir, "latest.csv"))
	if err != nil {
		return err
	}
	defer csvFile.Close()
	m, recs, err := r.runMatrix(ctx, csvW)
	if err != nil {
		return err
	}
	if err := r.pgmoatSteps(ctx, m); err != nil {
		return err
	}
	for _, rec := range recs {
		if rec.Err != "" {
			r.rep.Problems = append(r.rep.Problems, "some pgbench runs failed (see Throughput)")
			break
		}
	}
	if err := csvFile.Close(); err != nil {
		return err
	}
	r.rep.Elapsed = time.Since(began)
	r.rep.Machine.LoadEnd = loadAverage()
	return r.writeResults(ctx, stdout, began)
}

// newWorkDir makes the run's work directory, marked as this process's.
func newWorkDir() (string, error) {
	dir, err := os.MkdirTemp("", workDirPrefix)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return dir, err
	}
	// PgBouncer runs as the postgres OS user when we are root: it must be
	// able to read its configuration.
	return dir, os.Chmod(dir, 0o755)
}

// startStack starts PostgreSQL with the pgbench tables, and the targets
// of the run: PgBouncer, pgmoat, pgmoat-b.
func (r *benchRun) startStack(ctx context.Context) error {
	o, s := r.o, r.s
	profileDir := ""
	if o.Profile != "" {
		var err error
		if profileDir, err = filepath.Abs(o.Profile); err != nil {
			return err
		}
		if err := os.MkdirAll(profileDir, 0o755); err != nil {
			return err
		}
	}
	withPgmoat, withB := hasTarget(o, targetPgmoat), hasTarget(o, targetPgmoatB)
	var pgmoatBin, pgmoatBBin string
	var err error
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

	if r.pgbench, err = findPgbench(); err != nil {
		return err
	}
	// PgBouncer keeps its pool's server connections after a run, while
	// the next target opens as many again.
	maxConns := max(300, 2*maxClients(cells(o.Scripts, o.Modes, o.Clients))+60)
	if withPgmoat {
		// The memory and holds steps run while PgBouncer still holds its
		// pool's server connections (up to the largest cell's clients).
		pool := 0
		if hasTarget(o, targetPgBouncer) {
			pool = maxClients(cells(o.Scripts, o.Modes, o.Clients)) + 8
		}
		maxConns = max(maxConns, o.IdleSessions+200+pool, o.PendingHolds+200+pool)
	}
	r.logf("starting PostgreSQL (max_connections %d) and loading pgbench scale %d", maxConns, o.Scale)
	if err := s.startCluster(ctx, maxConns, o.Scale, r.pgbench); err != nil {
		return err
	}
	r.logf("huge pages: %s", s.hugePages)
	if hasTarget(o, targetPgBouncer) {
		r.logf("starting PgBouncer (session mode)")
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
		r.logf("starting pgmoat (%s%s)", pgmoatBin, envSuffix(o.PgmoatEnv))
		if err := s.startPgmoat(s.pgmoat); err != nil {
			return err
		}
	}
	if withB {
		if s.pgmoatB, err = s.newPgmoat(targetPgmoatB, pgmoatBBin, o.PgmoatBEnv, pgmoatConns); err != nil {
			return err
		}
		s.pgmoatB.profileDir = profileDir
		r.logf("starting pgmoat-b (%s%s)", pgmoatBBin, envSuffix(o.PgmoatBEnv))
		if err := s.startPgmoat(s.pgmoatB); err != nil {
			return err
		}
	}
	return nil
}

// runMatrix runs every cell against every target, round after round,
// writing each pgbench run to csvW, and counts what the pgmoats analysed
// meanwhile. It stops the pgmoats that profile (they write their profiles
// when they stop) and pgmoat-b: the steps after it measure pgmoat alone.
func (r *benchRun) runMatrix(ctx context.Context, csvW *csv.Writer) (*matrix, []runRecord, error) {
	o, s, rep := r.o, r.s, r.rep
	pgmoats := s.pgmoats()
	m := &matrix{pgbench: r.pgbench, user: s.cluster.Superuser, password: s.cluster.SuperPassword,
		duration: o.Duration, maxJobs: runtime.NumCPU(), resetTPCB: resetTPCB(s.superConn), log: r.stderr,
		dir: r.dir, perClient: map[string]time.Duration{}, ready: map[readyKey]time.Duration{}}
	if err := m.warmUp(ctx, s.targets(o.Targets), maxClients(rep.Cells)); err != nil {
		return nil, nil, err
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
	ts := s.targets(o.Targets)
	p := plan(o.Rounds, rep.Cells, ts)
	counting := o.CountSyscalls && hasRelay(ts)
	if counting {
		if err := perfUsable(ctx); err != nil {
			rep.Notes = append(rep.Notes, "system calls were not counted: "+err.Error())
			counting = false
		} else {
			p = append(p, countingPlan(o.Rounds, rep.Cells, ts)...)
		}
	}
	r.logf("matrix: %d runs of %s each once connected (about %s)", len(p), o.Duration, planTime(p, o.Duration, runtime.NumCPU()).Round(time.Minute))
	// What other processes take from the run, measured while the stack is
	// idle: before the matrix and before each round.
	m.beforeRound = func(ctx context.Context, round int) error {
		busy, err := busyCores(ctx, time.Second)
		if err != nil {
			r.logf("machine load: %v", err)
			return nil
		}
		rep.Machine.Busy = append(rep.Machine.Busy, busy)
		r.logf("before round %d, with the stack idle, %.2f of %d cores were busy", round, busy, runtime.NumCPU())
		return nil
	}
	recs, err := m.run(ctx, p, csvW)
	if err != nil {
		return nil, nil, err
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
	if o.ConnSessions > 0 && hasRelay(ts) {
		r.logf("connections: %d sessions opened and closed through each relay, %d round(s)", o.ConnSessions, o.Rounds)
		cr, err := s.connectionsStep(ctx, ts, o.ConnSessions, o.Rounds)
		if err != nil {
			if ctx.Err() != nil {
				return nil, nil, ctx.Err()
			}
			rep.Problems = append(rep.Problems, "connections step failed: "+err.Error())
		} else {
			rep.Conns = &cr
		}
	}
	for _, pm := range pgmoats {
		if pm.profileDir != "" {
			// pgmoat writes its profiles when it stops.
			pm.proc.stop(30 * time.Second)
			r.logf("%s's profiles of the matrix: %s/%s.{cpu,mem}.pprof (go tool pprof %s %s/%s.cpu.pprof)",
				pm.name, pm.profileDir, pm.name, pm.bin, pm.profileDir, pm.name)
		}
	}
	if s.pgmoatB != nil {
		s.pgmoatB.proc.stop(30 * time.Second)
	}
	return m, recs, nil
}

// hasRelay reports whether ts has a relay (a target whose CPU the bench
// reads).
func hasRelay(ts []target) bool {
	for _, t := range ts {
		if t.PID != nil {
			return true
		}
	}
	return false
}

// planTime estimates how long p takes: each run's -T and a little more.
func planTime(p []plannedRun, d time.Duration, cpus int) time.Duration {
	var total time.Duration
	for _, pr := range p {
		r := pgbenchRun{Clients: pr.Cell.Clients, Jobs: min(pr.Cell.Clients, cpus), Duration: d}
		total += time.Duration(r.seconds())*time.Second + 300*time.Millisecond
	}
	return total
}

// pgmoatSteps runs the steps that measure pgmoat alone, each on a fresh
// pgmoat: idle sessions, pending holds, streaming. A step that fails is a
// problem of the run, not the end of it.
func (r *benchRun) pgmoatSteps(ctx context.Context, m *matrix) error {
	o, s, rep := r.o, r.s, r.rep
	if !hasTarget(o, targetPgmoat) {
		return nil
	}
	if o.IdleSessions > 0 {
		r.logf("memory: %d idle sessions through pgmoat", o.IdleSessions)
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
	if o.PendingHolds > 0 {
		r.logf("pending holds: -S -M prepared -c 8 through pgmoat with none and with %d holds pending, %d round(s)", o.PendingHolds, o.Rounds)
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
	if o.GuardedRuns > 0 {
		r.logf("guarded execution: %d statements of each kind, through pgmoat and direct", o.GuardedRuns)
		g, err := s.guardedStep(ctx, o.GuardedRuns)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			rep.Problems = append(rep.Problems, "guarded execution step failed: "+err.Error())
		} else {
			rep.Guarded = &g
		}
	}
	if o.StreamBytes > 0 {
		for _, kind := range []streamKind{streamCopy, streamSelect} {
			r.logf("memory: %s of %s through pgmoat", kind, fmtBytes(o.StreamBytes))
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
	return nil
}

// writeResults writes the report, the CSV and the chart to the work
// directory, then moves them into place together so that latest.* always
// come from one run, and prints the report.
func (r *benchRun) writeResults(ctx context.Context, stdout io.Writer, began time.Time) error {
	o, dir, rep := r.o, r.dir, r.rep
	for _, spec := range []chartSpec{tpsChart(rep), cpuChart(rep)} {
		if spec.File == "cpu.png" && len(spec.Targets) == 0 {
			continue // no relay ran
		}
		if err := drawChart(ctx, rep, spec, dir); err != nil {
			rep.Problems = append(rep.Problems, "no chart: "+err.Error())
			r.logf("no chart: %v", err)
			continue
		}
		rep.Charts = append(rep.Charts, spec.File)
	}
	var md strings.Builder
	rep.write(&md)
	if err := os.WriteFile(filepath.Join(dir, "latest.md"), []byte(md.String()), 0o644); err != nil {
		return err
	}
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return err
	}
	files := append([]string{"latest.md", "latest.csv"}, rep.Charts...)
	for _, f := range files {
		if err := copyFile(filepath.Join(dir, f), filepath.Join(o.Out, f)); err != nil {
			return err
		}
	}
	fmt.Fprint(stdout, md.String())
	r.logf("wrote %s in %s", strings.Join(prefixAll(o.Out+"/", files), ", "), time.Since(began).Round(time.Second))
	if len(rep.Problems) > 0 {
		return fmt.Errorf("%d problem(s) in this run; see %s", len(rep.Problems), filepath.Join(o.Out, "latest.md"))
	}
	return nil
}
