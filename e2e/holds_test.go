package e2e

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"

	"github.com/pgmoat/pgmoat/admin"
	"github.com/pgmoat/pgmoat/approvals"
	"github.com/pgmoat/pgmoat/audit"
	"github.com/pgmoat/pgmoat/internal/clients"
	"github.com/pgmoat/pgmoat/internal/moattest"
	"github.com/pgmoat/pgmoat/internal/pgtest"
)

// deployer connects as the application the hold rule selects.
const deployer = "application_name=deployer"

// heldSession is a deployer session running one statement in the
// background, and the notices it received.
type heldSession struct {
	conn    *pgx.Conn
	notices chan *pgconn.Notice
	done    chan stmtResult
	cancel  context.CancelFunc
}

// startHeld connects through m as deployer and runs sql in the background
// (simple protocol unless extended).
func startHeld(t *testing.T, m *moattest.Moat, db, sql string, extended bool, configure ...func(*pgx.ConnConfig)) *heldSession {
	t.Helper()
	h := &heldSession{notices: make(chan *pgconn.Notice, 10), done: make(chan stmtResult, 1)}
	configure = append(configure, func(cfg *pgx.ConnConfig) {
		cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) { h.notices <- n }
	})
	h.conn = connect(t, m.SuperConnString(db, deployer), configure...)
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	t.Cleanup(cancel)
	go func() {
		var tag pgconn.CommandTag
		var err error
		if extended {
			err = h.conn.PgConn().ExecParams(ctx, sql, nil, nil, nil, nil).Read().Err
		} else {
			tag, err = h.conn.Exec(ctx, sql)
		}
		h.done <- stmtResult{err: err, tag: tag.String()}
	}()
	return h
}

// holdNotice waits for the notice saying the statement is held and
// returns the hold id it names.
func (h *heldSession) holdNotice(t *testing.T) string {
	t.Helper()
	select {
	case n := <-h.notices:
		id := noticeHoldID(n)
		if id == "" || n.Severity != "NOTICE" || !strings.Contains(n.Hint, id) {
			t.Fatalf("notice is not a hold notice naming its id in the hint: %+v", n)
		}
		return id
	case r := <-h.done:
		t.Fatalf("statement answered without a hold notice: tag=%q err=%v", r.tag, r.err)
	case <-time.After(30 * time.Second):
		t.Fatal("no hold notice after 30s")
	}
	return ""
}

// TestHoldApprove holds a DROP, checks the client was told before anyone
// approved and nothing ran, approves it with the CLI (and, in the extended
// protocol, the API) and checks the table is really gone.
func TestHoldApprove(t *testing.T) {
	c := pgtest.Get(t)
	db := newDB(t, c)
	m := moattest.Start(t, c, moattest.Options{Config: holdPolicy})
	pg := direct(t, c, db)

	t.Run("simple protocol, CLI", func(t *testing.T) {
		h := startHeld(t, m, db, "DROP TABLE users", false)
		id := h.holdNotice(t)
		info, err := approver(m, false).GetHold(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if info.Status != approvals.StatusPending || info.Statement != "DROP TABLE users" || info.Application != "deployer" ||
			info.Database != db || info.Rule != "deploys" || len(info.Approvals) != 0 {
			t.Fatalf("hold as the API shows it: %+v", info)
		}
		time.Sleep(200 * time.Millisecond) // give a wrongly forwarded statement time to run
		notReturned(t, h.done, "DROP TABLE users")
		wantTable(t, pg, "public.users", 3)

		out, errOut, code := pgmoatCLI(t, m, moattest.ApproverToken, "holds", "approve", id, "--reason", "drop reviewed in PR 12")
		if code != 0 || !strings.Contains(out, "approved") {
			t.Fatalf("pgmoat holds approve: exit %d\n%s%s", code, out, errOut)
		}
		r := await(t, h.done, 30*time.Second, "DROP TABLE users after approval")
		if r.err != nil || r.tag != "DROP TABLE" {
			t.Fatalf("after approval: tag %q, err %v", r.tag, r.err)
		}
		if tableExists(t, pg, "public.users") {
			t.Fatal("users still exists after the approved DROP")
		}
		final := waitHoldStatus(t, m, id, approvals.StatusApproved)
		if len(final.Approvals) != 1 || final.Approvals[0].Approver != "alice" || final.Approvals[0].Reason != "drop reviewed in PR 12" {
			t.Errorf("approvals: %+v", final.Approvals)
		}
		wantUsable(t, h.conn)
	})

	t.Run("extended protocol, API", func(t *testing.T) {
		h := startHeld(t, m, db, "TRUNCATE orders", true)
		id := h.holdNotice(t)
		notReturned(t, h.done, "TRUNCATE orders")
		wantTable(t, pg, "public.orders", 3)
		if _, err := approver(m, true).Approve(context.Background(), id, "cleanup ticket 7"); err != nil {
			t.Fatal(err)
		}
		if r := await(t, h.done, 30*time.Second, "TRUNCATE after approval"); r.err != nil {
			t.Fatalf("after approval: %v", r.err)
		}
		wantTable(t, pg, "public.orders", 0)
		wantUsable(t, h.conn)
	})
}

// TestHoldDeny: the client gets 42501 with the denier and the reason, and
// the table stays; in the simple and the extended protocol.
func TestHoldDeny(t *testing.T) {
	c := pgtest.Get(t)
	db := newDB(t, c)
	m := moattest.Start(t, c, moattest.Options{Config: holdPolicy})
	pg := direct(t, c, db)

	h := startHeld(t, m, db, "DROP TABLE users", false)
	id := h.holdNotice(t)
	out, errOut, code := pgmoatCLI(t, m, moattest.Approver2Token, "holds", "deny", id, "--reason", "not during business hours")
	if code != 0 {
		t.Fatalf("pgmoat holds deny: exit %d\n%s%s", code, out, errOut)
	}
	r := await(t, h.done, 30*time.Second, "denied DROP")
	pe := wantCode(t, r.err, "42501", "denied DROP")
	if !strings.Contains(pe.Message, id) || !strings.Contains(pe.Message, "denied by bob") || !strings.Contains(pe.Message, "not during business hours") {
		t.Errorf("message %q does not name the hold, the denier and the reason", pe.Message)
	}
	wantTable(t, pg, "public.users", 3)
	if info := waitHoldStatus(t, m, id, approvals.StatusDenied); info.ResolvedBy != "bob" {
		t.Errorf("resolved by %q, want bob", info.ResolvedBy)
	}
	// A decided hold cannot be approved any more.
	_, err := approver(m, false).Approve(context.Background(), id, "too late")
	var ae *admin.APIError
	if !errors.As(err, &ae) || ae.StatusCode != 409 {
		t.Errorf("approving a denied hold: %v, want HTTP 409", err)
	}
	wantUsable(t, h.conn)
	wantTable(t, pg, "public.users", 3)

	// In the extended protocol the client has sent Bind, Describe,
	// Execute and Sync behind the held Parse: after the denial they are
	// skipped as after any error, and the session goes on.
	h = startHeld(t, m, db, "TRUNCATE orders", true)
	id = h.holdNotice(t)
	if _, err := approver(m, false).Deny(context.Background(), id, "wrong table"); err != nil {
		t.Fatal(err)
	}
	r = await(t, h.done, 30*time.Second, "denied TRUNCATE")
	if pe := wantCode(t, r.err, "42501", "denied TRUNCATE (extended)"); !strings.Contains(pe.Message, "wrong table") {
		t.Errorf("message %q does not give the reason", pe.Message)
	}
	wantUsable(t, h.conn)
	wantTable(t, pg, "public.orders", 3)
}

// TestHoldTimeout: with holds.timeout 2s an unanswered hold ends in 42501
// saying it timed out.
func TestHoldTimeout(t *testing.T) {
	c := pgtest.Get(t)
	db := newDB(t, c)
	m := moattest.Start(t, c, moattest.Options{Config: holdPolicy + "holds:\n  timeout: 2s\n"})
	pg := direct(t, c, db)

	start := time.Now()
	h := startHeld(t, m, db, "DROP TABLE users", false)
	id := h.holdNotice(t)
	r := await(t, h.done, 30*time.Second, "held DROP")
	pe := wantCode(t, r.err, "42501", "timed-out DROP")
	if !strings.Contains(pe.Message, id) || !strings.Contains(pe.Message, "timed out after 2s") {
		t.Errorf("message %q does not say hold %s timed out after 2s", pe.Message, id)
	}
	if waited := time.Since(start); waited < 2*time.Second {
		t.Errorf("answered after %s, before the 2s timeout", waited)
	}
	waitHoldStatus(t, m, id, approvals.StatusTimedOut)
	wantTable(t, pg, "public.users", 3)
	wantUsable(t, h.conn)
}

// TestHoldCancel: Ctrl-C in psql (SIGINT: psql sends a CancelRequest) and
// a cancelled pgx context both withdraw the hold; a client that sent a
// CancelRequest gets 57014 and keeps its session; nothing runs.
func TestHoldCancel(t *testing.T) {
	c := pgtest.Get(t)
	db := newDB(t, c)
	m := moattest.Start(t, c, moattest.Options{Config: holdPolicy})
	pg := direct(t, c, db)

	t.Run("psql Ctrl-C", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd, err := clients.PsqlCommand(ctx, m.SuperConnString(db, deployer), "-c", `\set VERBOSITY verbose`, "-c", "DROP TABLE users")
		if err != nil {
			t.Fatal(err)
		}
		var out, errOut strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errOut
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		hold := waitHolds(t, m, 1)[0]
		if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		err = cmd.Wait()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 1 {
			t.Errorf("psql: %v, want exit status 1", err)
		}
		if !strings.Contains(errOut.String(), "ERROR:  57014: canceling statement due to user request") {
			t.Errorf("psql stderr:\n%s\nwant 57014 canceling statement due to user request", errOut.String())
		}
		if !strings.Contains(errOut.String(), "pgmoat is holding this statement") {
			t.Errorf("psql did not show the hold notice:\n%s", errOut.String())
		}
		info := waitHoldStatus(t, m, hold.ID, approvals.StatusWithdrawn)
		if !strings.Contains(info.Resolution, "cancel") {
			t.Errorf("resolution %q does not say the client cancelled", info.Resolution)
		}
		wantTable(t, pg, "public.users", 3)
	})

	for _, extended := range []bool{false, true} {
		t.Run(fmt.Sprintf("pgx context, CancelRequest, extended=%v", extended), func(t *testing.T) {
			// pgx sends a CancelRequest when the context is cancelled
			// (and gives the server 10s to answer before it closes the
			// connection).
			h := startHeld(t, m, db, "DROP TABLE users", extended, func(cfg *pgx.ConnConfig) {
				cfg.BuildContextWatcherHandler = func(pc *pgconn.PgConn) ctxwatch.Handler {
					return &pgconn.CancelRequestContextWatcherHandler{Conn: pc, DeadlineDelay: 10 * time.Second}
				}
			})
			id := h.holdNotice(t)
			h.cancel()
			r := await(t, h.done, 30*time.Second, "cancelled DROP")
			pe := wantCode(t, r.err, "57014", "cancelled DROP")
			if pe.Message != "canceling statement due to user request" {
				t.Errorf("message %q", pe.Message)
			}
			waitHoldStatus(t, m, id, approvals.StatusWithdrawn)
			wantTable(t, pg, "public.users", 3)
			wantUsable(t, h.conn)
		})
	}

	t.Run("pgx context, default handler", func(t *testing.T) {
		// pgx's default answer to a cancelled context is to close the
		// connection: a disconnect.
		h := startHeld(t, m, db, "DROP TABLE users", false)
		id := h.holdNotice(t)
		h.cancel()
		if r := await(t, h.done, 30*time.Second, "cancelled DROP"); r.err == nil {
			t.Fatal("cancelled DROP succeeded")
		}
		waitHoldStatus(t, m, id, approvals.StatusWithdrawn)
		wantTable(t, pg, "public.users", 3)
	})
}

// TestHoldClientDisconnect: a client that goes away while held withdraws
// the hold, and its statement never runs (its server session ends).
func TestHoldClientDisconnect(t *testing.T) {
	c := pgtest.Get(t)
	db := newDB(t, c)
	m := moattest.Start(t, c, moattest.Options{Config: holdPolicy})
	pg := direct(t, c, db)
	ctx := context.Background()

	// gone waits until no deployer session is left on the server, so
	// that nothing can still be forwarded.
	gone := func(t *testing.T) {
		moattest.WaitFor(t, 30*time.Second, "the deployer's server session to end", func() bool {
			var n int
			if err := pg.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'deployer'").Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n == 0
		})
	}

	t.Run("psql killed", func(t *testing.T) {
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		cmd, err := clients.PsqlCommand(cctx, m.SuperConnString(db, deployer), "-c", "DROP TABLE users")
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		hold := waitHolds(t, m, 1)[0]
		cmd.Process.Kill()
		cmd.Wait()
		info := waitHoldStatus(t, m, hold.ID, approvals.StatusWithdrawn)
		if !strings.Contains(info.Resolution, "disconnect") {
			t.Errorf("resolution %q does not say the client disconnected", info.Resolution)
		}
		gone(t)
		wantTable(t, pg, "public.users", 3)
	})

	t.Run("pgx connection closed", func(t *testing.T) {
		h := startHeld(t, m, db, "TRUNCATE orders", false)
		id := h.holdNotice(t)
		h.conn.PgConn().Conn().Close()
		await(t, h.done, 30*time.Second, "TRUNCATE on a closed connection")
		waitHoldStatus(t, m, id, approvals.StatusWithdrawn)
		gone(t)
		// Approving now is refused and runs nothing.
		if _, err := approver(m, false).Approve(ctx, id, "too late"); err == nil {
			t.Error("approving a withdrawn hold succeeded")
		}
		wantTable(t, pg, "public.orders", 3)
	})

	t.Run("Terminate, socket left open", func(t *testing.T) {
		// pgx does this when a context is cancelled: CancelRequest,
		// then Terminate, then it reads until the server closes (up to
		// 15s). Terminate is the protocol's goodbye; a hold must not
		// stay approvable after it.
		h := startHeld(t, m, db, "DROP TABLE users", false)
		id := h.holdNotice(t)
		if _, err := h.conn.PgConn().Conn().Write([]byte{'X', 0, 0, 0, 4}); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			info, err := approver(m, false).GetHold(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if info.Status != approvals.StatusPending {
				break
			}
			if time.Now().After(deadline) {
				// Show the consequence: an approval now runs the DROP
				// of a client that has said goodbye.
				_, err := approver(m, false).Approve(ctx, id, "late")
				time.Sleep(300 * time.Millisecond)
				t.Fatalf("hold still pending 5s after the client sent Terminate; approving it: %v; users exists afterwards: %v",
					err, tableExists(t, pg, "public.users"))
			}
			time.Sleep(50 * time.Millisecond)
		}
		waitHoldStatus(t, m, id, approvals.StatusWithdrawn)
		wantTable(t, pg, "public.users", 3)
	})
}

// TestHoldTwoApprovals: with holds.approvals_required 2, one approval
// keeps the hold pending, the same approver twice is 409, and a second
// distinct approver releases it.
func TestHoldTwoApprovals(t *testing.T) {
	c := pgtest.Get(t)
	db := newDB(t, c)
	m := moattest.Start(t, c, moattest.Options{Config: holdPolicy + "holds:\n  approvals_required: 2\n"})
	pg := direct(t, c, db)
	ctx := context.Background()

	h := startHeld(t, m, db, "DROP TABLE users", false)
	id := h.holdNotice(t)
	info, err := approver(m, false).Approve(ctx, id, "looks right")
	if err != nil {
		t.Fatal(err)
	}
	if info.Status != approvals.StatusPending || len(info.Approvals) != 1 || info.ApprovalsRequired != 2 {
		t.Fatalf("after one approval: %+v", info)
	}
	_, err = approver(m, false).Approve(ctx, id, "still looks right")
	var ae *admin.APIError
	if !errors.As(err, &ae) || ae.StatusCode != 409 {
		t.Fatalf("alice approving twice: %v, want HTTP 409", err)
	}
	// The CLI says so too.
	_, errOut, code := pgmoatCLI(t, m, moattest.ApproverToken, "holds", "approve", id, "--reason", "third time")
	if code == 0 || !strings.Contains(errOut, "409") {
		t.Errorf("pgmoat holds approve by the same approver: exit %d, %s", code, errOut)
	}
	time.Sleep(200 * time.Millisecond)
	notReturned(t, h.done, "DROP with one approval of two")
	wantTable(t, pg, "public.users", 3)

	if _, err := approver(m, true).Approve(ctx, id, "agreed"); err != nil {
		t.Fatal(err)
	}
	if r := await(t, h.done, 30*time.Second, "DROP after two approvals"); r.err != nil {
		t.Fatalf("after two approvals: %v", r.err)
	}
	if tableExists(t, pg, "public.users") {
		t.Fatal("users still exists after two approvals")
	}
	final := waitHoldStatus(t, m, id, approvals.StatusApproved)
	var names []string
	for _, a := range final.Approvals {
		names = append(names, a.Approver)
	}
	if !slices.Equal(names, []string{"alice", "bob"}) {
		t.Errorf("approvers %v, want [alice bob]", names)
	}
}

// TestHoldInTransaction: by default a statement that would be held inside
// a transaction block is blocked at once with a hint to pre-approve; with
// holds.in_transaction: hold it is held, for at most
// in_transaction_timeout.
func TestHoldInTransaction(t *testing.T) {
	c := pgtest.Get(t)
	ctx := context.Background()

	t.Run("block (default)", func(t *testing.T) {
		db := newDB(t, c)
		m := moattest.Start(t, c, moattest.Options{Config: holdPolicy})
		pg := direct(t, c, db)
		conn := connect(t, m.SuperConnString(db, deployer))
		execOK(t, conn, "BEGIN")
		execOK(t, conn, "INSERT INTO audit_log(msg) VALUES ('before')")
		start := time.Now()
		_, err := conn.Exec(ctx, "DROP TABLE users")
		pe := wantCode(t, err, "42501", "DROP in a transaction")
		if !strings.Contains(pe.Hint, "pre-approve") || !strings.Contains(pe.Hint, "pgmoat approve") {
			t.Errorf("hint %q does not say how to pre-approve", pe.Hint)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("the refusal took %s; it must not wait for a hold", d)
		}
		if tag := execOK(t, conn, "COMMIT"); tag.String() != "ROLLBACK" {
			t.Errorf("COMMIT: %s, want ROLLBACK", tag)
		}
		if holds, err := approver(m, false).ListHolds(ctx); err != nil || len(holds) != 0 {
			t.Errorf("holds: %v, %v; want none", holds, err)
		}
		wantTable(t, pg, "public.users", 3)
		wantTable(t, pg, "public.audit_log", 0)
		// The metrics say what the audit log says: block, not hold.
		evs := waitAudit(t, m.AuditPath, "decision", func(ev audit.Event) bool { return ev.Kind == audit.Decision })
		if evs[0].Decision != "block" {
			t.Errorf("audit decision %q, want block", evs[0].Decision)
		}
		waitMetric(t, m, "pgmoat_statements_total", map[string]string{"decision": "block", "operation": "drop"}, 1)
		fams := scrapeMetrics(t, m)
		if v := metricValue(t, fams, "pgmoat_statements_total", map[string]string{"decision": "hold", "operation": "drop"}); v != 0 {
			t.Errorf("pgmoat_statements_total{decision=hold,operation=drop} = %v, want 0", v)
		}
	})

	t.Run("hold", func(t *testing.T) {
		db := newDB(t, c)
		m := moattest.Start(t, c, moattest.Options{Config: holdPolicy +
			"holds:\n  timeout: 10m\n  in_transaction: hold\n  in_transaction_timeout: 2s\n"})
		pg := direct(t, c, db)

		// Approved inside the transaction: the DROP runs and commits
		// with it.
		h := startHeld(t, m, db, "BEGIN; INSERT INTO audit_log(msg) VALUES ('before')", false)
		if r := await(t, h.done, 30*time.Second, "BEGIN"); r.err != nil {
			t.Fatal(r.err)
		}
		done := make(chan stmtResult, 1)
		go func() {
			tag, err := h.conn.Exec(ctx, "DROP TABLE orders")
			done <- stmtResult{err: err, tag: tag.String()}
		}()
		h.done = done
		id := h.holdNotice(t)
		info, err := approver(m, false).GetHold(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if d := info.ExpiresAt.Sub(info.CreatedAt); d != 2*time.Second {
			t.Errorf("hold in a transaction expires after %s, want in_transaction_timeout 2s", d)
		}
		if _, err := approver(m, false).Approve(ctx, id, "ok"); err != nil {
			t.Fatal(err)
		}
		if r := await(t, done, 30*time.Second, "DROP after approval"); r.err != nil {
			t.Fatal(r.err)
		}
		execOK(t, h.conn, "COMMIT")
		if tableExists(t, pg, "public.orders") {
			t.Error("orders exists after the approved DROP was committed")
		}
		wantTable(t, pg, "public.audit_log", 1)

		// Unanswered: it times out after 2s and the transaction is
		// aborted, so COMMIT rolls back.
		conn := connect(t, m.SuperConnString(db, deployer))
		execOK(t, conn, "BEGIN")
		execOK(t, conn, "INSERT INTO audit_log(msg) VALUES ('second')")
		_, err = conn.Exec(ctx, "DROP TABLE users")
		pe := wantCode(t, err, "42501", "held DROP in a transaction")
		if !strings.Contains(pe.Message, "timed out after 2s") {
			t.Errorf("message %q does not say it timed out after 2s", pe.Message)
		}
		if tag := execOK(t, conn, "COMMIT"); tag.String() != "ROLLBACK" {
			t.Errorf("COMMIT: %s, want ROLLBACK", tag)
		}
		wantTable(t, pg, "public.users", 3)
		wantTable(t, pg, "public.audit_log", 1)
	})
}

// TestManyHoldsDoNotSlowOthers holds 200 sessions at once (each keeps its
// server connection) and measures SELECT 1 from an unrelated session
// before and during: pending holds must cost other sessions nothing
// noticeable. The bound is generous: this is a behaviour check on a
// shared 2-core machine, not a benchmark.
func TestManyHoldsDoNotSlowOthers(t *testing.T) {
	const held = 200
	c := pgtest.Get(t)
	db := newDB(t, c)
	m := moattest.Start(t, c, moattest.Options{Config: holdPolicy})
	ctx := context.Background()
	pg := direct(t, c, db)

	other := connect(t, m.SuperConnString(db))
	before := medianLatency(t, other, 300)

	type outcome struct {
		err error
	}
	results := make(chan outcome, held)
	conns := make([]*pgx.Conn, held)
	var wg sync.WaitGroup
	for i := range held {
		conns[i] = connect(t, m.SuperConnString(db, deployer))
	}
	for i := range held {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := conns[i].Exec(ctx, fmt.Sprintf("DROP TABLE users /* session %d */", i))
			results <- outcome{err}
		}()
	}
	holds := waitHolds(t, m, held)
	during := medianLatency(t, other, 300)
	t.Logf("SELECT 1 median: %s before, %s with %d holds pending", before, during, len(holds))
	if limit := 3*before + 5*time.Millisecond; during > limit {
		t.Errorf("SELECT 1 median %s with %d holds pending, over %s (3x %s + 5ms)", during, held, limit, before)
	}

	// Deny them all; every held session gets its 42501 and the table
	// stays.
	var dwg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for _, h := range holds {
		dwg.Add(1)
		sem <- struct{}{}
		go func() {
			defer dwg.Done()
			defer func() { <-sem }()
			if _, err := approver(m, false).Deny(ctx, h.ID, "load test"); err != nil {
				t.Errorf("deny %s: %v", h.ID, err)
			}
		}()
	}
	dwg.Wait()
	wg.Wait()
	close(results)
	for r := range results {
		if stateOf(r.err) != "42501" {
			t.Errorf("held session after deny: %v, want 42501", r.err)
			break
		}
	}
	wantTable(t, pg, "public.users", 3)
}

// medianLatency runs SELECT 1 n times and returns the median round trip.
func medianLatency(t *testing.T, conn *pgx.Conn, n int) time.Duration {
	t.Helper()
	ctx := context.Background()
	d := make([]time.Duration, n)
	for i := range d {
		start := time.Now()
		var one int
		if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
			t.Fatal(err)
		}
		d[i] = time.Since(start)
	}
	slices.Sort(d)
	return d[n/2]
}
