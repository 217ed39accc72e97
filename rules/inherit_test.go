package rules

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgmoat/pgmoat/internal/pgtest"
)

// lineageDDL: public.events (protected) is partitioned, one partition
// partitioned again; public.ledger (protected) has an inheritance child;
// nothing else is protected by name.
const lineageDDL = `
CREATE TABLE public.events (id int) PARTITION BY RANGE (id);
CREATE TABLE public.events_2024 PARTITION OF events FOR VALUES FROM (0) TO (100) PARTITION BY RANGE (id);
CREATE TABLE public.events_2024_q1 PARTITION OF events_2024 FOR VALUES FROM (0) TO (25);
CREATE TABLE archive.events_old PARTITION OF events FOR VALUES FROM (100) TO (200);
CREATE TABLE public.ledger (id int);
CREATE TABLE public.ledger_eu (region text) INHERITS (ledger);
CREATE TABLE public.scratch (id int);
CREATE TABLE public.scratch_part (id int) PARTITION BY RANGE (id);
CREATE TABLE public.scratch_part_1 PARTITION OF scratch_part FOR VALUES FROM (0) TO (10);
`

var lineagePolicy = PolicyConfig{Protect: []string{"public.events", "public.ledger"}}

func lineageEngine(t *testing.T) *Engine {
	t.Helper()
	eng := testEngine(t, lineagePolicy)
	cat, err := CatalogFromSQL(lineageDDL)
	if err != nil {
		t.Fatal(err)
	}
	eng.SetCatalog("app", cat)
	return eng
}

// TestProtectionFlowsDown: partitions and inheritance children of a
// protected table, at any depth, are protected for every operation, and
// the sentence says why.
func TestProtectionFlowsDown(t *testing.T) {
	runSeqCases(t, lineageEngine, func() *Session { return knownSession("app") }, []seqCase{
		{"drop partition", nil, "DROP TABLE events_2024", Block, "public.events_2024 is a partition or inheritance child of public.events, protected by public.events"},
		{"drop sub-partition", nil, "DROP TABLE events_2024_q1", Block, "public.events_2024_q1 is a partition or inheritance child of public.events_2024, which is a partition or inheritance child of public.events, protected by public.events"},
		{"partition in another schema", nil, "TRUNCATE archive.events_old", Block, "protected by public.events"},
		{"truncate partition", nil, "TRUNCATE events_2024_q1", Block, "public.events"},
		{"delete partition", nil, "DELETE FROM events_2024", Block, "public.events"},
		{"update partition", nil, "UPDATE events_2024_q1 SET id = 1", Block, "public.events"},
		{"alter partition", nil, "ALTER TABLE events_2024 DROP COLUMN id", Block, "public.events"},
		{"detach below", nil, "ALTER TABLE events_2024 DETACH PARTITION events_2024_q1", Block, "public.events"},
		{"rename partition", nil, "ALTER TABLE events_2024 RENAME TO e", Block, "public.events"},
		{"drop child", nil, "DROP TABLE ledger_eu", Block, "public.ledger_eu is a partition or inheritance child of public.ledger"},
		{"delete child", nil, "DELETE FROM ledger_eu", Block, "public.ledger"},
		{"no inherit", nil, "ALTER TABLE ledger_eu NO INHERIT ledger", Block, "public.ledger"},
		{"in a function body", nil, "CREATE FUNCTION f() RETURNS void LANGUAGE sql AS 'TRUNCATE events_2024'", Block, "public.events"},
		// Partitions the session makes.
		{"own partition", []string{"CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM (200) TO (300)"}, "DROP TABLE events_2025", Block, "public.events"},
		{"own partition, one message", nil, "CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM (200) TO (300); TRUNCATE events_2025", Block, "public.events"},
		{"attached", []string{"CREATE TABLE x (id int)", "ALTER TABLE events ATTACH PARTITION x FOR VALUES FROM (300) TO (400)"}, "DROP TABLE x", Block, "public.events"},
		{"own child", []string{"CREATE TABLE kid (id int)", "ALTER TABLE kid INHERIT ledger"}, "DELETE FROM kid", Block, "public.ledger"},
		{"child of an own partition", []string{"CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM (200) TO (300) PARTITION BY RANGE (id)", "CREATE TABLE events_2025_a PARTITION OF events_2025 FOR VALUES FROM (200) TO (210)"}, "DROP TABLE events_2025_a", Block, "public.events"},
		// Harmless twins.
		{"insert into partition", nil, "INSERT INTO events_2024_q1 VALUES (1)", Allow, ""},
		{"select partition", nil, "SELECT * FROM events_2024", Allow, ""},
		{"targeted delete in partition", nil, "DELETE FROM events_2024_q1 WHERE id = 3", Allow, ""},
		{"unprotected partition", nil, "DROP TABLE scratch_part_1", Allow, ""},
		{"unprotected parent", nil, "TRUNCATE scratch_part", Allow, ""},
		{"unrelated", nil, "DROP TABLE scratch", Allow, ""},
		{"own table made a partition of an unprotected one", []string{"CREATE TABLE y (id int)", "ALTER TABLE scratch_part ATTACH PARTITION y FOR VALUES FROM (10) TO (20)"}, "DROP TABLE y", Allow, ""},
	})
}

// TestProtectionFlowsDownAcrossFiles: pgmoat check judges the files of a
// run as one history: a partition of a protected table made in one file
// is protected in the next.
func TestProtectionFlowsDownAcrossFiles(t *testing.T) {
	eng := testEngine(t, lineagePolicy)
	files := []string{
		"CREATE TABLE public.events (id int) PARTITION BY RANGE (id);\nCREATE TABLE public.events_2024 PARTITION OF public.events FOR VALUES FROM (0) TO (100);",
		"CREATE TABLE public.ledger_eu () INHERITS (public.ledger);",
		"DROP TABLE public.events_2024;",
		"DELETE FROM public.ledger_eu;",
		"DROP TABLE public.scratch;",
	}
	want := []Action{Allow, Allow, Block, Block, Allow}
	for i, f := range files {
		s := knownSession("app")
		r := eng.JudgeScript(s, f)
		if r.Action != want[i] {
			t.Errorf("file %d %q: got %s, want %s", i+1, f, r.Action, want[i])
		}
		for _, v := range r.Statements {
			eng.Learn("app", v.Changes...)
		}
	}
}

// TestLiveProtectionFlowsDown: on a real server, with the catalog loaded
// as the proxy loads it, operations on partitions and children destroy
// rows of the protected table above them, and pgmoat blocks them.
func TestLiveProtectionFlowsDown(t *testing.T) {
	c := pgtest.Get(t)
	db := c.NewDatabase(t)
	c.Exec(t, db, `
CREATE TABLE events (id int) PARTITION BY RANGE (id);
CREATE TABLE events_a PARTITION OF events FOR VALUES FROM (0) TO (10) PARTITION BY RANGE (id);
CREATE TABLE events_a1 PARTITION OF events_a FOR VALUES FROM (0) TO (5);
CREATE TABLE events_a2 PARTITION OF events_a FOR VALUES FROM (5) TO (10);
CREATE TABLE events_b PARTITION OF events FOR VALUES FROM (10) TO (20);
INSERT INTO events SELECT g FROM generate_series(0, 19) g;
CREATE TABLE ledger (id int);
CREATE TABLE ledger_eu () INHERITS (ledger);
INSERT INTO ledger SELECT g FROM generate_series(1, 5) g;
INSERT INTO ledger_eu SELECT g FROM generate_series(6, 10) g;
CREATE TABLE scratch (id int);`)
	conn := c.Connect(t, db)
	ctx := context.Background()
	cat, _ := liveCatalog(t, conn)
	p, err := Compile(PolicyConfig{Protect: []string{"public.events", "public.ledger"}})
	if err != nil {
		t.Fatal(err)
	}
	eng := NewEngine(p, EngineOptions{})
	eng.SetCatalog(db, cat)
	count := func(q string) int {
		var n int
		if err := conn.QueryRow(ctx, q, pgx.QueryExecModeSimpleProtocol).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	for _, tc := range []struct {
		sql, counter string // counter: the protected rows
		harmful      bool
		sentence     string
	}{
		{"DROP TABLE events_b", "SELECT count(*) FROM events", true, "public.events_b is a partition of public.events"},
		{"TRUNCATE events_a1", "SELECT count(*) FROM events", true, "which is a partition of public.events"},
		{"DELETE FROM events_a", "SELECT count(*) FROM events", true, "public.events"},
		{"UPDATE events_a2 SET id = 6", "SELECT count(*) FROM events WHERE id <> 6", true, "public.events"},
		{"ALTER TABLE events_a DETACH PARTITION events_a1", "SELECT count(*) FROM events", true, "public.events"},
		{"ALTER TABLE ledger_eu NO INHERIT ledger", "SELECT count(*) FROM ledger", true, "public.ledger_eu is an inheritance child of public.ledger"},
		{"DELETE FROM ledger_eu", "SELECT count(*) FROM ledger", true, "public.ledger"},
		{"INSERT INTO events_b VALUES (11)", "SELECT count(*) FROM events WHERE id <> 11", false, ""},
		{"DROP TABLE scratch", "SELECT count(*) FROM events", false, ""},
	} {
		before := count(tc.counter)
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, tc.sql); err != nil {
			t.Fatalf("%q: %v", tc.sql, err)
		}
		var after int
		// Simple protocol: a plan cached inside the transaction must not
		// outlive its rollback.
		if err := tx.QueryRow(ctx, tc.counter, pgx.QueryExecModeSimpleProtocol).Scan(&after); err != nil {
			t.Fatal(err)
		}
		if err := tx.Rollback(ctx); err != nil {
			t.Fatalf("%q: rollback: %v", tc.sql, err)
		}
		if (after < before) != tc.harmful {
			t.Errorf("%q: protected rows %d → %d; harmful: %v", tc.sql, before, after, tc.harmful)
		}
		r := eng.Judge(NewSession(Identity{User: "postgres", Database: db}), tc.sql)
		if blocked := r.Action == Block; blocked != tc.harmful {
			t.Errorf("%q: got %s (harmful: %v)", tc.sql, r.Action, tc.harmful)
			continue
		}
		if tc.sentence != "" && !strings.Contains(r.Decision().Sentence, tc.sentence) {
			t.Errorf("%q: sentence %q does not say %q", tc.sql, r.Decision().Sentence, tc.sentence)
		}
	}
}
