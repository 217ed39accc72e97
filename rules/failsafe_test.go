package rules

import (
	"strings"
	"testing"
)

// TestUnknownNameDDL: with a catalog and the guard, DROP and ALTER of a
// relation pgmoat does not know run under guard when the name exists in a
// protected schema off the search path pgmoat knows (it resolves there if
// the session's real path differs) or nowhere pgmoat knows (it may be a
// partition of a protected table made since the snapshot); a name that
// exists only in unprotected schemas, and every known relation, goes
// through unguarded. Without the guard they are judged as before.
func TestUnknownNameDDL(t *testing.T) {
	p, err := Compile(defaultProtect)
	if err != nil {
		t.Fatal(err)
	}
	cat, err := CatalogFromSQL(relDDL + "CREATE TABLE a.only_here (id int);")
	if err != nil {
		t.Fatal(err)
	}
	verify := NewEngine(p, EngineOptions{CacheBytes: -1, Verify: true})
	verify.SetCatalog("app", cat)
	static := NewEngine(p, EngineOptions{CacheBytes: -1})
	static.SetCatalog("app", cat)
	for _, c := range []struct {
		sql      string
		want     Action // with the guard
		sentence string
	}{
		{"DROP TABLE invoices", Verify, "billing does; the name resolves there"},
		{"DROP TABLE IF EXISTS invoices", Verify, "billing"},
		{"ALTER TABLE invoices DROP COLUMN amount", Verify, "billing"},
		{"ALTER TABLE invoices RENAME TO old_invoices", Verify, "billing"},
		{"ALTER TABLE invoices RENAME COLUMN id TO x", Verify, "billing"},
		{"ALTER TABLE invoices SET SCHEMA a", Verify, "billing"},
		{"DROP TABLE made_since", Verify, "partition or child of protected tables"},
		{"DROP TABLE IF EXISTS public.made_since", Verify, "partition or child"},
		{"ALTER TABLE made_since DROP COLUMN x", Verify, "partition or child"},
		// Known relations, names only in unprotected schemas, indexes.
		{"DROP TABLE scratch", Allow, ""},
		{"DROP TABLE only_here", Allow, ""},
		{"ALTER TABLE only_here DROP COLUMN id", Allow, ""},
		{"DROP INDEX made_since_idx", Allow, ""},
		{"CREATE TABLE t (id int); DROP TABLE t", Allow, ""},
		{"DROP TABLE billing.invoices", Block, ""},
	} {
		r := verify.Judge(knownSession("app"), c.sql)
		if r.Action != c.want {
			t.Errorf("%q with the guard: got %s, want %s", c.sql, r.Action, c.want)
			for _, v := range r.Statements {
				t.Logf("   %s %q", v.Action, v.Sentence)
			}
			continue
		}
		if c.sentence != "" && !strings.Contains(r.Decision().Sentence, c.sentence) {
			t.Errorf("%q: sentence %q does not say %q", c.sql, r.Decision().Sentence, c.sentence)
		}
		if c.want == Verify {
			if r := static.Judge(knownSession("app"), c.sql); r.Action != Allow {
				t.Errorf("%q without the guard: got %s, want allow as before", c.sql, r.Action)
			}
		}
	}
	// With the search_path unknown, a name in a protected schema counts
	// as that table, certainly; one only in unprotected schemas does not.
	unknown := func() *Session { return NewSession(Identity{User: "app", Database: "app"}) }
	if r := verify.Judge(unknown(), "DROP TABLE invoices"); r.Action != Block {
		t.Errorf("DROP TABLE invoices, search_path unknown: got %s", r.Action)
	}
	if r := verify.Judge(unknown(), "ALTER TABLE invoices DROP COLUMN amount"); r.Action != Block {
		t.Errorf("ALTER TABLE invoices, search_path unknown: got %s", r.Action)
	}
	if r := verify.Judge(unknown(), "DROP TABLE only_here"); r.Action != Allow {
		t.Errorf("DROP TABLE only_here, search_path unknown: got %s", r.Action)
	}
}
