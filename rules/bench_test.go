package rules

import (
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// Typical statements: pgbench's, and what ORMs send.
var benchStatements = map[string]string{
	"pgbench_select": "SELECT abalance FROM pgbench_accounts WHERE aid = 12345;",
	"pgbench_update": "UPDATE pgbench_accounts SET abalance = abalance + -123 WHERE aid = 456;",
	"orm_select":     `SELECT "users"."id", "users"."email", "users"."name", "users"."created_at" FROM "users" WHERE "users"."org_id" = $1 AND "users"."deleted_at" IS NULL ORDER BY "users"."id" DESC LIMIT 25`,
	"orm_insert":     `INSERT INTO "orders" ("user_id", "total", "status", "created_at") VALUES ($1, $2, $3, $4) RETURNING "id"`,
	"orm_update":     `UPDATE "users" SET "name" = $1, "updated_at" = $2 WHERE "users"."id" = $3`,
}

var benchOrder = []string{"pgbench_select", "pgbench_update", "orm_select", "orm_insert", "orm_update"}

func benchEngine(b *testing.B) (*Engine, *Session) {
	p, err := Compile(PolicyConfig{Protect: []string{"public.users", "billing.*", "public.pgbench_*"}})
	if err != nil {
		b.Fatal(err)
	}
	return NewEngine(p, EngineOptions{}), knownSession("app")
}

// pgbench's statements as -M extended Parses them, with parameters.
var benchParamStatements = map[string]string{
	"pgbench_select": "SELECT abalance FROM pgbench_accounts WHERE aid = $1;",
	"pgbench_update": "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2;",
}

// BenchmarkCacheHit: the same text again (the extended protocol's Parse
// of a text with parameters, and any repeated text without literals; one
// with literals is answered on the fast path first, BenchmarkFastPath).
func BenchmarkCacheHit(b *testing.B) {
	for _, name := range benchOrder {
		sql := benchStatements[name]
		if p, ok := benchParamStatements[name]; ok {
			sql = p
		}
		b.Run(name, func(b *testing.B) {
			eng, s := benchEngine(b)
			eng.Judge(s, sql)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if r := eng.Judge(s, sql); r.Path != PathCache {
					b.Fatal(r.Path)
				}
			}
		})
	}
}

// BenchmarkCacheHitOwnRelations: a session that made relations of its own
// (a temporary table, a view), whose decisions are keyed by what it made,
// in and out of transactions: hits still allocate nothing.
func BenchmarkCacheHitOwnRelations(b *testing.B) {
	eng, s := benchEngine(b)
	runAllowed(eng, s, "CREATE TEMP TABLE batch (id int)", "CREATE TEMP VIEW recent AS SELECT * FROM batch")
	msgs := []string{"BEGIN", benchStatements["pgbench_update"], "DELETE FROM batch", "COMMIT"}
	transaction := func(warm bool) {
		for j, m := range msgs {
			r := eng.Judge(s, m)
			if !warm && r.Path != PathCache {
				b.Fatal(m, r.Path)
			}
			status := byte('T')
			if j == len(msgs)-1 {
				status = 'I'
			}
			for _, v := range r.Statements {
				s.Apply(v.Changes...)
			}
			s.Sync(status)
		}
	}
	transaction(true)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		transaction(false)
	}
}

// BenchmarkFastPath: the same statement with a new literal each time
// (pgbench -M simple).
func BenchmarkFastPath(b *testing.B) {
	for _, name := range []string{"pgbench_select", "pgbench_update"} {
		b.Run(name, func(b *testing.B) {
			eng, s := benchEngine(b)
			texts := make([]string, 4096)
			for i := range texts {
				if name == "pgbench_select" {
					texts[i] = fmt.Sprintf("SELECT abalance FROM pgbench_accounts WHERE aid = %d;", 100000+i*37)
				} else {
					texts[i] = fmt.Sprintf("UPDATE pgbench_accounts SET abalance = abalance + %d WHERE aid = %d;", i%9000-4500, 100000+i*37)
				}
			}
			eng.Judge(s, texts[0])
			eng.cache = newCache(1 << 10) // keep the exact cache from answering
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if r := eng.Judge(s, texts[i%len(texts)]); r.Path != PathFast {
					b.Fatal(r.Path)
				}
			}
		})
	}
}

// BenchmarkFullAnalysis: parse and analyse (no cache), next to
// BenchmarkRawParse of the same text for the ratio.
func BenchmarkFullAnalysis(b *testing.B) {
	for _, name := range benchOrder {
		sql := benchStatements[name]
		b.Run(name, func(b *testing.B) {
			p, _ := Compile(PolicyConfig{Protect: []string{"public.users", "billing.*", "public.pgbench_*"}})
			eng := NewEngine(p, EngineOptions{CacheBytes: -1})
			s := knownSession("app")
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				eng.Judge(s, sql)
			}
		})
	}
}

func BenchmarkRawParse(b *testing.B) {
	for _, name := range benchOrder {
		sql := benchStatements[name]
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if _, err := pg_query.Parse(sql); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// Parallel variants: many sessions sharing one engine, as the event
// loops do. With -cpu 1,2 (and more where the machine has them) the time
// per judgement should fall as the processors grow: a write that every
// judgement makes to memory they share would keep it flat.
func BenchmarkCacheHitParallel(b *testing.B) {
	eng, _ := benchEngine(b)
	sql := benchParamStatements["pgbench_select"] // a text with literals takes the fast path
	eng.Judge(knownSession("app"), sql)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		s := knownSession("app")
		for pb.Next() {
			if r := eng.Judge(s, sql); r.Path != PathCache {
				b.Error(r.Path)
				return
			}
		}
	})
}

func BenchmarkFastPathParallel(b *testing.B) {
	eng, _ := benchEngine(b)
	eng.Judge(knownSession("app"), "SELECT abalance FROM pgbench_accounts WHERE aid = 1;")
	eng.cache = newCache(1 << 10)
	var n atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		s := knownSession("app")
		texts := make([]string, 1024)
		base := n.Add(1) * 100000
		for i := range texts {
			texts[i] = fmt.Sprintf("SELECT abalance FROM pgbench_accounts WHERE aid = %d;", base+int64(i))
		}
		i := 0
		for pb.Next() {
			// Given back as the proxy gives back a statement let through.
			s.Recycle(eng.Judge(s, texts[i%len(texts)]))
			i++
		}
	})
}

func BenchmarkFullAnalysisParallel(b *testing.B) {
	p, _ := Compile(PolicyConfig{Protect: []string{"public.users", "billing.*"}})
	eng := NewEngine(p, EngineOptions{CacheBytes: -1})
	sql := benchStatements["orm_select"]
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		s := knownSession("app")
		for pb.Next() {
			eng.Judge(s, sql)
		}
	})
}

func BenchmarkRawParseParallel(b *testing.B) {
	sql := benchStatements["orm_select"]
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			pg_query.Parse(sql)
		}
	})
}

// manyStatements is one message of n short statements, one per line, as
// a psql script or a batch of INSERTs sends them.
func manyStatements(n int) string {
	var b []byte
	for i := range n {
		b = fmt.Appendf(b, "INSERT INTO events VALUES (%d);\n", i)
	}
	return string(b)
}

// BenchmarkManyStatements judges one message of 1k, 10k and 100k short
// statements on the full path, as the proxy does (the cache cannot help a
// message this long) and as `pgmoat check` does a file: the time per
// statement must stay flat as the message grows. It reports the process's
// CPU time per statement (cpu-ns/statement, GC included) besides the wall
// time, which on a shared machine says less. The numbers are in
// bench/README.md; run with -benchtime=1x.
func BenchmarkManyStatements(b *testing.B) {
	p, err := Compile(PolicyConfig{Protect: []string{"public.users", "billing.*"}})
	if err != nil {
		b.Fatal(err)
	}
	for _, mode := range []string{"judge", "check"} {
		for _, n := range []int{1000, 10000, 100000} {
			sql := manyStatements(n)
			b.Run(fmt.Sprintf("%s/statements=%d", mode, n), func(b *testing.B) {
				eng := NewEngine(p, EngineOptions{CacheBytes: -1})
				eng.Judge(knownSession("app"), "SELECT 1") // libpg_query's first-call set-up
				cpu0 := processCPU()
				for b.Loop() {
					var r *Result
					if mode == "judge" {
						r = eng.Judge(knownSession("app"), sql)
					} else {
						r = eng.JudgeScript(NewSession(Identity{}), sql)
					}
					if len(r.Statements) != n || r.Action != Allow {
						b.Fatalf("%d statements, action %s: %s", len(r.Statements), r.Action, r.Decision().Sentence)
					}
				}
				per := float64(b.N) * float64(n)
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/per, "ns/statement")
				b.ReportMetric(float64((processCPU()-cpu0).Nanoseconds())/per, "cpu-ns/statement")
			})
		}
	}
}

// processCPU is the user and system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkNormalize: the fast path's lexer alone, on pgbench's SELECT
// (select) and on the statements of its TPC-B-like script, one after the
// other (tpcb; bytes per second count all of them).
func BenchmarkNormalize(b *testing.B) {
	for _, bc := range []struct {
		name  string
		texts []string
	}{
		{"select", []string{"SELECT abalance FROM pgbench_accounts WHERE aid = 12345;"}},
		{"tpcb", []string{
			"BEGIN;",
			"UPDATE pgbench_accounts SET abalance = abalance + -3152 WHERE aid = 812345;",
			"SELECT abalance FROM pgbench_accounts WHERE aid = 812345;",
			"UPDATE pgbench_tellers SET tbalance = tbalance + -3152 WHERE tid = 47;",
			"UPDATE pgbench_branches SET bbalance = bbalance + -3152 WHERE bid = 5;",
			"INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (47, 5, 812345, -3152, CURRENT_TIMESTAMP);",
			"END;",
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var buf [512]byte
			var spanBuf [4]span
			size := 0
			for _, sql := range bc.texts {
				size += len(sql)
			}
			b.SetBytes(int64(size))
			for i := 0; i < b.N; i++ {
				for _, sql := range bc.texts {
					if _, _, ok := normalize(sql, buf[:], spanBuf[:]); !ok {
						b.Fatal("not normalized")
					}
				}
			}
		})
	}
}
