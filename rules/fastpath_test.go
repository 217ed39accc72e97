package rules

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"unsafe"
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

// normalizeReference is normalize as first written, a comparison at a time:
// the table-driven lexer must agree with it on every input
// (TestNormalizeMatchesReference, FuzzNormalizeMatchesReference).
func normalizeReference(sql string, buf []byte, spanBuf []span) (key []byte, spans []span, ok bool) {
	key = buf[:0]
	spans = spanBuf[:0]
	stmtStart := 0
	n := len(sql)
	for i := 0; i < n; {
		c := sql[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			key = append(key, c)
			i++
		case isIdentStart(c):
			if c >= 0x80 {
				return nil, nil, false
			}
			j := i + 1
			for j < n && (isIdentStart(sql[j]) || isDigit(sql[j])) {
				if sql[j] >= 0x80 {
					return nil, nil, false
				}
				j++
			}
			if j < n && (sql[j] == '$' || sql[j] == '\'' || sql[j] == '&') {
				return nil, nil, false // x$y identifiers, E'' and friends
			}
			key = append(key, sql[i:j]...)
			i = j
		case isDigit(c) || c == '.' && i+1 < n && isDigit(sql[i+1]):
			j := i
			for j < n && isDigit(sql[j]) {
				j++
			}
			dec := false
			if j < n && sql[j] == '.' {
				if j+1 < n && sql[j+1] == '.' {
					return nil, nil, false // 1..2 and similar
				}
				dec = true
				j++
				for j < n && isDigit(sql[j]) {
					j++
				}
			}
			if j < n && (isIdentStart(sql[j]) || sql[j] == '.' || sql[j] == '$' || sql[j] == '\'' || sql[j] == '"') {
				return nil, nil, false // 1e5, 0x1F, 1_000, trailing junk
			}
			if dec {
				key = append(key, phDec)
			} else {
				key = append(key, phInt)
			}
			i = j
		case c == '\'':
			j := i + 1
			for {
				if j >= n {
					return nil, nil, false
				}
				d := sql[j]
				if d == '\'' {
					if j+1 < n && sql[j+1] == '\'' {
						j += 2
						continue
					}
					break
				}
				if d < 0x20 && d != '\t' && d != '\n' && d != '\r' || d >= 0x7f || d == '\\' {
					return nil, nil, false
				}
				j++
			}
			key = append(key, phString)
			i = j + 1
		case c == '"':
			j := i + 1
			for j < n && sql[j] != '"' {
				if d := sql[j]; d < 0x20 || d >= 0x7f {
					return nil, nil, false
				}
				j++
			}
			if j >= n || j+1 < n && sql[j+1] == '"' || j == i+1 {
				return nil, nil, false
			}
			key = append(key, sql[i:j+1]...)
			i = j + 1
		case c == ';':
			spans = append(spans, span{stmtStart, i})
			stmtStart = i + 1
			key = append(key, c)
			i++
		case c == '-' && i+1 < n && sql[i+1] == '-', c == '/' && i+1 < n && sql[i+1] == '*':
			return nil, nil, false
		case strings.IndexByte("(),=<>+-*/%:[]!|.^~#@", c) >= 0:
			key = append(key, c)
			i++
		default:
			// $, &, ?, `, \, {, }, control bytes, non-ASCII.
			return nil, nil, false
		}
	}
	spans = append(spans, span{stmtStart, n})
	// Drop statements that are only whitespace, as the parser does.
	out := spans[:0]
	for _, s := range spans {
		if strings.TrimLeft(sql[s.start:s.end], " \t\n\r") != "" {
			out = append(out, s)
		}
	}
	return key, out, true
}

func checkNormalizeMatches(t *testing.T, sql string) {
	t.Helper()
	key, spans, ok := normalize(sql, nil, nil)
	rkey, rspans, rok := normalizeReference(sql, nil, nil)
	if ok != rok || ok && (string(key) != string(rkey) || !slices.Equal(spans, rspans)) {
		t.Fatalf("normalize(%q) = %q, %v, %v; the reference gives %q, %v, %v", sql, key, spans, ok, rkey, rspans, rok)
	}
	// decided skips the lexer for a text mayHaveLiterals clears: the
	// lexer must have found no literal in it.
	if ok && !mayHaveLiterals(sql) && string(key) != sql {
		t.Fatalf("normalize(%q) found a literal (key %q) in a text mayHaveLiterals says has none", sql, key)
	}
}

// TestNormalizeMatchesReference runs both lexers over the corpus and over
// every single-byte change of a few statements at each position, which
// reaches each byte class in each lexer state.
func TestNormalizeMatchesReference(t *testing.T) {
	texts := []string{
		"SELECT abalance FROM pgbench_accounts WHERE aid = 12345;",
		"UPDATE t SET a = a + -1.5 WHERE b = 'x''y' AND c = .5; ; SELECT \"Q\".x FROM q",
		"select 1.;select 2 ; \t\n",
	}
	for _, row := range loadCorpus(t) {
		checkNormalizeMatches(t, row.sql)
		texts = append(texts, row.sql)
	}
	for _, base := range texts[:3] {
		for i := 0; i <= len(base); i++ {
			for c := 0; c < 256; c++ {
				checkNormalizeMatches(t, base[:i]+string(rune(c))[:1]+base[i:])
				checkNormalizeMatches(t, base[:i]+string([]byte{byte(c)}))
				if i < len(base) {
					checkNormalizeMatches(t, base[:i]+string([]byte{byte(c)})+base[i+1:])
				}
			}
		}
	}
}

func FuzzNormalizeMatchesReference(f *testing.F) {
	f.Add("SELECT abalance FROM pgbench_accounts WHERE aid = 12345;")
	f.Add("UPDATE t SET a = a + -1.5 WHERE b = 'x''y'; SELECT \"C\" FROM \"T\"")
	f.Add("select 1..2, 1e5, 0x1F, x$y, E'x', -- c")
	f.Fuzz(func(t *testing.T, sql string) { checkNormalizeMatches(t, sql) })
}

// TestRecycleFastPath: a fast-path result given back with Recycle is the
// memory of a later one, which is judged from scratch (its own text and
// position, nothing of the last), so judging on the fast path allocates
// nothing; other results are not kept, and recycling a result twice
// gives it back once.
func TestRecycleFastPath(t *testing.T) {
	p, err := Compile(PolicyConfig{Protect: []string{"public.users"}})
	if err != nil {
		t.Fatal(err)
	}
	eng := NewEngine(p, EngineOptions{})
	s := knownSession("app")
	q := func(n int) string { return fmt.Sprintf("SELECT name FROM users WHERE id = %d", n) }
	if r := eng.Judge(s, q(1)); r.Path != PathFull {
		t.Fatalf("first judgement took path %v", r.Path)
	}
	for fastResults.Get() != nil {
	}
	s.Recycle(eng.Judge(s, "SELECT 1; SELECT 2"))
	if fastResults.Get() != nil {
		t.Fatal("a full-path result was kept for reuse")
	}
	r1 := eng.Judge(s, q(22))
	if r1.Path != PathFast {
		t.Fatalf("path %v, want fast", r1.Path)
	}
	s.Recycle(r1)
	s.Recycle(r1)
	if a, b := fastResults.Get(), fastResults.Get(); b != nil && b == a {
		t.Fatal("a result recycled twice was given out twice")
	} else if a != nil {
		fastResults.Put(a)
	}
	for i := range 50 {
		n := 333 + i*1001
		r2 := eng.Judge(s, q(n))
		if v := r2.Statements[0]; v.Text != q(n) || v.Offset != 0 || v.Line != 1 || v.Col != 1 || r2.Action != Allow || r2.Path != PathFast {
			t.Fatalf("reused result: %q at %d (%d:%d), %v by %v; want %q at 0 (1:1), allow by the fast path", v.Text, v.Offset, v.Line, v.Col, r2.Action, r2.Path, q(n))
		}
		if fp, err := r2.Statements[0].Fingerprint(); err != nil || fp == "" {
			t.Fatalf("fingerprint of the reused verdict: %q, %v", fp, err)
		}
		s.Recycle(r2)
	}
	if raceEnabled {
		return
	}
	text := q(4444)
	allocs := testing.AllocsPerRun(200, func() {
		s.Recycle(eng.Judge(s, text))
	})
	if allocs != 0 {
		t.Errorf("judging on the fast path with Recycle: %v allocations, want 0", allocs)
	}
}

// TestJudgeParameters: a text with parameters, as the extended protocol
// Parses it again and again, is answered from the cache; a '$' inside a
// string does not keep a text with other literals from the fast path; and
// each decision stays the analysis's.
func TestJudgeParameters(t *testing.T) {
	p, err := Compile(PolicyConfig{Protect: []string{"public.users"}})
	if err != nil {
		t.Fatal(err)
	}
	eng := NewEngine(p, EngineOptions{})
	s := knownSession("app")
	for _, tc := range []struct {
		first, again string
		path         Path // of again
		want         Action
	}{
		{"UPDATE users SET name = $1 WHERE id = $2", "UPDATE users SET name = $1 WHERE id = $2", PathCache, Allow},
		{"DELETE FROM users WHERE $1", "DELETE FROM users WHERE $1", PathCache, Block},
		{"UPDATE users SET name = $1", "UPDATE users SET name = $1", PathCache, Block},
		// Parameters and a literal: normalize leaves the text to the
		// analysis, every time its literal changes.
		{"UPDATE users SET name = $1 WHERE id = 1", "UPDATE users SET name = $1 WHERE id = 2", PathFull, Allow},
		{"SELECT '$1' FROM users WHERE id = 1", "SELECT '$2' FROM users WHERE id = 2", PathFast, Allow},
		{"UPDATE users SET name = 'a$'", "UPDATE users SET name = 'b$'", PathFast, Block},
	} {
		if r := eng.Judge(s, tc.first); r.Action != tc.want {
			t.Errorf("%q: %v, want %v", tc.first, r.Action, tc.want)
		}
		if r := eng.Judge(s, tc.again); r.Path != tc.path || r.Action != tc.want {
			t.Errorf("%q after %q: %v by %v, want %v by %v", tc.again, tc.first, r.Action, r.Path, tc.want, tc.path)
		}
	}
}

// TestJudgeBorrowed judges texts that live in a buffer which is then
// overwritten, as the proxy's read buffer is by the next message: what a
// caller keeps of a Result (after Keep), and what the cache keeps, must
// still read as the text that was judged. Only the fast path's Result
// Borrows: the enforcer copies the text for no other (a cached BEGIN's is
// kept without one).
func TestJudgeBorrowed(t *testing.T) {
	p, err := Compile(PolicyConfig{Protect: []string{"public.users"}})
	if err != nil {
		t.Fatal(err)
	}
	eng := NewEngine(p, EngineOptions{})
	s := knownSession("app")
	ctx := context.Background()
	// borrow judges text from a buffer of its own and then overwrites the
	// buffer, after keep (which may Keep a copy) has run.
	borrow := func(text string, keep func(r *Result, kept string)) *Result {
		buf := []byte(text)
		r, kept := eng.JudgeBorrowed(ctx, s, unsafe.String(&buf[0], len(buf)))
		keep(r, kept)
		for i := range buf {
			buf[i] = '#'
		}
		return r
	}
	texts := func(r *Result) (got []string) {
		for _, v := range r.Statements {
			got = append(got, v.Text)
			for _, c := range v.Changes {
				if c.Kind == ChangePrepare {
					got = append(got, "prepare: "+c.Text)
				}
			}
		}
		return got
	}
	q := func(n int) string {
		return fmt.Sprintf("SELECT %d;\n  PREPARE p AS SELECT name FROM users WHERE id = %[1]d", n)
	}
	want := func(n int) []string {
		prep := fmt.Sprintf("PREPARE p AS SELECT name FROM users WHERE id = %d", n)
		return []string{fmt.Sprintf("SELECT %d", n), prep, "prepare: " + prep}
	}

	// Never seen: the full analysis judges (and caches) a copy.
	r := borrow(q(1), func(r *Result, kept string) {
		if r.Path != PathFull || kept != q(1) || r.Borrows() {
			t.Errorf("first judgement: path %v, kept %q, borrows %v; want the full path and a copy", r.Path, kept, r.Borrows())
		}
	})
	if got := texts(r); !slices.Equal(got, want(1)) {
		t.Errorf("full path, after the buffer was reused: %q, want %q", got, want(1))
	}
	// Again, and with other literals: the fast path cuts its verdicts from
	// the borrowed text, and Keep moves them (and the PREPARE's text) to
	// the copy.
	for _, n := range []int{1, 22} {
		r = borrow(q(n), func(r *Result, kept string) {
			if r.Path != PathFast || kept != "" || !r.Borrows() {
				t.Errorf("judging %q again: path %v, kept %q, borrows %v; want the fast path, borrowing", q(n), r.Path, kept, r.Borrows())
			}
			r.Keep(strings.Clone(q(n)))
		})
		if got := texts(r); !slices.Equal(got, want(n)) {
			t.Errorf("fast path kept, after the buffer was reused: %q, want %q", got, want(n))
		}
	}
	// A text without literals, again: the cache's result, whose texts are
	// its own; Keep changes nothing there.
	const noLiterals = "SELECT name FROM users;\n  PREPARE p AS SELECT name FROM users"
	borrow(noLiterals, func(*Result, string) {})
	for range 2 {
		r = borrow(noLiterals, func(r *Result, kept string) {
			if r.Path != PathCache || kept != "" || r.Borrows() {
				t.Errorf("judging %q again: path %v, kept %q, borrows %v; want the cache and no copy", noLiterals, r.Path, kept, r.Borrows())
			}
			r.Keep(strings.Repeat("!", len(noLiterals)))
		})
		want := []string{"SELECT name FROM users", "PREPARE p AS SELECT name FROM users", "prepare: PREPARE p AS SELECT name FROM users"}
		if got := texts(r); !slices.Equal(got, want) {
			t.Errorf("cache, after the buffer was reused and Keep: %q, want %q", got, want)
		}
	}
}
