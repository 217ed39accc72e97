package proxy

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgmoat/pgmoat/internal/pgtest"
)

// BenchmarkRoundTrip compares one-row queries direct and through pgmoat,
// over the simple protocol (pgbench -S's default) and the extended one, one
// client per parallel goroutine. The allocations reported are the whole
// process's: the difference between "pgmoat" and "direct" is pgmoat's.
func BenchmarkRoundTrip(b *testing.B) {
	c := pgtest.Get(b)
	db := c.NewDatabase(b)
	c.Exec(b, db, "CREATE TABLE accounts AS SELECT i AS aid, 0 AS abalance FROM generate_series(1, 10000) i; ALTER TABLE accounts ADD PRIMARY KEY (aid)")
	p := startProxy(b, Options{})
	targets := map[string]string{
		"direct": c.SuperConnString(db, "sslmode=disable"),
		"pgmoat": p.connString(c.Superuser, c.SuperPassword, db),
	}
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement} {
		for _, target := range []string{"direct", "pgmoat"} {
			b.Run(mode.String()+"/"+target, func(b *testing.B) {
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					conn, err := pgx.Connect(context.Background(), targets[target])
					if err != nil {
						b.Error(err)
						return
					}
					defer conn.Close(context.Background())
					var bal, aid int
					for pb.Next() {
						aid = aid%10000 + 1
						if err := conn.QueryRow(context.Background(), "SELECT abalance FROM accounts WHERE aid = $1", mode, aid).Scan(&bal); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		}
	}
}

// BenchmarkBulk compares a 10 MB result direct and through pgmoat.
func BenchmarkBulk(b *testing.B) {
	c := pgtest.Get(b)
	db := c.NewDatabase(b)
	p := startProxy(b, Options{})
	for _, target := range []string{"direct", "pgmoat"} {
		cs := c.SuperConnString(db, "sslmode=disable")
		if target == "pgmoat" {
			cs = p.connString(c.Superuser, c.SuperPassword, db)
		}
		b.Run(target, func(b *testing.B) {
			conn := connect(b, cs)
			b.SetBytes(10000 * 1024)
			b.ReportAllocs()
			for b.Loop() {
				rows, _ := conn.Query(context.Background(), "SELECT repeat('x', 1024) FROM generate_series(1, 10000)", pgx.QueryExecModeSimpleProtocol)
				for rows.Next() {
				}
				if err := rows.Err(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
