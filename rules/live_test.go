package rules

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"

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
	ddl, err := os.ReadFile("testdata/corpus/schema.sql")
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
	ctx := context.Background()
	rows, err := conn.Query(ctx, CatalogQuery)
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
			a, b = *os, *on
		}
		if err := cat.AddRow(kind, schema, name, a, b); err != nil {
			t.Fatal(err)
		}
		n++
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
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
