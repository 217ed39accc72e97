package rules

import (
	"context"
	"strings"
	"testing"

	pg_query "github.com/pganalyze/pg_query_go/v6"

	"github.com/pgmoat/pgmoat/internal/pgtest"
)

// TestQuoteIdentIsSafeSQL checks that every name QuoteIdent renders reads
// back, in generated SQL, as exactly that name (keywords the grammar
// reserves included), and that plain names stay bare for display.
func TestQuoteIdentIsSafeSQL(t *testing.T) {
	for name, want := range map[string]string{
		"users": "users", "_x1": "_x1", "a$b": "a$b", "abort": "abort",
		"Users": `"Users"`, "select": `"select"`, "user": `"user"`, "order": `"order"`, "json_table": `"json_table"`,
		"1abc": `"1abc"`, "has space": `"has space"`, `we"ird`: `"we""ird"`, "é": `"é"`, "$x": `"$x"`,
	} {
		got := QuoteIdent(name)
		if got != want {
			t.Errorf("QuoteIdent(%q) = %s, want %s", name, got, want)
		}
		tree, err := pg_query.Parse("EXECUTE " + got)
		if err != nil {
			t.Errorf("EXECUTE %s: %v", got, err)
			continue
		}
		if n := tree.Stmts[0].Stmt.GetExecuteStmt().GetName(); n != name {
			t.Errorf("EXECUTE %s names %q, want %q", got, n, name)
		}
	}
}

// TestReservedKeywords checks the keyword table against the parser pgmoat
// links, and, for completeness, against every keyword the test server
// knows.
func TestReservedKeywords(t *testing.T) {
	reserved := func(word string) bool {
		res, err := pg_query.Scan(word)
		if err != nil || len(res.Tokens) != 1 {
			t.Fatalf("scan %q: %v %v", word, res, err)
		}
		k := res.Tokens[0].KeywordKind
		return k != pg_query.KeywordKind_NO_KEYWORD && k != pg_query.KeywordKind_UNRESERVED_KEYWORD
	}
	for word := range reservedKeywords {
		if !reserved(word) {
			t.Errorf("%q is in reservedKeywords but the parser does not reserve it", word)
		}
	}
	c := pgtest.Get(t)
	rows, err := c.Connect(t, "postgres").Query(context.Background(), "SELECT word FROM pg_get_keywords()")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for rows.Next() {
		var word string
		if err := rows.Scan(&word); err != nil {
			t.Fatal(err)
		}
		n++
		if reserved(word) && !reservedKeywords[word] {
			t.Errorf("%q is reserved by the parser but missing from reservedKeywords", word)
		}
	}
	if rows.Err() != nil || n < 400 {
		t.Fatalf("%d keywords from the server: %v", n, rows.Err())
	}
}

// TestDollarQuoteIsVerbatim checks that no text, however it is built to
// close the quote, comes back as anything but itself.
func TestDollarQuoteIsVerbatim(t *testing.T) {
	for _, s := range []string{
		"", "plain", "$pgmoat$", "x $pgmoat$ y $pgmoat0$", "ends like the tag $pgmoat", "ends like the tag $pgmoat0",
		"$", "$$", "trailing $", "it's \\ \"quoted\"", "é ✓",
	} {
		q := DollarQuote(s)
		tree, err := pg_query.Parse("SELECT " + q)
		if err != nil {
			t.Errorf("SELECT %s: %v", q, err)
			continue
		}
		val := tree.Stmts[0].Stmt.GetSelectStmt().GetTargetList()[0].GetResTarget().GetVal().GetAConst().GetSval().GetSval()
		if val != s || len(tree.Stmts) != 1 {
			t.Errorf("DollarQuote(%q) = %s reads back as %q", s, q, val)
		}
	}
}

func TestShorten(t *testing.T) {
	for _, c := range []struct {
		in   string
		n    int
		want string
	}{
		{"DROP\n  TABLE\tusers", 60, "DROP TABLE users"},
		{strings.Repeat("x", 10), 10, strings.Repeat("x", 10)},
		{strings.Repeat("x", 11), 10, strings.Repeat("x", 9) + "…"},
		{strings.Repeat("é", 11), 10, strings.Repeat("é", 9) + "…"},
		{"🚫🚫🚫", 2, "🚫…"},
	} {
		if got := Shorten(c.in, c.n); got != c.want {
			t.Errorf("Shorten(%q, %d) = %q, want %q", c.in, c.n, got, c.want)
		}
	}
}
