package proxy

import (
	"context"
	"testing"
	"time"

	"github.com/pgmoat/pgmoat/internal/pgtest"
)

func TestSimpleQuery(t *testing.T) {
	c := pgtest.Get(t)
	db := c.NewDatabase(t)
	p := startProxy(t, Options{})
	conn := p.superConn(t, db)
	ctx := ctxTimeout(t, 30*time.Second)
	var n int
	if err := conn.QueryRow(ctx, "SELECT 41 + 1").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 42 {
		t.Fatalf("got %d", n)
	}
	conn.Close(context.Background())
	eventually(t, 10*time.Second, "session end logged", func() bool {
		return p.counter(p.met.ClientConnectionsOpen) == 0
	})
}
