package e2e

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgmoat/pgmoat/internal/moattest"
	"github.com/pgmoat/pgmoat/internal/pgtest"
)

func TestBlockDropThroughBinary(t *testing.T) {
	c := pgtest.Get(t)
	db := c.NewDatabase(t)
	c.Exec(t, db, "CREATE TABLE users(id int)")
	m := moattest.Start(t, c, moattest.Options{Config: "policy:\n  protect: [public.users]\n"})
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, m.SuperConnString(db))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "DROP TABLE users")
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "42501" {
		t.Fatalf("DROP TABLE users: err = %v, want SQLSTATE 42501", err)
	}
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE tablename = 'users'").Scan(&n); err != nil || n != 1 {
		t.Fatalf("users table gone? n=%d err=%v", n, err)
	}
}
