package proxy

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/jackc/pgx/v5"

	"github.com/pgmoat/pgmoat/config"
	"github.com/pgmoat/pgmoat/internal/moattest"
	"github.com/pgmoat/pgmoat/internal/pgtest"
)

// tryTestInterceptor is testInterceptor with a TryIntercept that settles,
// without blocking, every message the test interceptor would let through
// unchanged, so its sessions run in the event loop and leave it for the
// statements it blocks or holds.
type tryTestInterceptor struct{ *testInterceptor }

func (ti *tryTestInterceptor) TryIntercept(s *ClientSession, m *ClientMessage) (MessageVerdict, bool) {
	var sql string
	switch m.Type {
	case 'Q', 'P':
		sql = string(m.Body())
	}
	if strings.Contains(sql, "precious") || strings.Contains(sql, "hold me") {
		return MessageVerdict{}, false
	}
	return MessageVerdict{}, true
}

func tryInterceptorFor(ti *testInterceptor) Interceptor { return &tryTestInterceptor{ti} }

func (p *testProxy) loopSessions() float64 {
	return p.counter(p.met.RelaySessions.WithLabelValues("event_loop"))
}

func (p *testProxy) handoffs(reason string) float64 {
	return p.counter(p.met.EventLoopHandoffs.WithLabelValues(reason))
}

func requireLoop(t *testing.T) {
	t.Helper()
	if harnessEventLoops(t) == 0 {
		t.Skipf("the event loop is off (%s=0): this test is about it", moattest.EventLoopsEnv)
	}
}

// TestEventLoopRelays checks that plain sessions run in the event loop, and
// that every reason to leave it hands the session to the goroutine relay
// without losing or reordering a byte: a message larger than the buffer,
// a statement the interceptor must decide on its goroutine, a client that
// stops reading.
func TestEventLoopRelays(t *testing.T) {
	requireLoop(t)
	c := pgtest.Get(t)
	db := c.NewDatabase(t)
	p := startProxy(t, Options{Interceptor: tryInterceptorFor(&testInterceptor{})})
	ctx := ctxTimeout(t, time.Minute)
	direct := directConn(t, db)
	if _, err := direct.Exec(ctx, "CREATE TABLE precious (id int)"); err != nil {
		t.Fatal(err)
	}

	t.Run("small turns stay in the loop", func(t *testing.T) {
		before := p.handoffs("large_message") + p.handoffs("interceptor") + p.handoffs("backpressure")
		conn := p.superConn(t, db)
		// The session enters the loop once its startup is over, which
		// the client may learn first.
		eventually(t, 10*time.Second, "the new session counted in the event loop", func() bool { return p.loopSessions() >= 1 })
		// Simple, extended and prepared, a pipeline, an error in it,
		// a transaction.
		for i := 0; i < 200; i++ {
			var n int
			if err := conn.QueryRow(ctx, "SELECT $1::int + 1", i).Scan(&n); err != nil || n != i+1 {
				t.Fatalf("query %d: %v, %d", i, err, n)
			}
		}
		b := &pgx.Batch{}
		b.Queue("SELECT 1")
		b.Queue("SELECT 1/0")
		b.Queue("SELECT 3")
		err := conn.SendBatch(ctx, b).Close()
		if pgCode(err) != "22012" {
			t.Fatalf("batch with an error: %v, want 22012", err)
		}
		if _, err := conn.Exec(ctx, "BEGIN; SELECT 1; COMMIT", pgx.QueryExecModeSimpleProtocol); err != nil {
			t.Fatal(err)
		}
		after := p.handoffs("large_message") + p.handoffs("interceptor") + p.handoffs("backpressure")
		if after != before {
			t.Fatalf("handoffs went from %v to %v for small turns", before, after)
		}
	})

	t.Run("sessions sharing turns", func(t *testing.T) {
		// Many sessions at once, so that a turn of the loop reads,
		// relays and writes for several of them: each must get its own
		// answers, in order, while others in the same turns fail a
		// statement, leave the loop for the interceptor's goroutine or
		// disconnect.
		const sessions, rounds = 24, 60
		before := p.handoffs("interceptor")
		pc := pgtest.Get(t)
		dial := func() (*pgx.Conn, error) { return pgx.Connect(ctx, p.connString(pc.Superuser, pc.SuperPassword, db)) }
		errs := make(chan error, sessions)
		for g := 0; g < sessions; g++ {
			go func() {
				errs <- func() error {
					conn, err := dial()
					if err != nil {
						return err
					}
					defer func() { conn.Close(ctx) }()
					for i := 0; i < rounds; i++ {
						if g%4 == 1 && i == rounds/2 {
							// Leaves the loop: the interceptor blocks
							// it on its goroutine, and the session
							// carries on there.
							if _, err := conn.Exec(ctx, "SELECT 'precious'"); pgCode(err) != "42501" {
								return fmt.Errorf("session %d: blocked query: %v, want 42501", g, err)
							}
						}
						if g%4 == 2 && i%20 == 19 {
							// Disconnects, and comes back.
							conn.Close(ctx)
							if conn, err = dial(); err != nil {
								return err
							}
						}
						b := &pgx.Batch{}
						var got [2]int
						b.Queue("SELECT $1::int * 1000 + $2::int", g, i).QueryRow(func(r pgx.Row) error { return r.Scan(&got[0]) })
						if g%4 == 3 {
							b.Queue("SELECT 1/0")
						}
						b.Queue("SELECT $1::int * 1000 + $2::int + 1", g, i).QueryRow(func(r pgx.Row) error { return r.Scan(&got[1]) })
						err := conn.SendBatch(ctx, b).Close()
						want := [2]int{g*1000 + i, g*1000 + i + 1}
						switch {
						case g%4 == 3:
							if pgCode(err) != "22012" || got[0] != want[0] {
								return fmt.Errorf("session %d round %d: %v, %v; want 22012 after %d", g, i, err, got, want[0])
							}
						case err != nil || got != want:
							return fmt.Errorf("session %d round %d: %v, %v; want %v", g, i, err, got, want)
						}
					}
					return nil
				}()
			}()
		}
		for g := 0; g < sessions; g++ {
			if err := <-errs; err != nil {
				t.Error(err)
			}
		}
		if got, want := p.handoffs("interceptor"), before+sessions/4; got != want {
			t.Errorf("interceptor handoffs = %v, want %v", got, want)
		}
	})

	t.Run("a message larger than the buffer", func(t *testing.T) {
		conn := p.superConn(t, db)
		before := p.handoffs("large_message")
		var s string
		if err := conn.QueryRow(ctx, "SELECT repeat('x', 100000)").Scan(&s); err != nil || len(s) != 100000 {
			t.Fatalf("large row: %v (%d bytes)", err, len(s))
		}
		if err := conn.QueryRow(ctx, "SELECT $1::text", strings.Repeat("y", 50000)).Scan(&s); err != nil || len(s) != 50000 {
			t.Fatalf("large parameter: %v (%d bytes)", err, len(s))
		}
		if got := p.handoffs("large_message"); got != before+1 {
			t.Fatalf("large_message handoffs = %v, want %v", got, before+1)
		}
	})

	t.Run("a statement the interceptor decides on its goroutine", func(t *testing.T) {
		conn := p.superConn(t, db)
		before := p.handoffs("interceptor")
		if _, err := conn.Exec(ctx, "SELECT 1"); err != nil {
			t.Fatal(err)
		}
		_, err := conn.Exec(ctx, "DROP TABLE precious")
		if pgCode(err) != "42501" {
			t.Fatalf("DROP TABLE precious: %v, want 42501", err)
		}
		if _, err := conn.Exec(ctx, "SELECT 2"); err != nil {
			t.Fatalf("after the block: %v", err)
		}
		if got := p.handoffs("interceptor"); got != before+1 {
			t.Fatalf("interceptor handoffs = %v, want %v", got, before+1)
		}
	})

	t.Run("a client that stops reading", func(t *testing.T) {
		conn := p.superConn(t, db)
		before := p.handoffs("backpressure")
		// Small rows, many of them: the client's socket buffer fills
		// while it sleeps, and what pgmoat could not write must reach
		// it in order once it reads again.
		const rows = 400000
		r, err := conn.Query(ctx, "SELECT g FROM generate_series(1, $1::int) g", rows)
		if err != nil {
			t.Fatal(err)
		}
		var sum, want int64
		i := 0
		for r.Next() {
			var g int64
			if err := r.Scan(&g); err != nil {
				t.Fatal(err)
			}
			i++
			if g != int64(i) {
				t.Fatalf("row %d is %d: out of order", i, g)
			}
			sum += g
			if i == 10 {
				time.Sleep(500 * time.Millisecond)
			}
		}
		if err := r.Err(); err != nil {
			t.Fatal(err)
		}
		want = int64(rows) * (rows + 1) / 2
		if i != rows || sum != want {
			t.Fatalf("got %d rows summing to %d, want %d and %d", i, sum, rows, want)
		}
		if got := p.handoffs("backpressure"); got != before+1 {
			t.Fatalf("backpressure handoffs = %v, want %v", got, before+1)
		}
	})
}

// TestEventLoopShutdown checks that a session idle in the event loop is
// handed back and told why when the drain timeout expires.
func TestEventLoopShutdown(t *testing.T) {
	requireLoop(t)
	c := pgtest.Get(t)
	db := c.NewDatabase(t)
	p := startProxy(t, Options{Interceptor: tryInterceptorFor(&testInterceptor{})})
	conn := p.superConn(t, db)
	ctx := ctxTimeout(t, 30*time.Second)
	if _, err := conn.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	if got := p.loopSessions(); got != 1 {
		t.Fatalf("event loop sessions = %v, want 1", got)
	}
	if err := p.shutdown(200 * time.Millisecond); err == nil {
		t.Fatal("Shutdown returned nil with a session left open")
	}
	_, err := conn.Exec(ctx, "SELECT 1")
	if pgCode(err) != "57P01" || !strings.Contains(err.Error(), "pgmoat is shutting down") {
		t.Fatalf("after shutdown: %v, want 57P01 from pgmoat", err)
	}
	if got := p.loopSessions(); got != 0 {
		t.Fatalf("event loop sessions = %v after shutdown, want 0", got)
	}
}

// TestEventLoopSessionsEndWithoutLeaks checks that sessions ending in the
// event loop, by the client's Terminate (the loop closes the sockets
// itself) and by its vanishing (they leave the loop first), close both
// of their sockets, and that their backends end.
func TestEventLoopSessionsEndWithoutLeaks(t *testing.T) {
	requireLoop(t)
	c := pgtest.Get(t)
	db := c.NewDatabase(t)
	p := startProxy(t, Options{Interceptor: tryInterceptorFor(&testInterceptor{})})
	ctx := ctxTimeout(t, time.Minute)
	fds := func() int {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Fatal(err)
		}
		return len(ents)
	}
	// One session first, so that the loop's own descriptors exist.
	warm := p.superConn(t, db)
	if _, err := warm.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	before := fds()
	const n = 10
	for i := 0; i < n; i++ {
		conn := p.superConn(t, db)
		if _, err := conn.Exec(ctx, "SELECT 1"); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			conn.Close(ctx) // Terminate
			continue
		}
		hj, err := conn.PgConn().Hijack()
		if err != nil {
			t.Fatal(err)
		}
		hj.Conn.Close() // no Terminate
	}
	eventually(t, 20*time.Second, "every session but the first ended", func() bool {
		return p.counter(p.met.ClientConnectionsOpen) == 1 && p.loopSessions() == 1
	})
	eventually(t, 10*time.Second, "descriptors back to where they were", func() bool { return fds() <= before })
	direct := directConn(t, db)
	eventually(t, 20*time.Second, "the ended sessions' backends to exit", func() bool {
		var left int
		if err := direct.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", db).Scan(&left); err != nil {
			t.Fatal(err)
		}
		return left == 1 // the first session's
	})
	if got := strings.Count(p.logs.String(), "reason=client_terminate"); got != n/2 {
		t.Errorf("%d sessions ended by Terminate, want %d", got, n/2)
	}
}

// TestEventLoopsBelongToTheServer checks that limits.event_loops decides
// whether a Server relays sessions in event loops and how many it runs,
// and that Shutdown stops them.
func TestEventLoopsBelongToTheServer(t *testing.T) {
	c := pgtest.Get(t)
	db := c.NewDatabase(t)
	ctx := ctxTimeout(t, time.Minute)
	loops := func(n config.EventLoops) proxyOption {
		return func(cfg *config.Config) { cfg.Limits.EventLoops = n }
	}

	off := startProxy(t, Options{Interceptor: tryInterceptorFor(&testInterceptor{})}, loops(0))
	conn := off.superConn(t, db)
	if _, err := conn.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	if got, want := off.loopSessions(), 0.0; got != want {
		t.Errorf("event_loops 0: %v sessions in an event loop, want %v", got, want)
	}
	if got := off.counter(off.met.RelaySessions.WithLabelValues("goroutines")); got != 1 {
		t.Errorf("event_loops 0: %v sessions with goroutines, want 1", got)
	}

	on := startProxy(t, Options{Interceptor: tryInterceptorFor(&testInterceptor{})}, loops(2))
	conn = on.superConn(t, db)
	if _, err := conn.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	if got := on.loopSessions(); got != 1 {
		t.Errorf("event_loops 2: %v sessions in an event loop, want 1", got)
	}
	if n := len(on.srv.loops.all); n != 2 {
		t.Fatalf("event_loops 2: the server runs %d loops", n)
	}
	conn.Close(ctx)
	if err := on.shutdown(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	for i, l := range on.srv.loops.all {
		select {
		case <-l.done:
		case <-time.After(10 * time.Second):
			t.Errorf("event loop %d still running after Shutdown", i)
		}
	}
}

// TestLoopConnFitsALine keeps what the loop reads every turn within one
// cache line of loopConn.
func TestLoopConnFitsALine(t *testing.T) {
	if n := unsafe.Offsetof(loopConn{}.l); n > 64 {
		t.Fatalf("loopConn's per-turn fields take %d bytes, more than a cache line", n)
	}
	if n := unsafe.Sizeof(loopConn{}); n != 128 {
		t.Fatalf("loopConn is %d bytes: not the 128-byte size class, whose objects start on a cache line", n)
	}
}

// TestFDWriterBacklog fills a non-blocking socket: what it does not take
// is kept in order, later writes queue behind it, and a write error is
// kept for good.
func TestFDWriterBacklog(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	w := fdWriter{fd: fds[1]}
	var sent []byte
	for i := 0; len(w.backlog()) == 0; i++ {
		if i > 10000 {
			t.Fatal("the socket never filled")
		}
		p := bytes.Repeat([]byte{byte(i)}, 4096)
		if n, err := w.Write(p); err != nil || n != len(p) {
			t.Fatalf("Write = %d, %v", n, err)
		}
		sent = append(sent, p...)
	}
	if w.slow == nil || w.slow.err != nil {
		t.Fatal("a full socket is not an error")
	}
	tail := []byte("after the backlog")
	w.Write(tail)
	sent = append(sent, tail...)
	// What the socket took, then the backlog, is everything in order.
	var got []byte
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Read(fds[0], buf)
		if err != nil {
			break
		}
		got = append(got, buf[:n]...)
	}
	got = append(got, w.backlog()...)
	if !bytes.Equal(got, sent) {
		t.Fatalf("read %d bytes plus backlog, want %d in order", len(got), len(sent))
	}
	// A closed peer (EPIPE): the error sticks.
	unix.Close(fds[1])
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pair[1])
	unix.Close(pair[0])
	w2 := fdWriter{fd: pair[1]}
	if _, err := w2.Write([]byte("x")); err == nil {
		t.Fatal("write to a closed peer succeeded")
	}
	if _, err := w2.Write([]byte("y")); err == nil || w2.slow == nil || w2.slow.err == nil {
		t.Fatalf("second write = %v: the error did not stick", err)
	}
}
