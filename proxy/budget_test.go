package proxy

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pgmoat/pgmoat/internal/pgtest"
	"github.com/pgmoat/pgmoat/metrics"
)

func testBudget(limit int64) (*messageBudget, *metrics.Metrics) {
	m := metrics.New(nil)
	b := newMessageBudget(limit, m.MessageMemory, m.MessageMemoryWaits)
	b.wait = 200 * time.Millisecond
	return b, m
}

// TestBudgetWaitsInOrder: past the limit, acquirers wait and are served
// first come first served, so a large message is not starved by smaller
// ones that would fit.
func TestBudgetWaitsInOrder(t *testing.T) {
	b, m := testBudget(100)
	b.wait = 10 * time.Second
	ctx := context.Background()
	if err := b.acquire(ctx, 60); err != nil {
		t.Fatal(err)
	}
	granted80, granted30 := make(chan struct{}), make(chan struct{})
	go func() {
		if b.acquire(ctx, 80) == nil {
			close(granted80)
		}
	}()
	for len(b.waitersSnapshot()) < 1 {
		time.Sleep(time.Millisecond)
	}
	go func() {
		if b.acquire(ctx, 30) == nil { // 60+30 fits, but it comes second
			close(granted30)
		}
	}()
	for len(b.waitersSnapshot()) < 2 {
		time.Sleep(time.Millisecond)
	}
	if got := testutil.ToFloat64(m.MessageMemory); got != 60 {
		t.Errorf("pgmoat_message_memory_bytes = %v, want 60", got)
	}
	b.release(60)
	<-granted80
	select {
	case <-granted30:
		t.Fatal("30 granted alongside 80, past the limit")
	case <-time.After(20 * time.Millisecond):
	}
	b.release(80)
	<-granted30
	if got := testutil.ToFloat64(m.MessageMemoryWaits.WithLabelValues("granted")); got != 2 {
		t.Errorf("granted after a wait: %v, want 2", got)
	}
	b.release(30)
	if got := testutil.ToFloat64(m.MessageMemory); got != 0 {
		t.Errorf("pgmoat_message_memory_bytes = %v after every release, want 0", got)
	}
}

// TestBudgetRefuses: a wait that lasts too long, a session that ends while
// it waits, and a message larger than the whole budget end the session
// with 53200, and leave the budget as it was.
func TestBudgetRefuses(t *testing.T) {
	b, m := testBudget(100)
	if err := b.acquire(context.Background(), 90); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		ctx  context.Context
		n    int64
		want string
	}{
		{context.Background(), 20, "held the memory for 200ms"},
		{ctx, 20, "the session ended"},
		{context.Background(), 101, "larger than limits.message_memory"},
	} {
		err := b.acquire(tc.ctx, tc.n)
		var re *refusedError
		if !errors.As(err, &re) || re.resp.Code != "53200" || !strings.Contains(re.resp.Message, tc.want) || !strings.Contains(re.resp.Hint, "limits.message_memory") {
			t.Errorf("acquire(%d): %v, want FATAL 53200 saying %q", tc.n, err, tc.want)
		}
	}
	if got := testutil.ToFloat64(m.MessageMemoryWaits.WithLabelValues("refused")); got != 3 {
		t.Errorf("refused: %v, want 3", got)
	}
	b.release(90)
	if err := b.acquire(context.Background(), 100); err != nil {
		t.Errorf("the whole budget after the refusals: %v", err)
	}
}

func (b *messageBudget) waitersSnapshot() []*budgetWaiter {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]*budgetWaiter(nil), b.waiters...)
}

// TestOversizedAuthResponse: a client that has not logged in cannot make
// pgmoat buffer a large message: a password message longer than any
// PostgreSQL accepts ends the session at once, before its body is read.
// Before, it was buffered up to limits.max_message_size (64 MiB) per
// connection.
func TestOversizedAuthResponse(t *testing.T) {
	c := pgtest.Get(t)
	db := c.NewDatabase(t)
	p := startProxy(t, Options{})
	conn, err := net.DialTimeout("tcp", p.addr(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := conn.Write(startupMessage("user", pgtest.UserClear, "database", db)); err != nil {
		t.Fatal(err)
	}
	fe := pgproto3.NewFrontend(conn, conn)
	if msg, err := fe.Receive(); err != nil {
		t.Fatal(err)
	} else if _, ok := msg.(*pgproto3.AuthenticationCleartextPassword); !ok {
		t.Fatalf("got %T, want a password request", msg)
	}
	// The header of a 1 MiB password message, and nothing more.
	if _, err := conn.Write([]byte{'p', 0, 0x10, 0, 4}); err != nil {
		t.Fatal(err)
	}
	e := expectError(t, conn)
	if e.Severity != "FATAL" || e.Code != "08P01" || !strings.Contains(e.Message, "longer than any PostgreSQL accepts") {
		t.Errorf("got %s %s %s", e.Severity, e.Code, e.Message)
	}
}
