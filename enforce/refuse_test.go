package enforce

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgmoat/pgmoat/internal/pgtest"
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

func TestBlockRefusalNamesStatementRuleAndHint(t *testing.T) {
	r := refusal{code: codeQueryCanceled, message: "canceling statement due to user request"}
	if do := r.doBlock(); !strings.HasPrefix(do, "DO $pgmoat0$ BEGIN RAISE EXCEPTION USING ERRCODE = '57014'") || strings.Contains(do, "DETAIL") {
		t.Errorf("doBlock = %s", do)
	}
}
