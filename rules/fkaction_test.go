package rules

import (
	"context"
	"strings"
	"testing"

	"github.com/pgmoat/pgmoat/internal/pgtest"
)

// fkDDL has foreign keys from protected tables (public.users, billing.*)
// to unprotected ones, with each referential action.
const fkDDL = `
CREATE TABLE public.orgs (id int PRIMARY KEY, name text);
CREATE TABLE public.users (id int PRIMARY KEY, org_id int REFERENCES public.orgs(id) ON DELETE CASCADE);
CREATE TABLE public.teams (id int PRIMARY KEY);
CREATE TABLE billing.invoices (id int PRIMARY KEY, team_id int,
  FOREIGN KEY (team_id) REFERENCES teams(id) ON DELETE SET NULL ON UPDATE CASCADE);
CREATE TABLE public.regions (id int PRIMARY KEY);
CREATE TABLE billing.payments (id int, region_id int REFERENCES regions(id));
CREATE TABLE public.kinds (id int PRIMARY KEY);
CREATE TABLE billing.refunds (id int, kind_id int REFERENCES kinds(id) ON DELETE RESTRICT ON UPDATE RESTRICT);
CREATE TABLE public.shops (id int PRIMARY KEY);
CREATE TABLE public.stores (id int PRIMARY KEY, shop_id int);
ALTER TABLE stores ADD CONSTRAINT stores_shop FOREIGN KEY (shop_id) REFERENCES shops(id) ON DELETE CASCADE;
CREATE TABLE billing.orders (id int, store_id int REFERENCES stores(id) ON DELETE CASCADE);
CREATE TABLE public.tags (id int PRIMARY KEY);
CREATE TABLE public.scratch (id int, tag_id int REFERENCES tags(id) ON DELETE CASCADE ON UPDATE CASCADE);
`

// fkCases are judged against a catalog of fkDDL, from the SQL or from
// the live database.
var fkCases = []struct {
	sql        string
	want       Action
	op         Operation // an effect of the decision, when blocked
	inSentence string
}{
	{"DELETE FROM orgs", Block, OpDeleteAll, "reaches public.users (its rows are deleted with those of public.orgs through ON DELETE CASCADE of its foreign key)"},
	{"DELETE FROM public.orgs WHERE true", Block, OpDeleteAll, "ON DELETE CASCADE"},
	{"DELETE FROM orgs WHERE id = id", Block, OpDeleteAll, ""},
	{"MERGE INTO orgs o USING (SELECT 1 AS id) s ON true WHEN MATCHED THEN DELETE", Block, OpDeleteAll, "ON DELETE CASCADE"},
	{"WITH d AS (DELETE FROM orgs RETURNING id) SELECT count(*) FROM d", Block, OpDeleteAll, ""},
	// SET NULL rewrites the protected rows: an update of all of them.
	{"DELETE FROM teams", Block, OpUpdateAll, "ON DELETE SET NULL or SET DEFAULT"},
	{"UPDATE teams SET id = id + 100", Block, OpUpdateAll, "ON UPDATE CASCADE"},
	// Transitively: shops → stores (unprotected) → billing.orders.
	{"DELETE FROM shops", Block, OpDeleteAll, "reaches billing.orders"},
	// Targeted deletes are what applications do.
	{"DELETE FROM orgs WHERE id = 3", Allow, 0, ""},
	{"DELETE FROM shops WHERE $1", Block, OpDeleteAll, ""}, // $1 may be true: counts as every row
	{"DELETE FROM shops WHERE id = $1", Allow, 0, ""},
	{"DELETE FROM teams WHERE id IN (1, 2)", Allow, 0, ""},
	// No ON UPDATE action on users' key: updating orgs leaves users be.
	{"UPDATE orgs SET name = 'x'", Allow, 0, ""},
	// NO ACTION and RESTRICT: the server refuses while rows reference it.
	{"DELETE FROM regions", Allow, 0, ""},
	{"UPDATE regions SET id = id + 1", Allow, 0, ""},
	{"DELETE FROM kinds", Allow, 0, ""},
	{"UPDATE kinds SET id = id + 1", Allow, 0, ""},
	// The cascade reaches only unprotected tables.
	{"DELETE FROM tags", Allow, 0, ""},
	{"UPDATE tags SET id = -id", Allow, 0, ""},
	// TRUNCATE without CASCADE fails on a referenced table; with it, as before.
	{"TRUNCATE orgs", Allow, 0, ""},
	{"TRUNCATE orgs CASCADE", Block, OpTruncate, ""},
}

func runFKCases(t *testing.T, eng *Engine, db string) {
	t.Helper()
	for _, c := range fkCases {
		s := NewSession(Identity{User: "app", Database: db})
		s.SetSearchPath([]string{"$user", "public"})
		r := eng.Judge(s, c.sql)
		if r.Action != c.want {
			t.Errorf("%q: got %s, want %s", c.sql, r.Action, c.want)
			for _, v := range r.Statements {
				t.Logf("   %q: %s %q %+v", v.Text, v.Action, v.Sentence, v.Effects)
			}
			continue
		}
		if c.want != Block {
			continue
		}
		d := r.Decision()
		found := false
		for _, ef := range d.Effects {
			found = found || ef.Op == c.op
		}
		if !found {
			t.Errorf("%q: no %s effect in %+v", c.sql, c.op, d.Effects)
		}
		if !strings.Contains(d.Sentence, c.inSentence) {
			t.Errorf("%q: sentence %q does not say %q", c.sql, d.Sentence, c.inSentence)
		}
	}
}

// TestForeignKeyActionsFromSQL: DELETE or UPDATE of every row of an
// unprotected table reaches the protected tables whose foreign keys to it
// cascade or set on delete or update, as CatalogFromSQL reads them.
func TestForeignKeyActionsFromSQL(t *testing.T) {
	cat, err := CatalogFromSQL(fkDDL)
	if err != nil {
		t.Fatal(err)
	}
	eng := testEngine(t, defaultProtect)
	eng.SetCatalog("app", cat)
	runFKCases(t, eng, "app")
}

// TestForeignKeyActionsOfSession: foreign keys with actions that the
// session creates, in an earlier message or earlier in the same one, lead
// a DELETE or UPDATE of the referenced table to the protected table.
// Contract changes are allowed, so that a foreign key added to a
// protected table is applied.
func TestForeignKeyActionsOfSession(t *testing.T) {
	runSeqCases(t, func(t *testing.T) *Engine { return catalogEngineWith(t, contractAllowed) }, func() *Session { return knownSession("app") }, []seqCase{
		{name: "create then delete", steps: []string{"CREATE TABLE billing.members (id int, org_id int REFERENCES orgs(id) ON DELETE CASCADE)"},
			sql: "DELETE FROM orgs", want: Block, inSentence: "reaches billing.members (its rows are deleted with those of public.orgs through ON DELETE CASCADE"},
		{name: "same message", sql: "CREATE TABLE billing.members (org_id int REFERENCES orgs ON DELETE SET DEFAULT); DELETE FROM orgs",
			want: Block, inSentence: "ON DELETE SET NULL or SET DEFAULT"},
		{name: "table constraint", sql: "CREATE TABLE billing.members (org_id int, FOREIGN KEY (org_id) REFERENCES orgs ON UPDATE SET NULL); UPDATE orgs SET id = id * 2",
			want: Block, inSentence: "ON UPDATE CASCADE, SET NULL or SET DEFAULT"},
		{name: "alter add constraint", steps: []string{"ALTER TABLE billing.invoices ADD CONSTRAINT inv_scratch FOREIGN KEY (id) REFERENCES scratch(id) ON DELETE CASCADE"},
			sql: "DELETE FROM scratch WHERE 1 = 1", want: Block},
		{name: "targeted delete", steps: []string{"CREATE TABLE billing.members (org_id int REFERENCES orgs ON DELETE CASCADE)"},
			sql: "DELETE FROM orgs WHERE id = 7", want: Allow},
		{name: "no action", steps: []string{"CREATE TABLE billing.members (org_id int REFERENCES orgs ON DELETE NO ACTION ON UPDATE RESTRICT)"},
			sql: "DELETE FROM orgs; UPDATE orgs SET id = 1", want: Allow},
		{name: "unprotected child", steps: []string{"CREATE TABLE public.members (org_id int REFERENCES orgs ON DELETE CASCADE)"},
			sql: "DELETE FROM orgs", want: Allow},
		{name: "on delete only", steps: []string{"CREATE TABLE billing.members (org_id int REFERENCES orgs ON DELETE CASCADE)"},
			sql: "UPDATE orgs SET id = id + 1", want: Allow},
	})
	// What one session made, the database's other sessions see too.
	eng := catalogEngine(t)
	runAllowed(eng, knownSession("app"), "CREATE TABLE billing.members (org_id int REFERENCES orgs ON DELETE CASCADE)")
	if r := eng.Judge(knownSession("app"), "DELETE FROM orgs"); r.Action != Block {
		t.Errorf("another session's cascading foreign key: DELETE FROM orgs is %s", r.Action)
	}
}

// TestLiveForeignKeyActions loads fkDDL's catalog from a real database
// with CatalogQuery, requires the same outcomes, and checks that the
// server does what the edges say: DELETE of the parent empties or
// rewrites the protected child, NO ACTION refuses.
func TestLiveForeignKeyActions(t *testing.T) {
	c := pgtest.Get(t)
	db := c.NewDatabase(t)
	c.Exec(t, db, "CREATE SCHEMA billing;"+fkDDL+`
INSERT INTO orgs VALUES (1, 'a'); INSERT INTO users VALUES (1, 1);
INSERT INTO teams VALUES (1); INSERT INTO billing.invoices VALUES (1, 1);
INSERT INTO regions VALUES (1); INSERT INTO billing.payments VALUES (1, 1);
INSERT INTO shops VALUES (1); INSERT INTO stores VALUES (1, 1); INSERT INTO billing.orders VALUES (1, 1);`)
	conn := c.Connect(t, db)
	cat, _ := liveCatalog(t, conn)
	if len(cat.fkActs[qname{"public", "orgs"}]) != 1 || len(cat.fkActs[qname{"public", "teams"}]) != 2 || len(cat.fkActs[qname{"public", "regions"}]) != 0 {
		t.Fatalf("foreign key actions from CatalogQuery: %v", cat.fkActs)
	}
	eng := testEngine(t, defaultProtect)
	eng.SetCatalog(db, cat)
	runFKCases(t, eng, db)

	ctx := context.Background()
	for _, c := range []struct{ sql, check, errCode string }{
		{"DELETE FROM orgs", "SELECT count(*) FROM users", ""},
		{"DELETE FROM teams", "SELECT count(*) FROM billing.invoices WHERE team_id IS NOT NULL", ""},
		{"UPDATE teams SET id = id + 100", "SELECT count(*) FROM billing.invoices WHERE team_id = 1", ""},
		{"DELETE FROM shops", "SELECT count(*) FROM billing.orders", ""},
		{"DELETE FROM regions", "", "23503"},
	} {
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_, err = tx.Exec(ctx, c.sql)
		switch {
		case c.errCode != "":
			if err == nil || !strings.Contains(err.Error(), c.errCode) {
				t.Errorf("%s: server says %v, want %s", c.sql, err, c.errCode)
			}
		case err != nil:
			t.Errorf("%s: %v", c.sql, err)
		default:
			var n int
			if err := tx.QueryRow(ctx, c.check).Scan(&n); err != nil || n != 0 {
				t.Errorf("%s: %s gives %d (%v): the server did not reach the protected rows", c.sql, c.check, n, err)
			}
		}
		tx.Rollback(ctx)
	}
}
