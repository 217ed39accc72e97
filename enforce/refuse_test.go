package enforce

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgmoat/pgmoat/internal/pgtest"
	"github.com/pgmoat/pgmoat/rules"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// TestRefusalRaisesExactlyItsText runs the DO blocks pgmoat sends in place
// of refused statements on a real server. The refusal embeds the client's
// own SQL, so text built to close a dollar quote or the DO block must come
// back verbatim in the error and never run.
func TestRefusalRaisesExactlyItsText(t *testing.T) {
	c := pgtest.Get(t)
	db := c.NewDatabase(t)
	c.Exec(t, db, "CREATE TABLE canary (id int); INSERT INTO canary VALUES (1)")
	conn := c.Connect(t, db)
	ctx := context.Background()
	for _, text := range []string{
		"DROP TABLE users",
		"x $q0$ y",
		"$q0$ || (SELECT 1) || $q0$",
		"$pgmoat0$; DELETE FROM canary; DO $pgmoat0$",
		"$pgmoat0$ $pgmoat1$ $q0$ $q1$ $$ $ $",
		"it's \"quoted\" \\ back\\slash; -- comment\n/* block */ E'\\x' U&\"\\0041\"",
		"trailing dollar $",
		"ends like a quote tag $pgmoat",
		"ends like a quote tag $pgmoat0",
		"unicode: é ✓ 🚫",
	} {
		r := refusal{code: codeInsufficientPrivilege, message: "pgmoat blocked " + text, detail: "Statement: " + text, hint: "hint " + text}
		_, err := conn.Exec(ctx, r.doBlock())
		var pe *pgconn.PgError
		if !errors.As(err, &pe) {
			t.Fatalf("%q: err = %v, want a server error", text, err)
		}
		if pe.Code != r.code || pe.Message != r.message || pe.Detail != r.detail || pe.Hint != r.hint || pe.Severity != "ERROR" {
			t.Errorf("%q: server raised %s %q / %q / %q, want %s %q / %q / %q", text,
				pe.Code, pe.Message, pe.Detail, pe.Hint, r.code, r.message, r.detail, r.hint)
		}
	}
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM canary").Scan(&n); err != nil || n != 1 {
		t.Fatalf("canary rows = %d, err = %v: refusal text ran as SQL", n, err)
	}
}

// TestBlockRefusalNamesStatementRuleAndHint checks what a blocked client
// reads: the statement and object in the message, the rule in DETAIL, and
// how to get it approved in HINT; and that empty fields are left out of
// the DO block.
func TestBlockRefusalNamesStatementRuleAndHint(t *testing.T) {
	res := &rules.Result{Decider: 0, Statements: []*rules.Verdict{{
		Text:     "DROP TABLE public.users",
		Action:   rules.Block,
		Rule:     rules.RuleDefaultDestructive,
		Sentence: "DROP TABLE public.users: table is protected by public.users; rule default-destructive",
	}}}
	r := blockRefusal(res, "")
	if r.code != "42501" || r.message != "pgmoat blocked DROP TABLE public.users: table is protected by public.users" ||
		!strings.Contains(r.detail, "Statement: DROP TABLE public.users") || !strings.Contains(r.detail, "Rule: default-destructive") ||
		!strings.Contains(r.hint, "pgmoat approve --file") {
		t.Errorf("refusal = %+v", r)
	}
	c := refusal{code: codeQueryCanceled, message: "canceling statement due to user request"}
	if do := c.doBlock(); !strings.HasPrefix(do, "DO $pgmoat0$ BEGIN RAISE EXCEPTION USING ERRCODE = '57014'") || strings.Contains(do, "DETAIL") || strings.Contains(do, "HINT") {
		t.Errorf("doBlock = %s", do)
	}
}
