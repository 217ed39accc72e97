package proxy

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgmoat/pgmoat/internal/pgtest"
)

// raiseDO is a DO block that makes the server itself raise code, so the
// client sees the server's own error semantics (an aborted transaction, a
// pipeline skipped to Sync).
func raiseDO(code, msg string) string {
	return "DO $pgmoat$ BEGIN RAISE EXCEPTION USING ERRCODE = '" + code + "', MESSAGE = '" + msg + "'; END $pgmoat$"
}

// testInterceptor blocks statements that mention "precious" and holds
// statements that mention "hold me" until released or cancelled: the
// smallest enforcement built only on the proxy's seams.
type testInterceptor struct {
	release chan struct{}

	mu        sync.Mutex
	seen      []byte // message types intercepted
	txAtQuery []byte // session transaction status at each Query/Parse
	users     []string
}

func (ti *testInterceptor) Intercept(ctx context.Context, s *ClientSession, m *ClientMessage) (MessageVerdict, error) {
	ti.mu.Lock()
	ti.seen = append(ti.seen, m.Type)
	ti.mu.Unlock()
	msg, err := m.Decode()
	if err != nil {
		return MessageVerdict{}, err
	}
	var sql string
	switch q := msg.(type) {
	case *pgproto3.Query:
		sql = q.String
	case *pgproto3.Parse:
		sql = q.Query
	default:
		return MessageVerdict{}, nil
	}
	ti.mu.Lock()
	ti.txAtQuery = append(ti.txAtQuery, s.TxStatus())
	ti.users = append(ti.users, s.User()+"@"+s.Database())
	ti.mu.Unlock()

	switch {
	case strings.Contains(sql, "precious"):
		return block(m.Type, raiseDO("42501", "blocked by the test interceptor")), nil
	case strings.Contains(sql, "hold me"):
		if err := s.SendToClient(&pgproto3.NoticeResponse{Severity: "NOTICE", SeverityUnlocalized: "NOTICE", Code: "01000", Message: "held"}); err != nil {
			return MessageVerdict{}, err
		}
		cancelled := make(chan struct{})
		var once sync.Once
		s.SetCancelHook(func() bool { once.Do(func() { close(cancelled) }); return true })
		defer s.SetCancelHook(nil)
		select {
		case <-ti.release:
			return MessageVerdict{}, nil
		case <-cancelled:
			return block(m.Type, raiseDO("57014", "canceling statement due to user request")), nil
		case <-ctx.Done():
			return MessageVerdict{}, ctx.Err()
		}
	}
	return MessageVerdict{}, nil
}

func block(typ byte, do string) MessageVerdict {
	if typ == 'Q' {
		return MessageVerdict{Action: Replace, Rewrite: &Rewrite{Replacement: []Injected{{Msg: &pgproto3.Query{String: do}}}}}
	}
	return MessageVerdict{Action: Replace, Rewrite: &Rewrite{
		Replacement: []Injected{
			{Msg: &pgproto3.Parse{Query: do}, HideReply: true},
			{Msg: &pgproto3.Bind{}, HideReply: true},
			{Msg: &pgproto3.Execute{}, HideReply: true},
		},
		DiscardUntilSync: true,
	}}
}

// TestInterceptorSeams drives the Interceptor seams with a real server:
// Replace with hidden replies, DiscardUntilSync, SendToClient, and the
// cancel hook, in the simple and extended protocols and in a pipeline.
//
// It runs twice: with an Interceptor the sessions run in the goroutine
// relay with, and with one that also implements TryInterceptor, whose
// sessions run in the event loop and leave it for the held and blocked
// statements.
func TestInterceptorSeams(t *testing.T) {
	t.Run("goroutine relay", func(t *testing.T) {
		ti := &testInterceptor{release: make(chan struct{})}
		testInterceptorSeams(t, ti, ti)
	})
	t.Run("event loop", func(t *testing.T) {
		ti := &testInterceptor{release: make(chan struct{})}
		testInterceptorSeams(t, ti, tryInterceptorFor(ti))
	})
}

func testInterceptorSeams(t *testing.T, ti *testInterceptor, icpt Interceptor) {
	c := pgtest.Get(t)
	db := c.NewDatabase(t)
	c.Exec(t, db, "CREATE TABLE precious (v int); INSERT INTO precious VALUES (1); CREATE TABLE journal (v int)")
	p := startProxy(t, Options{Interceptor: icpt})
	ctx := ctxTimeout(t, time.Minute)
	direct := directConn(t, db)
	count := func(table string) int {
		var n int
		if err := direct.QueryRow(ctx, "SELECT count(*) FROM "+table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	t.Run("simple protocol in a transaction", func(t *testing.T) {
		conn := p.superConn(t, db)
		pc := conn.PgConn()
		_, err := pc.Exec(ctx, "BEGIN; INSERT INTO journal VALUES (1)").ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		_, err = pc.Exec(ctx, "DROP TABLE precious").ReadAll()
		if pgCode(err) != "42501" {
			t.Fatalf("got %v, want 42501", err)
		}
		if pc.TxStatus() != 'E' {
			t.Errorf("transaction status %q after the block, want 'E': the server's transaction must be aborted", pc.TxStatus())
		}
		res, err := pc.Exec(ctx, "COMMIT").ReadAll()
		if err != nil || res[0].CommandTag.String() != "ROLLBACK" {
			t.Fatalf("COMMIT after a block: %v %v", res, err)
		}
		if count("journal") != 0 || count("precious") != 1 {
			t.Error("the transaction was half applied")
		}
	})

	t.Run("extended protocol", func(t *testing.T) {
		conn := p.superConn(t, db)
		_, err := conn.Exec(ctx, "DELETE FROM precious WHERE v = $1", 1)
		if pgCode(err) != "42501" {
			t.Fatalf("got %v, want 42501", err)
		}
		// The session is in sync: prepared statements still work.
		var n int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM journal WHERE v > $1", 0).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if count("precious") != 1 {
			t.Error("the blocked DELETE ran")
		}
	})

	t.Run("pipeline discards up to Sync", func(t *testing.T) {
		conn := p.superConn(t, db)
		b := &pgx.Batch{}
		b.Queue("INSERT INTO journal VALUES ($1)", 10)
		b.Queue("UPDATE precious SET v = $1", 0)
		b.Queue("INSERT INTO journal VALUES ($1)", 11)
		err := conn.SendBatch(ctx, b).Close()
		if pgCode(err) != "42501" {
			t.Fatalf("got %v, want 42501", err)
		}
		if count("journal") != 0 {
			t.Error("statements of the blocked pipeline ran")
		}
		if err := conn.Ping(ctx); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("hold, notice, release", func(t *testing.T) {
		var notices []string
		conn := connectWithNotices(t, p.connString(c.Superuser, c.SuperPassword, db), &notices)
		go func() {
			time.Sleep(200 * time.Millisecond)
			ti.release <- struct{}{}
		}()
		var s string
		if err := conn.QueryRow(ctx, "SELECT 'hold me'").Scan(&s); err != nil || s != "hold me" {
			t.Fatalf("held query: %q, %v", s, err)
		}
		if len(notices) != 1 || notices[0] != "held" {
			t.Errorf("notices %q", notices)
		}
	})

	t.Run("hold withdrawn by a cancel", func(t *testing.T) {
		conn := p.superConn(t, db)
		pc := conn.PgConn()
		done := make(chan error, 1)
		go func() {
			_, err := pc.Exec(context.Background(), "SELECT 'hold me'").ReadAll()
			done <- err
		}()
		eventually(t, 10*time.Second, "the hold", func() bool {
			ti.mu.Lock()
			defer ti.mu.Unlock()
			return len(ti.users) > 0 && ti.seen[len(ti.seen)-1] == 'Q'
		})
		time.Sleep(100 * time.Millisecond)
		if err := pc.CancelRequest(ctx); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			if pgCode(err) != "57014" {
				t.Fatalf("got %v, want 57014", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("the cancel did not reach the hold")
		}
		if !strings.Contains(p.logs.String(), "cancel request handled by pgmoat") {
			t.Error("cancel not handled by the hook")
		}
	})

	ti.mu.Lock()
	defer ti.mu.Unlock()
	for _, u := range ti.users {
		if u != c.Superuser+"@"+db {
			t.Errorf("session identity %q", u)
		}
	}
	if !strings.ContainsRune(string(ti.txAtQuery), 'T') {
		t.Errorf("transaction status never 'T' at a statement: %q", ti.txAtQuery)
	}
}

// TestInterceptorSeesNoCopyData makes sure CopyData bypasses the
// interceptor (it streams) while the COPY statement itself does not.
func TestInterceptorSeesNoCopyData(t *testing.T) {
	c := pgtest.Get(t)
	db := c.NewDatabase(t)
	c.Exec(t, db, "CREATE TABLE j (v int)")
	ti := &testInterceptor{release: make(chan struct{})}
	p := startProxy(t, Options{Interceptor: ti})
	conn := p.superConn(t, db)
	_, err := conn.PgConn().CopyFrom(ctxTimeout(t, time.Minute), strings.NewReader("1\n2\n3\n"), "COPY j FROM STDIN")
	if err != nil {
		t.Fatal(err)
	}
	ti.mu.Lock()
	defer ti.mu.Unlock()
	if strings.ContainsRune(string(ti.seen), 'd') || !strings.ContainsRune(string(ti.seen), 'c') {
		t.Errorf("intercepted types %q: want CopyDone but no CopyData", ti.seen)
	}
}
