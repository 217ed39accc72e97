package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgmoat/pgmoat/admin"
	"github.com/pgmoat/pgmoat/approvals"
)

// heldStatement is what every session of the pending-holds step sends:
// destructive on a protected table (every row of pgbench_history), so the
// bench policy's rule for holdApp holds it. It must never run.
const heldStatement = "DELETE FROM pgbench_history"

// holdNoticePrefix starts the NOTICE pgmoat sends a client whose
// statement it holds.
const holdNoticePrefix = "pgmoat is holding this statement"

// Targets of the pending-holds step's runs, as runRecord.Target.
const (
	holdsNone    = "none pending"
	holdsPending = "holds pending"
)

// holdsResult is the pending-holds step's outcome: the same pgbench run
// through pgmoat with no holds pending and with Holds pending, in
// alternating order, round after round.
type holdsResult struct {
	Holds       int         // held sessions per round
	Runs        []runRecord // in the order they ran; Target is holdsNone or holdsPending
	BaseRSS     int64       // pgmoat before the first held session opened
	HeldRSS     int64       // with every hold of the first round pending
	OpenSeconds float64     // the longest time from the first connect to every hold pending
	Notices     int         // hold NOTICEs the held sessions received, fewest in a round
	HistoryRows int64       // pgbench_history's rows, the same before and after
}

// stats are the medians of the runs with none and with Holds pending.
func (h holdsResult) stats() (none, pending stat) {
	st := summarize(h.Runs)
	for k, s := range st {
		switch k.Target {
		case holdsNone:
			none = s
		case holdsPending:
			pending = s
		}
	}
	return none, pending
}

// latencyRatio is the median latency with holds pending over the median
// latency with none; NaN unless both have a median.
func (h holdsResult) latencyRatio() float64 {
	none, pending := h.stats()
	if !none.ok() || !pending.ok() || none.LatencyMS == 0 {
		return math.NaN()
	}
	return pending.LatencyMS / none.LatencyMS
}

// holdsStep measures what n pending holds do to other sessions: on a fresh
// pgmoat, rounds of one pgbench -S -M prepared run (8 clients) with no
// holds pending and one with n pending, in alternating order. Before each
// run with holds, n sessions (application_name holdApp) connect through
// pgmoat and send heldStatement; the step waits until pgmoat's admin API
// lists n pending holds, and after the run closes the sessions (which
// withdraws their holds) and waits until none is pending and their
// backends are gone. It fails if a held statement ends any other way, or
// if it ran: pgbench_history (given a row first) must keep its row count,
// and no backend of the held sessions may have seen the statement.
func (s *stack) holdsStep(ctx context.Context, m *matrix, n, rounds int) (holdsResult, error) {
	res := holdsResult{Holds: n, Notices: n}
	p := s.pgmoat
	if err := s.restartPgmoat(p); err != nil {
		return res, err
	}
	api := &admin.Client{BaseURL: fmt.Sprintf("http://127.0.0.1:%d", p.adminPort), Token: s.adminToken}
	if _, err := api.ListHolds(ctx); err != nil {
		return res, fmt.Errorf("pgmoat's admin API: %w", err)
	}
	// A row that DELETE FROM pgbench_history would remove, so that the
	// row count shows whether it ran even when the table was empty.
	if err := s.execDirect(ctx, "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime, filler) VALUES (0, 0, 0, 0, now(), 'pgmoat-bench-hold')"); err != nil {
		return res, err
	}
	var err error
	if res.HistoryRows, err = s.countDirect(ctx, "SELECT count(*) FROM pgbench_history"); err != nil {
		return res, err
	}
	tgt := s.targets([]string{targetPgmoat})[0]
	if err := m.warmUp(ctx, []target{tgt}, 8); err != nil {
		return res, err
	}
	if err := settle(ctx, p.pid()); err != nil {
		return res, err
	}
	mem, err := readProcMem(p.pid())
	if err != nil {
		return res, err
	}
	res.BaseRSS = mem.RSS

	cl := cell{Script: "select", Mode: "prepared", Clients: 8}
	runOnce := func(round int, name string) error {
		rec, err := m.runOne(ctx, plannedRun{Round: round, Cell: cl, Target: tgt})
		if err != nil {
			return err
		}
		rec.Target = name
		res.Runs = append(res.Runs, rec)
		m.logRun(rec, "holds step")
		if rec.Err != "" {
			// Other sessions must not notice pending holds at all.
			return fmt.Errorf("pgbench with %s: %s", name, rec.Err)
		}
		return nil
	}
	withHolds := func(round int) error {
		start := time.Now()
		hs, err := openHeld(ctx, n, s.connString(p.port, holdApp), 16)
		if err != nil {
			return err
		}
		defer hs.release()
		if err := waitHolds(ctx, api, hs, n); err != nil {
			return err
		}
		if err := s.checkHeldUpstream(ctx, n); err != nil {
			return err
		}
		res.OpenSeconds = max(res.OpenSeconds, time.Since(start).Seconds())
		if err := settle(ctx, p.pid()); err != nil {
			return err
		}
		if res.HeldRSS == 0 {
			// The first round only: later rounds start from a heap the
			// earlier ones grew, and the Go runtime returns memory to the
			// kernel slowly.
			if mem, err := readProcMem(p.pid()); err == nil {
				res.HeldRSS = mem.RSS
			}
		}
		if err := runOnce(round, holdsPending); err != nil {
			return err
		}
		if pending, err := countPending(ctx, api); err != nil || pending != n {
			return fmt.Errorf("after the run with holds pending, pgmoat lists %d pending holds of %s, want %d (%v)", pending, holdApp, n, err)
		}
		// By now every session has read its notice (the hold is listed
		// before its notice is sent).
		res.Notices = min(res.Notices, int(hs.notices.Load()))
		if err := hs.release(); err != nil {
			return err
		}
		return s.waitReleased(ctx, api)
	}
	for r := 1; r <= rounds; r++ {
		order := []bool{false, true} // with holds?
		if r%2 == 0 {
			order = []bool{true, false}
		}
		for _, held := range order {
			var err error
			if held {
				err = withHolds(r)
			} else {
				err = runOnce(r, holdsNone)
			}
			if err != nil {
				return res, err
			}
		}
	}
	after, err := s.countDirect(ctx, "SELECT count(*) FROM pgbench_history")
	if err != nil {
		return res, err
	}
	if after != res.HistoryRows {
		return res, fmt.Errorf("pgbench_history had %d rows before the step and %d after: a held %s ran", res.HistoryRows, after, heldStatement)
	}
	return res, nil
}

// checkHeldUpstream checks, on the server, that the n held sessions each
// have their backend and that none of them was sent heldStatement.
func (s *stack) checkHeldUpstream(ctx context.Context, n int) error {
	where := " FROM pg_stat_activity WHERE application_name = '" + holdApp + "'"
	backends, err := s.countDirect(ctx, "SELECT count(*)"+where)
	if err != nil {
		return err
	}
	if backends != int64(n) {
		return fmt.Errorf("the server has %d backends for %d held sessions through pgmoat", backends, n)
	}
	sent, err := s.countDirect(ctx, "SELECT count(*)"+where+" AND query ILIKE '%pgbench_history%'")
	if err != nil {
		return err
	}
	if sent != 0 {
		return fmt.Errorf("%d backends of held sessions were sent %q", sent, heldStatement)
	}
	return nil
}

// settle waits until pgmoat is quiet (under 5% of a core over 500 ms, at
// most 15 s), so that each run starts from a relay that is not still
// digesting the sessions that came or went.
func settle(ctx context.Context, pid int) error {
	return waitQuiet(ctx, pid, 0.05, 500*time.Millisecond, 15*time.Second)
}

// waitReleased waits until pgmoat lists no pending hold of holdApp and the
// server no backend of it, so that the next run starts from none.
func (s *stack) waitReleased(ctx context.Context, api *admin.Client) error {
	deadline := time.Now().Add(time.Minute)
	for {
		pending, err := countPending(ctx, api)
		if err != nil {
			return err
		}
		backends, err := s.countDirect(ctx, "SELECT count(*) FROM pg_stat_activity WHERE application_name = '"+holdApp+"'")
		if err != nil {
			return err
		}
		if pending == 0 && backends == 0 {
			return settle(ctx, s.pgmoat.pid())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("a minute after the held sessions closed, pgmoat still lists %d pending holds and the server has %d of their backends", pending, backends)
		}
		if err := sleepCtx(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
}

// waitHolds waits until pgmoat's admin API lists n pending holds of
// holdApp, then checks that none of them reached the server.
func waitHolds(ctx context.Context, api *admin.Client, hs *heldSessions, n int) error {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if err := hs.endedEarly(); err != nil {
			return err
		}
		pending, err := countPending(ctx, api)
		if err != nil {
			return err
		}
		if pending == n {
			return nil
		}
		if pending > n {
			return fmt.Errorf("pgmoat lists %d pending holds of %s for %d sessions", pending, holdApp, n)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pgmoat lists %d pending holds of %s two minutes after %d sessions sent %q", pending, holdApp, n, heldStatement)
		}
		if err := sleepCtx(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
}

// countPending asks pgmoat's admin API how many holds of holdApp are
// pending.
func countPending(ctx context.Context, api *admin.Client) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	hs, err := api.ListHolds(ctx, approvals.StatusPending)
	if err != nil {
		return 0, fmt.Errorf("GET /api/v1/holds: %w", err)
	}
	return countHolds(hs, holdApp, approvals.StatusPending), nil
}

// countHolds counts the holds of application app in status st.
func countHolds(hs []approvals.HoldInfo, app string, st approvals.Status) int {
	n := 0
	for _, h := range hs {
		if h.Application == app && h.Status == st {
			n++
		}
	}
	return n
}

// heldSessions are sessions whose statement pgmoat holds: each waits in
// Exec until release cancels it, which closes its connection and so
// withdraws its hold.
type heldSessions struct {
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	notices atomic.Int64 // hold NOTICEs received

	mu    sync.Mutex
	early []error // statements that ended before release
	once  sync.Once
}

// openHeld opens n sessions through connStr, parallel at a time, and has
// each send heldStatement without waiting for it to end.
func openHeld(ctx context.Context, n int, connStr string, parallel int) (*heldSessions, error) {
	cfg, err := pgconn.ParseConfig(connStr)
	if err != nil {
		return nil, err
	}
	hs := &heldSessions{}
	cfg.OnNotice = func(_ *pgconn.PgConn, nt *pgconn.Notice) {
		if strings.HasPrefix(nt.Message, holdNoticePrefix) {
			hs.notices.Add(1)
		}
	}
	// Sessions live until release; connecting is bounded by connect_timeout.
	hctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	hs.cancel = cancel
	stopOnCtx := context.AfterFunc(ctx, cancel)
	defer stopOnCtx()

	firstErr := parallelDo(ctx, n, parallel, func(cctx context.Context, i int) error {
		c, err := pgconn.ConnectConfig(cctx, cfg)
		if err != nil {
			return fmt.Errorf("held session %d: %w", i+1, err)
		}
		hs.wg.Add(1)
		go func() {
			defer hs.wg.Done()
			defer c.Close(context.Background())
			_, err := c.Exec(hctx, heldStatement).ReadAll()
			if hctx.Err() != nil {
				return // released: the statement was cancelled, as it should be
			}
			if err == nil {
				err = errors.New("it completed")
			}
			hs.mu.Lock()
			hs.early = append(hs.early, err)
			hs.mu.Unlock()
		}()
		return nil
	})
	if firstErr != nil {
		hs.release()
		return nil, firstErr
	}
	return hs, nil
}

// endedEarly says whether any held statement ended before release.
func (hs *heldSessions) endedEarly() error {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if len(hs.early) == 0 {
		return nil
	}
	return fmt.Errorf("%d held %s ended before the bench released them, the first with: %w", len(hs.early), heldStatement, hs.early[0])
}

// release closes every held session (their statements are cancelled
// client-side, which closes the connection: pgmoat withdraws the holds)
// and waits for them. It reports a statement that ended on its own.
func (hs *heldSessions) release() error {
	hs.once.Do(func() {
		hs.cancel()
		hs.wg.Wait()
	})
	return hs.endedEarly()
}

// execDirect runs sql on the server, not through a relay.
func (s *stack) execDirect(ctx context.Context, sql string) error {
	conn, err := s.superConn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql).ReadAll(); err != nil {
		return fmt.Errorf("%s: %w", sql, err)
	}
	return nil
}

// countDirect runs a one-number query on the server, not through a relay.
func (s *stack) countDirect(ctx context.Context, sql string) (int64, error) {
	conn, err := s.superConn(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Close(ctx)
	rs, err := conn.Exec(ctx, sql).ReadAll()
	if err != nil {
		return 0, fmt.Errorf("%s: %w", sql, err)
	}
	if len(rs) != 1 || len(rs[0].Rows) != 1 || len(rs[0].Rows[0]) != 1 {
		return 0, fmt.Errorf("%s: not one value", sql)
	}
	return strconv.ParseInt(string(rs[0].Rows[0][0]), 10, 64)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
