package rules

import (
	"strings"
	"testing"
)

// Phrases of the fail-safe's two effects.
const (
	phraseOffPath = "no schema of the search_path pgmoat knows holds"
	phraseUnknown = "is not in pgmoat's catalog snapshot nor made by this session, so it may be a partition or child"
)

// failsafeEffect returns the What of the fail-safe effect among a
// result's effects that touches something p protects, or "".
func failsafeEffect(p *Policy, r *Result) (string, Doubt) {
	for _, v := range r.Statements {
		for _, ef := range v.Effects {
			if _, ok := p.protects(ef); !ok {
				continue
			}
			if strings.Contains(ef.What, phraseOffPath) || strings.Contains(ef.What, phraseUnknown) {
				return ef.What, ef.Doubt
			}
		}
	}
	return "", DoubtNone
}

// TestUnknownNameDDL: with a catalog, DROP and ALTER of a relation pgmoat
// does not know are verified when the name exists in a protected schema
// off the search path pgmoat knows (it resolves there if the session's
// real path differs) or nowhere pgmoat knows (it may be a partition of a
// protected table made since the snapshot), also inside DO blocks and
// function bodies; a name that exists only in unprotected schemas, and
// every known relation, gets no such effect on a protected table. pgmoat check leaves them out.
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
		sql  string
		want string // part of the fail-safe effect; "" when there is none
	}{
		{"DROP TABLE invoices", phraseOffPath + " invoices, but billing does"},
		{"DROP TABLE IF EXISTS invoices", phraseOffPath},
		{"ALTER TABLE invoices DROP COLUMN amount", phraseOffPath},
		{"ALTER TABLE invoices RENAME TO old_invoices", phraseOffPath},
		{"ALTER TABLE invoices RENAME COLUMN id TO x", phraseOffPath},
		{"ALTER TABLE invoices SET SCHEMA a", phraseOffPath},
		{"DO $$BEGIN DROP TABLE invoices; END$$", phraseOffPath},
		{"CREATE FUNCTION f() RETURNS void LANGUAGE sql AS 'DROP TABLE invoices'", phraseOffPath},
		{"DROP TABLE made_since", phraseUnknown},
		{"DROP TABLE IF EXISTS public.made_since", phraseUnknown},
		{"ALTER TABLE made_since DROP COLUMN x", phraseUnknown},
		{"DO $$BEGIN DROP TABLE made_since; END$$", phraseUnknown},
		// Known relations, names only in unprotected schemas, indexes.
		{"DROP TABLE scratch", ""},
		{"DROP TABLE only_here", ""},
		{"ALTER TABLE only_here DROP COLUMN id", ""},
		{"DROP INDEX made_since_idx", ""},
		{"CREATE TABLE t (id int); DROP TABLE t", ""},
		{"DO $$BEGIN DROP TABLE scratch; END$$", ""},
	} {
		r := verify.Judge(knownSession("app"), c.sql)
		what, doubt := failsafeEffect(p, r)
		switch {
		case c.want == "" && what != "":
			t.Errorf("%q: unexpected fail-safe effect %q", c.sql, what)
		case c.want != "" && !strings.Contains(what, c.want):
			t.Errorf("%q: fail-safe effect %q does not say %q", c.sql, what, c.want)
		case c.want != "" && (doubt == DoubtNone || r.Action != Verify):
			t.Errorf("%q: %s, doubt %d: want a verified possible effect", c.sql, r.Action, doubt)
		}
		if c.want != "" {
			// Without the guard (pgmoat check) they are left out.
			if what, _ := failsafeEffect(p, static.Judge(knownSession("app"), c.sql)); what != "" {
				t.Errorf("%q without the guard: fail-safe effect %q", c.sql, what)
			}
		}
	}
	// A DO block is no DDL itself: only the fail-safe makes it verified.
	if r := verify.Judge(knownSession("app"), "DO $$BEGIN DROP TABLE scratch; END$$"); r.Action != Allow {
		t.Errorf("DO block dropping a known unprotected table: %s", r.Action)
	}
	// With the search_path unknown, a name in a protected schema counts
	// as that table, certainly.
	unknownPath := func() *Session { return NewSession(Identity{User: "app", Database: "app"}) }
	for _, sql := range []string{"DROP TABLE invoices", "ALTER TABLE invoices DROP COLUMN amount"} {
		if r := verify.Judge(unknownPath(), sql); r.Action != Block {
			t.Errorf("%q, search_path unknown: got %s", sql, r.Action)
		}
	}
}
