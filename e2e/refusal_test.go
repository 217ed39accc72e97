package e2e

import (
	"context"
	"encoding/json"
	"net"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgmoat/pgmoat/internal/clients"
	"github.com/pgmoat/pgmoat/internal/moattest"
	"github.com/pgmoat/pgmoat/internal/pgtest"
)

// TestRefusalFieldsArePgmoats checks that a refusal reads as pgmoat's own
// in every client: the SQLSTATE, message, detail and hint pgmoat wrote,
// and none of the fields of the DO block the server raised it from (the
// PL/pgSQL CONTEXT line, pl_exec.c and its line and routine).
func TestRefusalFieldsArePgmoats(t *testing.T) {
	c := pgtest.Get(t)
	db := newDB(t, c)
	m := moattest.Start(t, c, moattest.Options{Config: blockPolicy})
	ctx := context.Background()
	url := m.SuperConnString(db)

	noServerFields := func(t *testing.T, what string, pe *pgconn.PgError) {
		t.Helper()
		if pe.Where != "" || pe.File != "" || pe.Line != 0 || pe.Routine != "" || pe.InternalQuery != "" {
			t.Errorf("%s: server-side fields reach the client: where=%q file=%q line=%d routine=%q internal=%q",
				what, pe.Where, pe.File, pe.Line, pe.Routine, pe.InternalQuery)
		}
		if pe.Detail == "" || pe.Hint == "" {
			t.Errorf("%s: detail %q, hint %q; want both", what, pe.Detail, pe.Hint)
		}
	}

	t.Run("pgx simple", func(t *testing.T) {
		conn := connect(t, url, simpleProtocol)
		_, err := conn.Exec(ctx, "DROP TABLE users")
		noServerFields(t, "simple Query", wantBlocked(t, err, "public.users", "DROP TABLE users"))
		wantUsable(t, conn)
	})
	t.Run("pgx extended", func(t *testing.T) {
		conn := connect(t, url)
		err := conn.PgConn().ExecParams(ctx, "DELETE FROM orders", nil, nil, nil, nil).Read().Err
		noServerFields(t, "Parse/Bind/Execute", wantBlocked(t, err, "public.orders", "DELETE FROM orders"))
		wantUsable(t, conn)
	})
	t.Run("pgx in a transaction", func(t *testing.T) {
		conn := connect(t, url)
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_, err = tx.Exec(ctx, "TRUNCATE users")
		noServerFields(t, "in a transaction", wantBlocked(t, err, "public.users", "TRUNCATE users"))
		// The transaction is the server's: aborted.
		_, err = tx.Exec(ctx, "SELECT 1")
		wantCode(t, err, "25P02", "statement after the refusal")
		tx.Rollback(ctx)
		wantUsable(t, conn)
	})

	t.Run("psql verbose", func(t *testing.T) {
		_, errOut, code := clients.Psql(t, url, "", "-c", `\set VERBOSITY verbose`, "-c", "DROP TABLE users")
		if code != 1 || !strings.Contains(errOut, "ERROR:  42501: pgmoat blocked DROP TABLE public.users") ||
			!strings.Contains(errOut, "DETAIL:  Statement: DROP TABLE users") || !strings.Contains(errOut, "HINT:  ") {
			t.Errorf("psql: exit %d, stderr:\n%s", code, errOut)
		}
		for _, bad := range []string{"CONTEXT:", "LOCATION:", "inline_code_block", "pl_exec.c"} {
			if strings.Contains(errOut, bad) {
				t.Errorf("psql shows %q:\n%s", bad, errOut)
			}
		}
	})

	t.Run("node-postgres", func(t *testing.T) {
		host, port, _ := net.SplitHostPort(m.Addr)
		p, _ := strconv.Atoi(port)
		out := clients.RunNode(t, clients.NodeConfig{Host: host, Port: p, User: c.Superuser, Password: c.SuperPassword,
			Database: db, Scenario: "error", Query: "DROP TABLE users"})
		var doc struct {
			Error map[string]any `json:"error"`
		}
		if err := json.Unmarshal(out, &doc); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		e := doc.Error
		if e["code"] != "42501" || !strings.HasPrefix(e["message"].(string), "pgmoat blocked DROP TABLE public.users") ||
			e["detail"] == nil || e["hint"] == nil {
			t.Errorf("node-postgres error: %v", e)
		}
		for _, k := range []string{"where", "file", "line", "routine", "internalQuery"} {
			if e[k] != nil {
				t.Errorf("node-postgres error has %s = %v", k, e[k])
			}
		}
	})
}
