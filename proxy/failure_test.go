package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgmoat/pgmoat/config"
	"github.com/pgmoat/pgmoat/internal/pgtest"
)

func TestUpstreamUnreachable(t *testing.T) {
	c := pgtest.Get(t)

	t.Run("refused", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close() // nothing listens there now
		p := startProxy(t, Options{}, func(cfg *config.Config) { cfg.Upstream = "postgres://" + addr + "?sslmode=prefer" })
		_, err = pgx.Connect(ctxTimeout(t, 30*time.Second), p.connString(c.Superuser, c.SuperPassword, "postgres"))
		if pgCode(err) != "08006" || !strings.Contains(err.Error(), "could not connect to upstream") {
			t.Fatalf("got %v, want FATAL 08006", err)
		}
		if got := p.counter(p.met.UpstreamConnectErrors); got != 1 {
			t.Errorf("upstream connect errors = %v", got)
		}
		if err := p.srv.CheckUpstream(ctxTimeout(t, 10*time.Second)); err == nil {
			t.Error("CheckUpstream succeeded against a closed port")
		}
	})

	t.Run("accepting but silent", func(t *testing.T) {
		// A server that accepts TCP and never answers the SSLRequest:
		// the client hears 08006 after limits.connect_timeout, long
		// before the startup timeout or its own 20 s.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
			}
		}()
		p := startProxy(t, Options{}, func(cfg *config.Config) {
			cfg.Upstream = "postgres://" + ln.Addr().String() + "?sslmode=prefer"
			cfg.Limits.ConnectTimeout = config.Duration(300 * time.Millisecond)
			cfg.Limits.StartupTimeout = config.Duration(time.Minute)
		})
		_, err = pgx.Connect(ctxTimeout(t, 20*time.Second), p.connString(c.Superuser, c.SuperPassword, "postgres"))
		if pgCode(err) != "08006" || !strings.Contains(err.Error(), "connect_timeout") {
			t.Fatalf("got %v, want FATAL 08006 naming the connect timeout", err)
		}
		if err := p.srv.CheckUpstream(ctxTimeout(t, 10*time.Second)); err != nil {
			t.Errorf("CheckUpstream: %v (TCP is accepted)", err)
		}
	})
}

// tcpForwarder relays TCP to target and can cut every connection at once,
// to make the upstream vanish without a word.
type tcpForwarder struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func newForwarder(t testing.TB, target string) *tcpForwarder {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &tcpForwarder{ln: ln}
	t.Cleanup(func() { ln.Close(); f.cut() })
	go func() {
		for {
			a, err := ln.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial("tcp", target)
			if err != nil {
				a.Close()
				continue
			}
			f.mu.Lock()
			f.conns = append(f.conns, a, b)
			f.mu.Unlock()
			go func() { io.Copy(a, b); a.Close() }()
			go func() { io.Copy(b, a); b.Close() }()
		}
	}()
	return f
}

func (f *tcpForwarder) cut() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.conns {
		c.Close()
	}
	f.conns = nil
}

func TestUpstreamLostMidSession(t *testing.T) {
	c := pgtest.Get(t)
	db := c.NewDatabase(t)
	fwd := newForwarder(t, c.Addr())
	p := startProxy(t, Options{}, func(cfg *config.Config) { cfg.Upstream = "postgres://" + fwd.ln.Addr().String() + "?sslmode=disable" })
	conn := p.superConn(t, db)
	done := make(chan error, 1)
	go func() {
		_, err := conn.Exec(context.Background(), "SELECT pg_sleep(20)")
		done <- err
	}()
	waitActive(t, db, conn.PgConn().PID())
	fwd.cut()
	select {
	case err := <-done:
		if pgCode(err) != "08006" || !strings.Contains(err.Error(), "upstream connection lost") {
			t.Fatalf("got %v, want FATAL 08006 upstream connection lost", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the client was not told that the upstream connection was lost")
	}
	if !conn.IsClosed() {
		t.Error("pgx still considers the connection open")
	}
	eventually(t, 10*time.Second, "upstream_lost logged", func() bool {
		return strings.Contains(p.logs.String(), "reason=upstream_lost")
	})
}

// TestServerFatalRelayed checks that when the server ends a session with
// its own FATAL error, the client gets that error, not pgmoat's.
func TestServerFatalRelayed(t *testing.T) {
	c := pgtest.Get(t)
	db := c.NewDatabase(t)
	p := startProxy(t, Options{})
	conn := p.superConn(t, db)
	ctx := ctxTimeout(t, 30*time.Second)
	directConn(t, db).Exec(ctx, "SELECT pg_terminate_backend($1)", conn.PgConn().PID())
	_, err := conn.Exec(ctx, "SELECT 1")
	if pgCode(err) != "57P01" || !strings.Contains(err.Error(), "administrator command") {
		t.Fatalf("got %v, want the server's FATAL 57P01", err)
	}
	eventually(t, 10*time.Second, "server_fatal logged", func() bool {
		return strings.Contains(p.logs.String(), "reason=server_fatal")
	})
}

// TestBadClientMessages sends oversized and malformed messages in one
// session and checks that it alone is closed with FATAL 08P01.
func TestBadClientMessages(t *testing.T) {
	c := pgtest.Get(t)
	db := c.NewDatabase(t)
	p := startProxy(t, Options{}, withLimits(func(l *config.Limits) { l.MaxMessageSize = 16 << 10 }))
	ctx := ctxTimeout(t, time.Minute)
	bystander := p.superConn(t, db)
	if _, err := bystander.Exec(ctx, "CREATE TABLE t (v text)"); err != nil {
		t.Fatal(err)
	}
	tx, err := bystander.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO t VALUES ('before')"); err != nil {
		t.Fatal(err)
	}

	t.Run("oversized query", func(t *testing.T) {
		conn := p.superConn(t, db)
		_, err := conn.Exec(ctx, "SELECT '"+strings.Repeat("x", 100<<10)+"'")
		if pgCode(err) != "08P01" || !strings.Contains(err.Error(), "max_message_size") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("oversized CopyData", func(t *testing.T) {
		conn := p.superConn(t, db)
		_, err := conn.PgConn().CopyFrom(ctx, strings.NewReader(strings.Repeat("y", 200<<10)+"\n"), "COPY t FROM STDIN")
		if pgCode(err) != "08P01" {
			t.Fatalf("got %v", err)
		}
	})
	malformed := map[string][]byte{
		"unknown type":               {'z', 0, 0, 0, 4},
		"length below 4":             {'Q', 0, 0, 0, 3},
		"startup type after startup": {'p', 0, 0, 0, 8, 'a', 'b', 'c', 0},
	}
	for name, msg := range malformed {
		t.Run(name, func(t *testing.T) {
			conn, _ := rawLogin(t, p.addr(), c.Superuser, c.SuperPassword, db)
			defer conn.Close()
			conn.Write(msg)
			e := expectError(t, conn)
			if e.Severity != "FATAL" || e.Code != "08P01" {
				t.Errorf("got %s %s %s", e.Severity, e.Code, e.Message)
			}
			conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.Copy(io.Discard, conn); err != nil {
				t.Errorf("connection not closed after the error: %v", err)
			}
		})
	}

	// The bystander's transaction went on untouched.
	if _, err := tx.Exec(ctx, "INSERT INTO t VALUES ('after')"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := bystander.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil || n != 2 {
		t.Fatalf("bystander sees %d rows, %v", n, err)
	}
	// A session's end is logged after its socket is closed, so the last
	// one may still be on its way when the client has seen EOF.
	want := 2 + len(malformed)
	eventually(t, 10*time.Second, fmt.Sprintf("%d protocol violations logged", want), func() bool {
		return strings.Count(p.logs.String(), "reason=protocol_violation") == want
	})
}

func TestGracefulShutdown(t *testing.T) {
	c := pgtest.Get(t)
	db := c.NewDatabase(t)

	t.Run("in-flight query finishes during the drain", func(t *testing.T) {
		p := startProxy(t, Options{})
		conn := p.superConn(t, db)
		result := make(chan error, 1)
		go func() {
			var s string
			err := conn.QueryRow(context.Background(), "SELECT 'slept' FROM pg_sleep(1)").Scan(&s)
			if err == nil && s != "slept" {
				err = fmt.Errorf("got %q", s)
			}
			result <- err
		}()
		waitActive(t, db, conn.PgConn().PID())
		// A client accepted before Shutdown that only now sends its
		// startup packet is turned away.
		late := dialProxy(t, p)
		eventually(t, 10*time.Second, "the late client to be accepted", func() bool {
			return p.counter(p.met.ClientConnectionsTotal) == 2
		})
		shut := make(chan error, 1)
		go func() { shut <- p.shutdown(time.Minute) }()
		eventually(t, 10*time.Second, "the listener to close", func() bool {
			c, err := net.Dial("tcp", p.addr())
			if err == nil {
				c.Close()
			}
			return err != nil
		})
		late.Write(startupMessage("user", c.Superuser, "database", db))
		if e := expectError(t, late); e.Code != "57P01" || !strings.Contains(e.Message, "shutting down") {
			t.Errorf("late client: got %s %s", e.Code, e.Message)
		}
		// (The probes of the listener above may count here too.)
		if got := p.counter(p.met.ClientConnectionsRejected.WithLabelValues("draining")); got < 1 {
			t.Errorf("rejected{draining} = %v", got)
		}
		if err := <-result; err != nil {
			t.Fatalf("in-flight query: %v", err)
		}
		// The session may even run more while the drain lasts.
		if err := conn.Ping(ctxTimeout(t, 10*time.Second)); err != nil {
			t.Fatal(err)
		}
		conn.Close(context.Background())
		select {
		case err := <-shut:
			if err != nil {
				t.Errorf("Shutdown: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("Shutdown did not return after the last session ended")
		}
	})

	t.Run("sessions left after the drain timeout get 57P01", func(t *testing.T) {
		p := startProxy(t, Options{})
		idle := p.superConn(t, db)
		busy := p.superConn(t, db)
		result := make(chan error, 1)
		go func() {
			_, err := busy.Exec(context.Background(), "SELECT pg_sleep(30)")
			result <- err
		}()
		waitActive(t, db, busy.PgConn().PID())
		err := p.shutdown(300 * time.Millisecond)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Shutdown returned %v, want the drain deadline", err)
		}
		select {
		case err := <-result:
			if pgCode(err) != "57P01" || !strings.Contains(err.Error(), "pgmoat is shutting down") {
				t.Errorf("busy session: got %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("busy session not closed")
		}
		_, err = idle.Exec(ctxTimeout(t, 10*time.Second), "SELECT 1")
		if pgCode(err) != "57P01" {
			t.Errorf("idle session: got %v", err)
		}
		eventually(t, 10*time.Second, "2 sessions logged as shut down", func() bool {
			return strings.Count(p.logs.String(), "reason=shutdown") == 2
		})
		// Their server backends are gone too.
		direct := directConn(t, db)
		eventually(t, 20*time.Second, "the backends to exit", func() bool {
			var n int
			direct.QueryRow(context.Background(), "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)",
				[]uint32{idle.PgConn().PID(), busy.PgConn().PID()}).Scan(&n)
			return n == 0
		})
	})
}

// TestNoMessagesWithoutStartup makes sure that a client cannot skip the
// startup and talk the steady-state protocol directly.
func TestNoMessagesWithoutStartup(t *testing.T) {
	p := startProxy(t, Options{})
	conn := dialProxy(t, p)
	buf, _ := (&pgproto3.Query{String: "SELECT 1"}).Encode(nil)
	conn.Write(buf)
	if e := expectError(t, conn); e.Code != "08P01" {
		t.Errorf("got %s %s", e.Code, e.Message)
	}
}

// TestUpstreamPreferFallsBack checks libpq's sslmode=prefer behaviour: when
// the TLS handshake with the upstream fails, pgmoat connects again in the
// clear.
func TestUpstreamPreferFallsBack(t *testing.T) {
	c := pgtest.Get(t)
	db := c.NewDatabase(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var attempts sync.WaitGroup
	attempts.Add(1)
	go func() {
		// First connection: agree to TLS, then speak nonsense.
		a, err := ln.Accept()
		if err != nil {
			return
		}
		io.ReadFull(a, make([]byte, 8))
		a.Write([]byte("Snot a TLS server hello"))
		a.Close()
		attempts.Done()
		// Then relay to the real server.
		for {
			a, err := ln.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial("tcp", c.Addr())
			if err != nil {
				a.Close()
				return
			}
			go func() { io.Copy(a, b); a.Close() }()
			go func() { io.Copy(b, a); b.Close() }()
		}
	}()
	p := startProxy(t, Options{}, func(cfg *config.Config) { cfg.Upstream = "postgres://" + ln.Addr().String() + "?sslmode=prefer" })
	conn := p.superConn(t, db)
	attempts.Wait()
	var ssl bool
	if err := conn.QueryRow(ctxTimeout(t, 10*time.Second), "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl); err != nil {
		t.Fatal(err)
	}
	if ssl {
		t.Error("TLS after a failed handshake?")
	}
}
