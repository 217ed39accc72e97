package e2e

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgmoat/pgmoat/approvals"
	"github.com/pgmoat/pgmoat/internal/moattest"
	"github.com/pgmoat/pgmoat/internal/pgtest"
)

// guardSchema has tables big enough for row limits to mean something:
// members (protected, 50 rows), a partitioned protected table, and an
// unprotected one.
const guardSchema = `
CREATE TABLE members (id int PRIMARY KEY, team int, email text, note text);
INSERT INTO members SELECT g, g % 5, 'm' || g || '@x', 'n' FROM generate_series(1, 50) g;
CREATE TABLE events (id int, at date) PARTITION BY RANGE (at);
CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
INSERT INTO events SELECT g, '2024-01-01'::date + g FROM generate_series(1, 40) g;
CREATE TABLE scratch (id int);
INSERT INTO scratch SELECT generate_series(1, 10);
CREATE FUNCTION run_sql(q text) RETURNS void LANGUAGE plpgsql AS $$BEGIN EXECUTE q; END$$;
`

const guardPolicy = `policy:
  protect: [public.members, public.events]
  rules:
    - {name: deploys, match: {applications: [deployer]}, operations: [destructive], action: hold}
`

func guardDB(t *testing.T, c *pgtest.Cluster) string {
	t.Helper()
	db := c.NewDatabase(t)
	c.Exec(t, db, guardSchema)
	return db
}

// wantRefused fails t unless err is pgmoat's refusal of a statement it ran
// under guard, measured as what says.
func wantRefused(t testing.TB, err error, what string) {
	t.Helper()
	pe := wantCode(t, err, "42501", "guarded statement")
	if !strings.HasPrefix(pe.Message, "pgmoat refused") || !strings.Contains(pe.Message, what) ||
		!strings.Contains(pe.Detail, "rolled it back") {
		t.Fatalf("want pgmoat's refusal measuring %q, got message=%q detail=%q", what, pe.Message, pe.Detail)
	}
}

// TestGuardedExecution runs statements that static analysis cannot settle
// through pgmoat and checks that what would destroy a protected table is
// rolled back and refused with what it would have done, while the same
// construct doing little passes and commits.
func TestGuardedExecution(t *testing.T) {
	c := pgtest.Get(t)
	db := guardDB(t, c)
	m := moattest.Start(t, c, moattest.Options{Config: guardPolicy})
	pg := direct(t, c, db)
	ctx := context.Background()
	simple := connect(t, m.SuperConnString(db), simpleProtocol)
	extended := connect(t, m.SuperConnString(db))

	for _, tc := range []struct {
		name    string
		conn    *pgx.Conn
		sql     string
		args    []any
		refused string // a fragment of the measured sentence; "" when it must pass
	}{
		{"data-dependent predicate", simple, "DELETE FROM members WHERE id > 0", nil, "would delete 50 of 50 rows of public.members"},
		{"its twin", simple, "DELETE FROM members WHERE id > 49", nil, ""},
		{"parameter array", extended, "DELETE FROM members WHERE id = ANY($1)", []any{[]int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49}}, "would delete 49 of 49"},
		{"its twin", extended, "DELETE FROM members WHERE id = ANY($1)", []any{[]int{48}}, ""},
		{"update every row by a non-key column", extended, "UPDATE members SET note = $1 WHERE email LIKE $2", []any{"x", "%@x"}, "would update 48 of 48"},
		{"its twin", extended, "UPDATE members SET note = $1 WHERE email LIKE $2", []any{"x", "m1%"}, ""},
		{"loop of targeted deletes", simple, "DO $$DECLARE r record; BEGIN FOR r IN SELECT id FROM members LOOP DELETE FROM members WHERE id = r.id; END LOOP; END$$", nil, "would delete 48 of 48"},
		{"its twin", simple, "DO $$DECLARE r record; BEGIN FOR r IN SELECT id FROM members WHERE id = 1 LOOP UPDATE members SET note = 'loop' WHERE id = r.id; END LOOP; END$$", nil, ""},
		{"existing function running SQL it is given", simple, "SELECT run_sql('DROP TABLE members')", nil, "would drop, rename or detach public.members"},
		{"its twin", simple, "SELECT run_sql('INSERT INTO scratch VALUES (11)')", nil, ""},
		{"dynamic SQL", simple, "DO $$BEGIN EXECUTE 'TRUNCATE ' || chr(109) || 'embers'; END$$", nil, "would truncate or rewrite"},
		{"partition", simple, "DELETE FROM events_2024 WHERE at > '2000-01-01'", nil, "would delete 40 of 40 rows of public.events"},
		{"its twin", simple, "DELETE FROM events_2024 WHERE id = 40", nil, ""},
		{"unprotected", simple, "DELETE FROM scratch WHERE id > 0", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := countRows(t, pg, "public.members") + countRows(t, pg, "public.events")
			_, err := tc.conn.Exec(ctx, tc.sql, tc.args...)
			after := countRows(t, pg, "public.members") + countRows(t, pg, "public.events")
			if tc.refused != "" {
				wantRefused(t, err, tc.refused)
				if !tableExists(t, pg, "public.members") || after != before {
					t.Fatalf("protected rows went from %d to %d", before, after)
				}
			} else if err != nil {
				t.Fatalf("harmless twin refused: %v", err)
			}
			wantUsable(t, tc.conn)
		})
	}
	wantTable(t, pg, "public.scratch", 0)
	if n := countRows(t, pg, "public.members WHERE note = 'x'"); n == 0 {
		t.Error("the twin update did not commit")
	}
}

// TestGuardedTransactions: inside the client's transaction a refusal
// aborts it, as any error does, and a passing guarded statement leaves it
// open with its effect; messages with BEGIN ... COMMIT keep PostgreSQL's
// semantics.
func TestGuardedTransactions(t *testing.T) {
	c := pgtest.Get(t)
	db := guardDB(t, c)
	m := moattest.Start(t, c, moattest.Options{Config: guardPolicy})
	pg := direct(t, c, db)
	ctx := context.Background()

	t.Run("client transaction", func(t *testing.T) {
		conn := connect(t, m.SuperConnString(db), simpleProtocol)
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "UPDATE members SET note = 'tx' WHERE email LIKE 'm2%'"); err != nil {
			t.Fatalf("targeted update in a transaction: %v", err)
		}
		if _, err := tx.Exec(ctx, "UPDATE members SET note = 'all' WHERE id > 0"); err == nil {
			t.Fatal("update of every row passed")
		} else {
			wantRefused(t, err, "would update 50 of 50")
		}
		_, err = tx.Exec(ctx, "SELECT 1")
		wantCode(t, err, "25P02", "statement after the refusal")
		if err := tx.Commit(ctx); err == nil || !strings.Contains(err.Error(), "rollback") {
			t.Fatalf("COMMIT of the aborted transaction: %v", err)
		}
		if n := countRows(t, pg, "public.members WHERE note IN ('tx', 'all')"); n != 0 {
			t.Fatalf("%d rows changed by a rolled-back transaction", n)
		}
		wantUsable(t, conn)

		tx, _ = conn.Begin(ctx)
		if _, err := tx.Exec(ctx, "UPDATE members SET note = 'kept' WHERE email LIKE 'm3%'"); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if n := countRows(t, pg, "public.members WHERE note = 'kept'"); n != 11 {
			t.Fatalf("committed guarded update changed %d rows, want 11", n)
		}
	})

	t.Run("one message with BEGIN and COMMIT", func(t *testing.T) {
		conn := connect(t, m.SuperConnString(db), simpleProtocol)
		_, err := conn.Exec(ctx, "BEGIN; INSERT INTO scratch VALUES (100); DELETE FROM members WHERE team >= 0; COMMIT")
		wantRefused(t, err, "would delete")
		wantTable(t, pg, "public.members", 50)
		// As in PostgreSQL, the error skipped the COMMIT: the
		// transaction block is left failed until the client ends it.
		if conn.PgConn().TxStatus() != 'E' {
			t.Fatalf("transaction status %q after the refused message, want E", conn.PgConn().TxStatus())
		}
		if _, err := conn.Exec(ctx, "ROLLBACK"); err != nil {
			t.Fatal(err)
		}
		if n := countRows(t, pg, "public.scratch WHERE id = 100"); n != 0 {
			t.Fatal("the INSERT before the refused statement committed")
		}
		if _, err := conn.Exec(ctx, "BEGIN; INSERT INTO scratch VALUES (101); DELETE FROM members WHERE team = 0 AND id > 45; COMMIT"); err != nil {
			t.Fatalf("harmless twin: %v", err)
		}
		if n := countRows(t, pg, "public.scratch WHERE id = 101"); n != 1 {
			t.Fatal("the twin's INSERT did not commit")
		}
		wantTable(t, pg, "public.members", 49)
		var status string
		if err := conn.QueryRow(ctx, "SELECT 'idle'").Scan(&status); err != nil {
			t.Fatalf("after the message: %v", err)
		}
		if conn.PgConn().TxStatus() != 'I' {
			t.Fatalf("transaction status %q after COMMIT, want I", conn.PgConn().TxStatus())
		}
	})

	t.Run("implicit transaction of a multi-statement message", func(t *testing.T) {
		conn := connect(t, m.SuperConnString(db), simpleProtocol)
		_, err := conn.Exec(ctx, "INSERT INTO scratch VALUES (200); UPDATE members SET note = 'z' WHERE team < 10")
		wantRefused(t, err, "would update")
		if n := countRows(t, pg, "public.scratch WHERE id = 200"); n != 0 {
			t.Fatal("a statement of the refused message committed")
		}
	})

	t.Run("extended protocol batch", func(t *testing.T) {
		conn := connect(t, m.SuperConnString(db))
		b := &pgx.Batch{}
		b.Queue("INSERT INTO scratch VALUES (300)")
		b.Queue("DELETE FROM members WHERE team >= $1", 0)
		b.Queue("SELECT 1")
		err := conn.SendBatch(ctx, b).Close()
		wantRefused(t, err, "would delete")
		if n := countRows(t, pg, "public.scratch WHERE id = 300"); n != 0 {
			t.Fatal("a statement of the refused batch committed")
		}
		b = &pgx.Batch{}
		b.Queue("INSERT INTO scratch VALUES (301)")
		b.Queue("DELETE FROM members WHERE team = $1 AND id > $2", 1, 45)
		if err := conn.SendBatch(ctx, b).Close(); err != nil {
			t.Fatalf("harmless batch: %v", err)
		}
		if n := countRows(t, pg, "public.scratch WHERE id = 301"); n != 1 {
			t.Fatal("the harmless batch did not commit")
		}
		if conn.PgConn().TxStatus() != 'I' {
			t.Fatalf("transaction status %q after the batch, want I", conn.PgConn().TxStatus())
		}
		wantUsable(t, conn)
	})
}

// TestGuardedHold: a rule that holds destructive statements holds a
// guarded one with what it was measured to do; approval runs it again
// and it really happens; the audit log records the measurement.
func TestGuardedHold(t *testing.T) {
	c := pgtest.Get(t)
	db := guardDB(t, c)
	m := moattest.Start(t, c, moattest.Options{Config: guardPolicy})
	pg := direct(t, c, db)

	h := startHeld(t, m, db, "DELETE FROM members WHERE team >= 0", false)
	id := h.holdNotice(t)
	info, err := approver(m, false).GetHold(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if info.BlastRadius != "would delete 50 of 50 rows of public.members" {
		t.Fatalf("hold's blast radius: %q", info.BlastRadius)
	}
	time.Sleep(200 * time.Millisecond)
	notReturned(t, h.done, "held DELETE")
	wantTable(t, pg, "public.members", 50)
	if _, err := approver(m, false).Approve(context.Background(), id, "retention job"); err != nil {
		t.Fatal(err)
	}
	r := await(t, h.done, 30*time.Second, "DELETE after approval")
	if r.err != nil || r.tag != "DELETE 50" {
		t.Fatalf("after approval: tag %q, err %v", r.tag, r.err)
	}
	wantTable(t, pg, "public.members", 0)
	waitHoldStatus(t, m, id, approvals.StatusApproved)

	// The audit log has the measured decision.
	data, err := os.ReadFile(m.AuditPath)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, line := range strings.Split(string(data), "\n") {
		var ev map[string]any
		if json.Unmarshal([]byte(line), &ev) != nil {
			continue
		}
		if ev["event"] == "decision" && ev["decision"] == "hold" && ev["blast_radius"] == "would delete 50 of 50 rows of public.members" {
			found = true
		}
	}
	if !found {
		t.Fatalf("no hold decision with the blast radius in the audit log:\n%s", data)
	}
}

// TestGuardReadsSettingsBack: code pgmoat does not follow may change the
// session's search_path; after a guarded statement pgmoat takes it from
// the server, so a later unqualified DROP is judged against the real path.
func TestGuardReadsSettingsBack(t *testing.T) {
	c := pgtest.Get(t)
	db := guardDB(t, c)
	c.Exec(t, db, "CREATE SCHEMA app; CREATE TABLE app.members (id int);")
	m := moattest.Start(t, c, moattest.Options{Config: guardPolicy})
	pg := direct(t, c, db)
	ctx := context.Background()
	conn := connect(t, m.SuperConnString(db), simpleProtocol)
	if _, err := conn.Exec(ctx, "SET search_path = app"); err != nil {
		t.Fatal(err)
	}
	// Run through code pgmoat cannot follow: the search_path changes
	// behind its back.
	if _, err := conn.Exec(ctx, "DO $$BEGIN EXECUTE 'SELECT pg_catalog.set_config(''search_path'', ' || quote_literal('public') || ', false)'; END$$"); err != nil {
		t.Fatalf("guarded DO: %v", err)
	}
	_, err := conn.Exec(ctx, "DROP TABLE members")
	wantBlocked(t, err, "public.members", "DROP after the hidden search_path change")
	wantTable(t, pg, "public.members", 50)
	if !tableExists(t, pg, "app.members") {
		t.Fatal("app.members is gone")
	}
}

// TestGuardCoversBind: a parameter's input runs code when the statement
// is bound (a domain's check), before it executes: the guard opens at
// the Bind.
func TestGuardCoversBind(t *testing.T) {
	c := pgtest.Get(t)
	db := guardDB(t, c)
	c.Exec(t, db, `
CREATE FUNCTION wipe_members(x int) RETURNS bool LANGUAGE plpgsql AS $$BEGIN DELETE FROM public.members; RETURN true; END$$;
CREATE DOMAIN wiping AS int CHECK (wipe_members(VALUE));
CREATE TABLE inbox (v wiping);
CREATE DOMAIN plain_int AS int CHECK (VALUE > 0);
CREATE TABLE outbox (v plain_int);`)
	var wiping, plain uint32
	pg := direct(t, c, db)
	ctx := context.Background()
	if err := pg.QueryRow(ctx, "SELECT 'wiping'::regtype::oid, 'plain_int'::regtype::oid").Scan(&wiping, &plain); err != nil {
		t.Fatal(err)
	}
	m := moattest.Start(t, c, moattest.Options{Config: guardPolicy})
	conn := connect(t, m.SuperConnString(db))

	t.Run("inferred domain parameter", func(t *testing.T) {
		_, err := conn.Exec(ctx, "INSERT INTO inbox VALUES ($1)", 1)
		wantRefused(t, err, "would delete 50 of 50 rows of public.members")
		wantTable(t, pg, "public.members", 50)
		wantUsable(t, conn)
	})
	t.Run("declared parameter type, statement that uses none", func(t *testing.T) {
		rr := conn.PgConn().ExecParams(ctx, "SELECT 1 WHERE $1::int IS NOT NULL OR true", [][]byte{[]byte("1")}, []uint32{wiping}, nil, nil).Read()
		wantRefused(t, rr.Err, "would delete 50 of 50")
		wantTable(t, pg, "public.members", 50)
		wantUsable(t, conn)
	})
	t.Run("harmless twins", func(t *testing.T) {
		if _, err := conn.Exec(ctx, "INSERT INTO outbox VALUES ($1)", 1); err != nil {
			t.Fatal(err)
		}
		rr := conn.PgConn().ExecParams(ctx, "SELECT $1::int", [][]byte{[]byte("5")}, []uint32{plain}, nil, nil).Read()
		if rr.Err != nil || len(rr.Rows) != 1 {
			t.Fatalf("declared harmless domain: %v", rr.Err)
		}
		wantTable(t, pg, "public.outbox", 1)
	})
}

// TestGuardedPortalRebound: a portal bound from a statement that runs
// under guard, then bound again (the unnamed portal, as drivers use it)
// from a SELECT, executes the SELECT. The guard recorded for the portal's
// earlier life must not survive the new Bind, on either path that judges
// it: a statement prepared with SQL PREPARE (judged at the Bind) and one
// Parse'd and allowed (settled without judging).
func TestGuardedPortalRebound(t *testing.T) {
	c := pgtest.Get(t)
	db := guardDB(t, c)
	m := moattest.Start(t, c, moattest.Options{Config: guardPolicy})
	conn := connect(t, m.SuperConnString(db))
	pc := conn.PgConn()
	ctx := context.Background()

	if _, err := pc.Prepare(ctx, "touch", "UPDATE members SET note = note WHERE id < $1", nil); err != nil {
		t.Fatal(err)
	}
	guarded := func() {
		t.Helper()
		guards := func() float64 {
			return metricValue(t, scrapeMetrics(t, m), "pgmoat_guarded_statements_total", nil)
		}
		before := guards()
		rr := pc.ExecPrepared(ctx, "touch", [][]byte{[]byte("3")}, nil, nil).Read()
		if rr.Err != nil || rr.CommandTag.String() != "UPDATE 2" {
			t.Fatalf("guarded UPDATE: tag %q, err %v", rr.CommandTag, rr.Err)
		}
		if after := guards(); after <= before {
			t.Fatalf("the UPDATE did not run under guard (pgmoat_guarded_statements_total %v -> %v)", before, after)
		}
	}
	wantAnswer := func(name string) {
		t.Helper()
		rr := pc.ExecPrepared(ctx, name, nil, nil, nil).Read()
		if rr.Err != nil || len(rr.Rows) != 1 || string(rr.Rows[0][0]) != "42" {
			t.Fatalf("Bind of %s to the portal the guarded UPDATE used: tag %q, rows %q, err %v", name, rr.CommandTag, rr.Rows, rr.Err)
		}
	}

	guarded()
	if err := pc.Exec(ctx, "PREPARE answer AS SELECT 42").Close(); err != nil {
		t.Fatal(err)
	}
	wantAnswer("answer") // SQL PREPARE: judged at the Bind, as EXECUTE answer
	guarded()
	if _, err := pc.Prepare(ctx, "plain", "SELECT 42", nil); err != nil {
		t.Fatal(err)
	}
	wantAnswer("plain") // Parse'd and allowed: settled without judging
	wantTable(t, direct(t, c, db), "public.members", 50)
}

// TestStatementNameReused: a Bind finds a statement by name, the same one
// again and again (enforce keeps the last it found). A name that comes to
// stand for another statement, after a Close, after DISCARD ALL, or for
// the unnamed statement after a new Parse, must bind as the new one: here
// an UPDATE that runs under guard, after a SELECT of the same name that
// was bound several times.
func TestStatementNameReused(t *testing.T) {
	c := pgtest.Get(t)
	db := guardDB(t, c)
	m := moattest.Start(t, c, moattest.Options{Config: guardPolicy})
	conn := connect(t, m.SuperConnString(db))
	pc := conn.PgConn()
	ctx := context.Background()
	const update = "UPDATE members SET note = note WHERE id < $1"
	guards := func() float64 {
		return metricValue(t, scrapeMetrics(t, m), "pgmoat_guarded_statements_total", nil)
	}
	selectTwice := func(name string) {
		t.Helper()
		if _, err := pc.Prepare(ctx, name, "SELECT 42", nil); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if rr := pc.ExecPrepared(ctx, name, nil, nil, nil).Read(); rr.Err != nil || len(rr.Rows) != 1 {
				t.Fatalf("SELECT as %q: rows %q, err %v", name, rr.Rows, rr.Err)
			}
		}
	}
	wantGuarded := func(what string, run func() *pgconn.ResultReader) {
		t.Helper()
		before := guards()
		rr := run().Read()
		if rr.Err != nil || rr.CommandTag.String() != "UPDATE 2" {
			t.Fatalf("%s: tag %q, err %v", what, rr.CommandTag, rr.Err)
		}
		if after := guards(); after <= before {
			t.Fatalf("%s did not run under guard (pgmoat_guarded_statements_total %v -> %v)", what, before, after)
		}
	}
	three := [][]byte{[]byte("3")}

	selectTwice("s")
	if err := pc.Deallocate(ctx, "s"); err != nil {
		t.Fatal(err)
	}
	if _, err := pc.Prepare(ctx, "s", update, nil); err != nil {
		t.Fatal(err)
	}
	wantGuarded("the UPDATE prepared as s after Close", func() *pgconn.ResultReader { return pc.ExecPrepared(ctx, "s", three, nil, nil) })

	selectTwice("d")
	if err := pc.Exec(ctx, "DISCARD ALL").Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := pc.Prepare(ctx, "d", update, nil); err != nil {
		t.Fatal(err)
	}
	wantGuarded("the UPDATE prepared as d after DISCARD ALL", func() *pgconn.ResultReader { return pc.ExecPrepared(ctx, "d", three, nil, nil) })

	// Names that differ only at their end, long and short (one a prefix
	// of the other): each Bind must find its own statement, not the one
	// bound last.
	long := "statement_name_longer_than_fifteen_"
	selectTwice(long + "a")
	selectTwice("p")
	for _, name := range []string{long + "b", "pp"} {
		if _, err := pc.Prepare(ctx, name, update, nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []struct{ sel, upd string }{{long + "a", long + "b"}, {"p", "pp"}} {
		if rr := pc.ExecPrepared(ctx, n.sel, nil, nil, nil).Read(); rr.Err != nil {
			t.Fatal(rr.Err)
		}
		wantGuarded("the UPDATE prepared as "+n.upd+" bound after "+n.sel, func() *pgconn.ResultReader { return pc.ExecPrepared(ctx, n.upd, three, nil, nil) })
	}

	// The unnamed statement: Parse, Bind and Execute each time.
	for range 2 {
		if rr := pc.ExecParams(ctx, "SELECT 42", nil, nil, nil, nil).Read(); rr.Err != nil {
			t.Fatal(rr.Err)
		}
	}
	wantGuarded("the UPDATE parsed as the unnamed statement", func() *pgconn.ResultReader { return pc.ExecParams(ctx, update, three, nil, nil, nil) })
	wantTable(t, direct(t, c, db), "public.members", 50)
}
