package rules

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// bigMessage pads a message past several chunks with statements that put
// semicolons where a careless splitter would cut: in strings, quoted
// identifiers, dollar quotes, comments, parentheses and a BEGIN ATOMIC
// body that spans a cut.
func bigMessage(tail string) string {
	var b strings.Builder
	for i := 0; b.Len() < 3*chunkBytes; i++ {
		fmt.Fprintf(&b, "INSERT INTO events VALUES (%d, 'a;b', $q$;$q$); -- ;;\n", i)
		if i%500 == 0 {
			b.WriteString("SELECT \"semi;colon\" FROM t /* ; /* nested ; */ ; */ WHERE x IN (SELECT 1);\n")
			b.WriteString("CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC\n")
			for range 2000 {
				b.WriteString("  SELECT 1;\n")
			}
			b.WriteString("END;\n")
		}
	}
	b.WriteString(tail)
	return b.String()
}

// TestChunkedParseMatchesWholeParse: parsing a long message in pieces
// yields exactly the statements, texts and positions of parsing it whole.
func TestChunkedParseMatchesWholeParse(t *testing.T) {
	msg := bigMessage("DROP TABLE users")
	cuts, err := scanBounds(msg, DefaultLimits, chunkBytes)
	if err != nil || len(cuts) < 2 {
		t.Fatalf("scanBounds: %d cuts, %v", len(cuts), err)
	}
	inBody := 0
	for _, c := range cuts {
		before := msg[:c]
		if b := strings.LastIndex(before, "BEGIN ATOMIC"); b >= 0 && !strings.Contains(before[b:], "END;") {
			inBody++
		}
	}
	if inBody == 0 {
		t.Fatal("no cut falls inside a BEGIN ATOMIC body: the test does not exercise the fallback")
	}
	whole, err := pg_query.Parse(msg)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	err = parseChunks(context.Background(), msg, cuts, func(raw *pg_query.RawStmt) error {
		got = append(got, fmt.Sprintf("%d:%q", raw.StmtLocation, stmtSlice(msg, raw)))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(whole.Stmts) {
		t.Fatalf("%d statements in pieces, %d whole", len(got), len(whole.Stmts))
	}
	for i, raw := range whole.Stmts {
		if want := fmt.Sprintf("%d:%q", raw.StmtLocation, stmtSlice(msg, raw)); got[i] != want {
			t.Fatalf("statement %d: %s, parsed whole %s", i, got[i], want)
		}
	}

	eng := testEngine(t, defaultProtect)
	r := eng.Judge(knownSession("app"), msg)
	last := r.Statements[len(r.Statements)-1]
	wantLine := strings.Count(msg, "\n") + 1
	if r.Action != Block || last.Text != "DROP TABLE users" || last.Line != wantLine || last.Col != 1 || r.Decider != len(r.Statements)-1 {
		t.Errorf("last statement %q at %d:%d (want %d:1), action %s", last.Text, last.Line, last.Col, wantLine, r.Action)
	}
}

// TestChunkedParseError: a syntax error anywhere makes the whole message
// unparseable, as the server refuses it whole.
func TestChunkedParseError(t *testing.T) {
	eng := testEngine(t, defaultProtect)
	for _, msg := range []string{
		bigMessage("SELEC 1;"),
		"SELEC 1;\n" + bigMessage(""),
		strings.Replace(bigMessage(""), "END;", "", 1), // a BEGIN ATOMIC never ended
		strings.Replace(bigMessage(""), "WHERE x IN (SELECT 1)", "WHERE x IN (SELECT 1; )", 1), // a semicolon in parentheses
	} {
		r := eng.Judge(knownSession("app"), msg)
		if r.Action != Block || len(r.Statements) != 1 || r.Statements[0].Effects[0].Op != OpUnparseable {
			t.Errorf("message with a syntax error: %d statements, action %s", len(r.Statements), r.Action)
		}
	}
}

// TestAnalysisBudget: past limits.analysis_statements or
// limits.analysis_time, a message is refused unanalysed, and the refusal
// names the limit and how to raise it. A message within them is judged.
func TestAnalysisBudget(t *testing.T) {
	p, err := Compile(defaultProtect)
	if err != nil {
		t.Fatal(err)
	}
	msg := strings.Repeat("SELECT 1;\n", 100)
	for _, tc := range []struct {
		limits Limits
		want   Action
		key    string
	}{
		{Limits{MaxStatements: 100}, Allow, ""},
		{Limits{MaxStatements: 99}, Block, "limits.analysis_statements"},
		{Limits{MaxTime: time.Nanosecond}, Block, "limits.analysis_time"},
		{Limits{MaxStatements: -1, MaxTime: -1}, Allow, ""},
	} {
		eng := NewEngine(p, EngineOptions{Limits: tc.limits})
		r := eng.Judge(knownSession("app"), msg)
		if r.Action != tc.want {
			t.Errorf("%+v: %s, want %s", tc.limits, r.Action, tc.want)
			continue
		}
		if tc.key == "" {
			continue
		}
		s := r.Decision().Sentence
		if !strings.Contains(s, tc.key) || !strings.Contains(s, "raise "+tc.key) || r.Decision().Rule != RuleDefaultOpaque {
			t.Errorf("%+v: %q does not name %s and how to raise it", tc.limits, s, tc.key)
		}
		// Not cached: with the limit raised, the same text is judged.
		eng.SetLimits(Limits{MaxStatements: -1, MaxTime: -1})
		if r := eng.Judge(knownSession("app"), msg); r.Action != Allow {
			t.Errorf("%+v: after raising the limit: %s", tc.limits, r.Action)
		}
	}
}

// TestJudgeContextStops: the analysis of a long message ends soon after
// its context does (the session is gone), refusing it; the refusal is not
// cached.
func TestJudgeContextStops(t *testing.T) {
	eng := NewEngine(mustCompile(t, defaultProtect), EngineOptions{})
	msg := strings.Repeat("INSERT INTO events VALUES (1);\n", 100_000)
	ctx, cancel := context.WithCancelCause(context.Background())
	gone := errors.New("client disconnected")
	cancel(gone)
	start := time.Now()
	r := eng.JudgeContext(ctx, knownSession("app"), msg)
	if r.Action != Block || !strings.Contains(r.Decision().Sentence, "analysis stopped: client disconnected") {
		t.Fatalf("cancelled analysis: %s, %q", r.Action, r.Decision().Sentence)
	}
	if len(r.Statements) != 1 {
		t.Errorf("%d statements judged after the context ended", len(r.Statements))
	}
	t.Logf("stopped after %s", time.Since(start))
	if r := eng.Judge(knownSession("app"), msg); r.Action != Allow || len(r.Statements) != 100_000 {
		t.Errorf("the same message afterwards: %s, %d statements (a stopped analysis was cached?)", r.Action, len(r.Statements))
	}
}

// TestSkipLeadingComments: where a statement's text starts, after the
// white space and comments its slice of the message begins with.
func TestSkipLeadingComments(t *testing.T) {
	for text, want := range map[string]int{
		"":                        0,
		"DROP TABLE t":            0,
		"-1":                      0, // a minus, not a comment
		"/ 2":                     0,
		"  DROP TABLE t":          2,
		"\n\t DROP":               3,
		"-- c\nDROP":              5,
		"--":                      2,
		"/* a /* b */ c */ DROP":  18,
		"/* unterminated DROP":    0,
		" \n/* x */ -- y\n  DROP": 17,
	} {
		if got := skipLeadingComments(text); got != want {
			t.Errorf("skipLeadingComments(%q) = %d, want %d", text, got, want)
		}
	}
}

func mustCompile(t *testing.T, cfg PolicyConfig) *Policy {
	t.Helper()
	p, err := Compile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestPlacerMatchesAScanFromTheStart checks the incremental positions
// against counting from the start, offsets in order and not.
func TestPlacerMatchesAScanFromTheStart(t *testing.T) {
	msg := "a\nbc\n\nd\r\nefg\n"
	scan := func(off int) (int, int) {
		line, start := 1, 0
		for i := 0; i < off; i++ {
			if msg[i] == '\n' {
				line, start = line+1, i+1
			}
		}
		return line, off - start + 1
	}
	pl := newPlacer(msg)
	for _, off := range []int{0, 0, 1, 2, 3, 5, 5, 6, 7, 9, 12, 4, 4, 13} {
		l, c := pl.position(off)
		if wl, wc := scan(off); l != wl || c != wc {
			t.Errorf("offset %d: %d:%d, want %d:%d", off, l, c, wl, wc)
		}
	}
}
