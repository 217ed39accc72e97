package rules

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgmoat/pgmoat/internal/pgtest"
)

func TestMain(m *testing.M) {
	// Children of TestDeepNestingSurvives and fuzz workers need no server.
	if os.Getenv("PGMOAT_DEEP_CHILD") == "1" || slices.ContainsFunc(os.Args, func(a string) bool { return strings.HasPrefix(a, "-test.fuzzworker") }) {
		os.Exit(m.Run())
	}
	os.Exit(pgtest.Main(m))
}

// liveCorpusDB builds the corpus database on the real server.
func liveCorpusDB(t *testing.T) (*pgtest.Cluster, string) {
	t.Helper()
	c := pgtest.Get(t)
	db := c.NewDatabase(t)
	ddl, err := os.ReadFile("../testdata/corpus/schema.sql")
	if err != nil {
		t.Fatal(err)
	}
	c.Exec(t, db, string(ddl))
	return c, db
}

// TestLiveCatalogCorpus loads the catalog from a real database built from
// the corpus schema with CatalogQuery, as the proxy would, and requires
// every corpus outcome with it.
func TestLiveCatalogCorpus(t *testing.T) {
	c, db := liveCorpusDB(t)
	conn := c.Connect(t, db)
	cat, n := liveCatalog(t, conn)
	if n < 10 || len(cat.fkChildren[qname{"public", "orgs"}]) == 0 || len(cat.viewBases[qname{"public", "payments_v"}]) == 0 {
		t.Fatalf("catalog incomplete: %d rows, fk %v, views %v", n, cat.fkChildren, cat.viewBases)
	}
	eng := NewEngine(corpusPolicy(t), EngineOptions{})
	eng.SetCatalog(db, cat)
	for _, row := range loadCorpus(t) {
		r := eng.Judge(NewSession(Identity{User: "postgres", Database: db}), row.sql)
		got := "allow"
		if r.Action >= Hold {
			got = "block"
		}
		if got != row.expected {
			t.Errorf("%s %q: got %s, want %s", row.id, row.sql, got, row.expected)
		}
	}
	// A view pgmoat learnt from the live catalog leads DML to its base.
	if r := eng.Judge(NewSession(Identity{User: "postgres", Database: db}), "DELETE FROM payments_v"); r.Action != Block {
		t.Errorf("DELETE through view payments_v: %s", r.Action)
	}
}

// liveCatalog loads a catalog with CatalogQuery, as the proxy does, and
// says how many rows it read.
func liveCatalog(t *testing.T, conn *pgx.Conn) (*Catalog, int) {
	t.Helper()
	rows, err := conn.Query(context.Background(), CatalogQuery)
	if err != nil {
		t.Fatal(err)
	}
	cat := NewCatalog()
	n := 0
	for rows.Next() {
		var kind, schema, name string
		var os, on *string
		if err := rows.Scan(&kind, &schema, &name, &os, &on); err != nil {
			t.Fatal(err)
		}
		var a, b string
		if os != nil {
			a = *os
		}
		if on != nil {
			b = *on
		}
		if err := cat.AddRow(kind, schema, name, a, b); err != nil {
			t.Fatal(err)
		}
		n++
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return cat, n
}

// TestLiveReach checks, on a real server, that what an operation on a
// parent reaches is what the server does to the children and partitions
// CatalogQuery reports, and that pgmoat counts it.
func TestLiveReach(t *testing.T) {
	c := pgtest.Get(t)
	db := c.NewDatabase(t)
	c.Exec(t, db, `
CREATE TABLE parent (id int);
CREATE TABLE users (id int PRIMARY KEY, note text) INHERITS (parent);
INSERT INTO users SELECT g, 'n' FROM generate_series(1, 5) g;
CREATE TABLE events (id int) PARTITION BY RANGE (id);
CREATE TABLE events_1 PARTITION OF events FOR VALUES FROM (0) TO (10);
INSERT INTO events SELECT g FROM generate_series(1, 5) g;
CREATE TABLE scratch (id int);`)
	conn := c.Connect(t, db)
	ctx := context.Background()
	cat, _ := liveCatalog(t, conn)
	p, err := Compile(PolicyConfig{Protect: []string{"public.users", "public.events_1"}})
	if err != nil {
		t.Fatal(err)
	}
	eng := NewEngine(p, EngineOptions{})
	eng.SetCatalog(db, cat)
	count := func(table string) int {
		var n int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	for _, c := range []struct {
		sql, table string
		want       Action
	}{
		{"DELETE FROM parent", "users", Block},
		{"UPDATE parent SET id = -id", "users", Block},
		{"TRUNCATE parent", "users", Block},
		{"DELETE FROM ONLY parent", "", Allow},
		{"TRUNCATE events", "events_1", Block},
		{"DROP TABLE events", "events_1", Block},
		{"DELETE FROM scratch", "", Allow},
	} {
		s := NewSession(Identity{User: "postgres", Database: db})
		s.SetSearchPath([]string{"$user", "public"})
		if r := eng.Judge(s, c.sql); r.Action != c.want {
			t.Errorf("%s: pgmoat says %s, want %s", c.sql, r.Action, c.want)
		}
		if c.table == "" {
			continue
		}
		// What the server does: the protected table loses its rows (or
		// goes). Run it in a transaction and roll back.
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, c.sql); err != nil {
			t.Fatalf("%s: %v", c.sql, err)
		}
		var after int
		err = tx.QueryRow(ctx, "SELECT count(*) FROM "+c.table+" WHERE id > 0").Scan(&after)
		tx.Rollback(ctx)
		if err != nil && !strings.Contains(err.Error(), "42P01") {
			t.Errorf("%s: counting %s: %v", c.sql, c.table, err)
		} else if err == nil && after != 0 {
			t.Errorf("%s: %s still has %d rows on the server: the edge is not what the server does", c.sql, c.table, after)
		}
		if n := count(c.table); n != 5 {
			t.Fatalf("%s: rollback left %d rows", c.table, n)
		}
	}
	// A view that reads a temporary relation is temporary itself, as
	// createView assumes.
	if _, err := conn.Exec(ctx, "CREATE TEMP TABLE t (id int); CREATE VIEW v AS SELECT t.id, users.note FROM t, users"); err != nil {
		t.Fatal(err)
	}
	var temp bool
	if err := conn.QueryRow(ctx, "SELECT relpersistence = 't' FROM pg_class WHERE oid = 'v'::regclass").Scan(&temp); err != nil || !temp {
		t.Errorf("view over a temporary table: temporary=%v, err %v", temp, err)
	}
}

// TestLiveNameSemantics checks pgmoat's idea of names and search_path
// against the server: what SHOW search_path says after each SET, and
// which name a long or escaped identifier becomes.
func TestLiveNameSemantics(t *testing.T) {
	c := pgtest.Get(t)
	db := c.NewDatabase(t)
	conn := c.Connect(t, db)
	ctx := context.Background()
	eng := testEngine(t, defaultProtect)
	for _, set := range []string{
		"SET search_path TO billing, public",
		"SET search_path = 'billing, public'",
		`SET search_path TO "Billing", "$user"`,
		"SET search_path TO BILLING",
		"SET search_path = 'Billing'",
		"SET search_path TO billing, 'x y', \"$user\"",
		"SET search_path TO " + strings.Repeat("s", 70),
	} {
		if _, err := conn.Exec(ctx, set); err != nil {
			t.Fatalf("%s: %v", set, err)
		}
		var show string
		if err := conn.QueryRow(ctx, "SHOW search_path").Scan(&show); err != nil {
			t.Fatal(err)
		}
		s := knownSession("postgres")
		judgeAndApply(eng, s, set, 'I')
		entries, ok := s.SearchPath()
		server, sok := splitIdentList(show)
		if !ok || !sok || !slices.Equal(entries, server) {
			t.Errorf("%s: server has %q (%q), pgmoat has %q", set, show, server, entries)
		}
	}
	// set_config parses its value as a list.
	var show string
	if err := conn.QueryRow(ctx, "SELECT set_config('search_path', 'Billing, \"Public\"', false)").Scan(&show); err != nil {
		t.Fatal(err)
	}
	s := knownSession("postgres")
	judgeAndApply(eng, s, "SELECT set_config('search_path', 'Billing, \"Public\"', false)", 'I')
	server, _ := splitIdentList(show)
	if entries, _ := s.SearchPath(); !slices.Contains(entries, server[0]) || !slices.Contains(entries, server[1]) {
		t.Errorf("set_config: server %q, pgmoat %q", server, entries)
	}
	// Identifier folding, U& escapes and truncation come from the parser;
	// check the names the server stores match what analysis sees.
	long := strings.Repeat("Ab", 40)
	for _, create := range []string{`CREATE TABLE U&"\0055SERS" (id int)`, "CREATE TABLE " + long + " (id int)", `CREATE TABLE "` + long + `" (id int)`} {
		c.Exec(t, db, create)
	}
	got := map[string]bool{}
	rows, err := conn.Query(ctx, "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var n string
		rows.Scan(&n)
		got[n] = true
	}
	for _, want := range []string{"USERS", truncateIdent(strings.ToLower(long)), truncateIdent(long)} {
		if !got[want] {
			t.Errorf("server has no table %q (has %v)", want, got)
		}
	}
	for _, drop := range []string{`DROP TABLE U&"\0055SERS"`, "DROP TABLE " + long} {
		r := eng.Judge(knownSession("postgres"), drop)
		if len(r.Statements) != 1 || len(r.Statements[0].Effects) != 1 || !got[r.Statements[0].Effects[0].Object.Name] {
			t.Errorf("%s: analysis names %+v, not a table the server has", drop, r.Statements[0].Effects)
		}
	}
}
