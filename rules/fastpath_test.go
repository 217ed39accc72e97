package rules

import (
	"strings"
	"testing"
)

func TestNormalize(t *testing.T) {
	for _, c := range []struct {
		sql, key string
		ok       bool
		spans    int
	}{
		{"SELECT abalance FROM pgbench_accounts WHERE aid = 12345;", "SELECT abalance FROM pgbench_accounts WHERE aid = \x01;", true, 1},
		{"UPDATE t SET a = a + -1.5 WHERE b = 'x''y'", "UPDATE t SET a = a + -\x02 WHERE b = \x03", true, 1},
		{`SELECT "Col" FROM "T" WHERE x = 'a'; SELECT 2`, "SELECT \"Col\" FROM \"T\" WHERE x = \x03; SELECT \x01", true, 2},
		{"SELECT t1.c2 FROM t1", "SELECT t1.c2 FROM t1", true, 1},
		{"SELECT E'x'", "", false, 0},
		{"SELECT U&'x'", "", false, 0},
		{"SELECT $1", "", false, 0},
		{"SELECT $$x$$", "", false, 0},
		{"SELECT 1 -- c", "", false, 0},
		{"SELECT /* c */ 1", "", false, 0},
		{"SELECT 'a\\'", "", false, 0},
		{"SELECT 1e5", "", false, 0},
		{"SELECT 0x1F", "", false, 0},
		{"SELECT 1_000", "", false, 0},
		{"SELECT x$q$", "", false, 0},
		{"SELECT 'é'", "", false, 0},
		{"SELECT data ? 'k'", "", false, 0},
		{"SELECT \x01", "", false, 0},
		{"SELECT 'unterminated", "", false, 0},
	} {
		key, spans, ok := normalize(c.sql, nil, nil)
		if ok != c.ok || ok && (string(key) != c.key || len(spans) != c.spans) {
			t.Errorf("normalize(%q) = %q, %d spans, %v; want %q, %d, %v", c.sql, key, len(spans), ok, c.key, c.spans, c.ok)
		}
	}
}

func bumpDigits(s string) string {
	b := []byte(s)
	for i, c := range b {
		switch {
		case c >= '0' && c <= '9':
			b[i] = '0' + (c-'0'+1)%10
		case c == 't':
			b[i] = 'f'
		case c == 'f':
			b[i] = 't'
		}
	}
	return string(b)
}

// FuzzFastPath checks that the caches never change a decision: after
// judging a statement, a variant with other literals judged through the
// cached engine must get exactly what a fresh full analysis gives it.
func FuzzFastPath(f *testing.F) {
	for _, row := range loadCorpus(f) {
		f.Add(row.sql)
	}
	for _, s := range []string{
		"SELECT abalance FROM pgbench_accounts WHERE aid = 12345;",
		"UPDATE pgbench_accounts SET abalance = abalance + -123 WHERE aid = 456;",
		"INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 2, 3, 4, CURRENT_TIMESTAMP);",
		"DELETE FROM users WHERE 1 = 1", "DELETE FROM users WHERE 't'", "DELETE FROM users WHERE 0 > 1",
		"EXPLAIN (ANALYZE 0) DELETE FROM users", "SELECT set_config('search_path', 'billing', false); DROP TABLE invoices",
		"COPY users TO 'f'", "SET search_path TO 'billing'; TRUNCATE invoices", "PREPARE p1 AS SELECT 1; EXECUTE p1",
	} {
		f.Add(s)
	}
	p, err := Compile(PolicyConfig{Protect: []string{"public.users", "billing.*"}})
	if err != nil {
		f.Fatal(err)
	}
	cached := NewEngine(p, EngineOptions{CacheBytes: 1 << 20})
	fresh := NewEngine(p, EngineOptions{CacheBytes: -1})
	f.Fuzz(func(t *testing.T, sql string) {
		if len(sql) > 2000 {
			return
		}
		normalize(sql, nil, nil) // must not panic on anything
		s := knownSession("app")
		checkAgainstFull(t, cached, fresh, s, sql)
		v := bumpDigits(sql)
		checkAgainstFull(t, cached, fresh, s, v)
		checkAgainstFull(t, cached, fresh, s, strings.ToUpper(v))
	})
}
