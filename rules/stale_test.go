package rules

import (
	"context"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgmoat/pgmoat/internal/pgtest"
)

// TestFailedTransactionRollsBack: COMMIT of a transaction the server
// reported failed is a ROLLBACK, so the SETs made in it do not survive in
// pgmoat's model either.
func TestFailedTransactionRollsBack(t *testing.T) {
	eng := testEngine(t, defaultProtect)
	type step struct {
		sql    string
		status byte
	}
	for _, c := range []struct {
		name  string
		steps []step
		want  Action // of DROP TABLE invoices afterwards
	}{
		{"commit of a failed transaction", []step{{"BEGIN", 'T'}, {"SET search_path TO billing", 'T'}, {"", 'E'}, {"COMMIT", 'I'}}, Allow},
		{"commit and chain of a failed transaction", []step{{"BEGIN", 'T'}, {"SET search_path TO billing", 'T'}, {"", 'E'}, {"COMMIT AND CHAIN", 'T'}}, Allow},
		{"prepare transaction of a failed transaction", []step{{"BEGIN", 'T'}, {"SET search_path TO billing", 'T'}, {"", 'E'}, {"PREPARE TRANSACTION 'x'", 'I'}}, Allow},
		{"failed transaction ended unseen", []step{{"BEGIN", 'T'}, {"SET search_path TO billing", 'T'}, {"", 'E'}, {"", 'I'}}, Allow},
		{"set and error in one message", []step{{"BEGIN; SET search_path TO billing", 'E'}, {"COMMIT", 'I'}}, Allow},
		// Twins: a transaction that did not fail commits its SETs; one
		// recovered with ROLLBACK TO keeps those made after.
		{"commit", []step{{"BEGIN", 'T'}, {"SET search_path TO billing", 'T'}, {"COMMIT", 'I'}}, Block},
		{"recovered by rollback to", []step{{"BEGIN", 'T'}, {"SAVEPOINT a", 'T'}, {"", 'E'}, {"ROLLBACK TO a", 'T'}, {"SET search_path TO billing", 'T'}, {"COMMIT", 'I'}}, Block},
		{"set before the savepoint survives", []step{{"BEGIN", 'T'}, {"SET search_path TO billing", 'T'}, {"SAVEPOINT a", 'T'}, {"", 'E'}, {"ROLLBACK TO a", 'T'}, {"COMMIT", 'I'}}, Block},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := knownSession("app")
			for _, st := range c.steps {
				if st.sql == "" {
					s.Sync(st.status) // an error the server reported
					continue
				}
				judgeAndApply(eng, s, st.sql, st.status)
			}
			if r := eng.Judge(s, "DROP TABLE invoices"); r.Action != c.want {
				p, ok := s.SearchPath()
				t.Errorf("got %s, want %s (path %v %v)", r.Action, c.want, p, ok)
			}
		})
	}
}

// TestFailedTransactionCacheKey: the same text means different things in
// a failed transaction and a healthy one, and the decision cache keeps
// them apart.
func TestFailedTransactionCacheKey(t *testing.T) {
	p, err := Compile(defaultProtect)
	if err != nil {
		t.Fatal(err)
	}
	eng := NewEngine(p, EngineOptions{})
	const msg = "COMMIT; DROP TABLE invoices"
	healthy, failed := knownSession("app"), knownSession("app")
	for _, s := range []*Session{healthy, failed} {
		judgeAndApply(eng, s, "BEGIN", 'T')
		judgeAndApply(eng, s, "SET search_path TO billing", 'T')
	}
	failed.Sync('E')
	if r := eng.Judge(healthy, msg); r.Action != Block {
		t.Errorf("healthy transaction: got %s", r.Action)
	}
	if r := eng.Judge(failed, msg); r.Action != Allow {
		t.Errorf("failed transaction: got %s (path %s)", r.Action, r.Path)
	}
}

// TestStaleSettings: a SET or set_config that runs inside code, code
// pgmoat cannot read, and a reload of the configuration leave the
// session's search_path unknown (ChangeStaleSettings) until it is read
// back from the server; creating code does not run it.
func TestStaleSettings(t *testing.T) {
	eng := testEngine(t, defaultProtect)
	for _, c := range []struct {
		name  string
		steps []string
		sql   string
		want  Action
		stale bool // the last step reports ChangeStaleSettings
	}{
		{"SET in a DO block", []string{"DO $$BEGIN SET search_path TO billing; END$$"}, "DROP TABLE invoices", Block, true},
		{"SET LOCAL in a DO block", []string{"DO $$BEGIN SET LOCAL search_path = billing; END$$"}, "DROP TABLE invoices", Block, true},
		{"RESET in a DO block", []string{"DO $$BEGIN RESET search_path; END$$"}, "DROP TABLE scratch", Block, true},
		{"set_config in a DO block", []string{"DO $$BEGIN PERFORM set_config('search_path', 'billing', false); END$$"}, "DROP TABLE invoices", Block, true},
		{"set_config assigned in a DO block", []string{"DO $$DECLARE x text; BEGIN x := set_config('search_path', 'billing', true); END$$"}, "DROP TABLE invoices", Block, true},
		{"EXECUTE of a SET in a DO block", []string{"DO $$BEGIN EXECUTE 'SET search_path = billing'; END$$"}, "DROP TABLE invoices", Block, true},
		{"SET ROLE in a DO block", []string{"DO $$BEGIN SET ROLE billing; END$$"}, "DROP TABLE invoices", Block, true},
		{"set_config of the role at the top", []string{"SELECT set_config('role', 'billing', false)"}, "DROP TABLE invoices", Block, false},
		{"set_config of the role in a DO block", []string{"DO $$BEGIN PERFORM set_config('role', 'billing', false); END$$"}, "DROP TABLE invoices", Block, true},
		{"SET in a branch", []string{"DO $$BEGIN IF random() < 0.5 THEN SET search_path TO billing; END IF; END$$"}, "DROP TABLE invoices", Block, true},
		{"DO in another language", []string{"DO LANGUAGE plperl $$ spi_exec_query('SET search_path TO billing') $$"}, "DROP TABLE invoices", Block, true},
		{"same message", nil, "DO $$BEGIN SET search_path TO billing; END$$; DROP TABLE invoices", Block, false},
		{"later in the same body", nil, "DO $$BEGIN SET search_path TO billing; DROP TABLE invoices; END$$", Block, false},
		{"function made and called in the message", nil, "CREATE FUNCTION f() RETURNS void LANGUAGE sql AS $$SELECT set_config('search_path', 'billing', false)$$; SELECT f(); DROP TABLE invoices", Block, false},
		{"function with a SET clause still sets", nil, "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql SET search_path = public AS $$BEGIN SET search_path = billing; END$$; SELECT f(); DROP TABLE invoices", Block, false},
		{"reload", []string{"SELECT pg_reload_conf()"}, "DROP TABLE invoices", Block, true},
		{"reset after a reload", []string{"SELECT pg_reload_conf()", "RESET search_path"}, "DROP TABLE invoices", Block, false},
		{"reload in a DO block", []string{"DO $$BEGIN PERFORM pg_reload_conf(); END$$"}, "DROP TABLE invoices", Block, true},
		// Twins: nothing that may change the settings runs.
		{"DO without SET", []string{"DO $$BEGIN PERFORM 1; END$$"}, "DROP TABLE invoices", Allow, false},
		{"function made, not called", []string{"CREATE FUNCTION f() RETURNS void LANGUAGE sql AS $$SELECT set_config('search_path', 'billing', false)$$"}, "DROP TABLE invoices", Allow, false},
		{"function made, not called, same message", nil, "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$BEGIN SET search_path = billing; END$$; DROP TABLE invoices", Allow, false},
		{"other setting in a DO block", []string{"DO $$BEGIN SET work_mem = '64MB'; END$$"}, "DROP TABLE invoices", Allow, false},
		{"reading settings", []string{"SELECT pg_conf_load_time(), current_setting('search_path')"}, "DROP TABLE invoices", Allow, false},
		{"a rollback undoes what code set", []string{"BEGIN", "DO $$BEGIN SET search_path TO billing; END$$", "ROLLBACK"}, "DROP TABLE invoices", Allow, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := knownSession("app")
			var last *Result
			for _, m := range c.steps {
				last = eng.Judge(s, m)
				for _, v := range last.Statements {
					s.Apply(v.Changes...)
				}
				if s.tx.inTx {
					s.Sync('T')
				} else {
					s.Sync('I')
				}
			}
			if last != nil {
				stale := false
				for _, v := range last.Statements {
					for _, ch := range v.Changes {
						stale = stale || ch.Kind == ChangeStaleSettings
					}
				}
				if stale != c.stale {
					t.Errorf("%q: stale %v, want %v", c.steps[len(c.steps)-1], stale, c.stale)
				}
			}
			if r := eng.Judge(s, c.sql); r.Action != c.want {
				p, ok := s.SearchPath()
				t.Errorf("%q after %q: got %s, want %s (path %v %v)", c.sql, c.steps, r.Action, c.want, p, ok)
				for _, v := range r.Statements {
					t.Logf("   %s %q", v.Action, v.Sentence)
				}
			}
		})
	}
}

// TestStaleSettingsExistingFunction: a function the catalog knows is read
// when called; one that sets search_path makes the settings stale, one
// that does not leaves them.
func TestStaleSettingsExistingFunction(t *testing.T) {
	eng := testEngine(t, defaultProtect)
	cat := NewCatalog()
	cat.AddRelation("public", "users")
	cat.AddRelation("billing", "invoices")
	cat.AddBuiltin("now")
	for name, body := range map[string]string{
		"switch_path": "BEGIN PERFORM set_config('search_path', 'billing', false); END",
		"harmless":    "BEGIN PERFORM 1; END",
	} {
		cat.AddFunction(&Function{Schema: "public", Name: name, Lang: "plpgsql", Volatile: 'v', Kind: 'f',
			Def: "CREATE OR REPLACE FUNCTION public." + name + "() RETURNS void LANGUAGE plpgsql AS $f$" + body + "$f$"})
	}
	eng.SetCatalog("app", cat)
	for _, c := range []struct {
		call string
		want Action
	}{
		{"SELECT switch_path()", Block},
		{"SELECT made_since()", Block}, // a function pgmoat cannot read
		{"SELECT harmless()", Allow},
		{"SELECT now()", Allow},
	} {
		s := knownSession("app")
		judgeAndApply(eng, s, c.call, 'I')
		if r := eng.Judge(s, "DROP TABLE invoices"); r.Action != c.want {
			t.Errorf("DROP TABLE invoices after %q: got %s, want %s", c.call, r.Action, c.want)
		}
	}
}

// TestReadBack: settings read back from the server replace what pgmoat
// lost; inside a transaction block, what survives its end stays unknown
// until read again.
func TestReadBack(t *testing.T) {
	eng := testEngine(t, defaultProtect)
	s := knownSession("app")
	judgeAndApply(eng, s, "DO $$BEGIN SET search_path TO billing; END$$", 'I')
	if _, ok := s.SearchPath(); ok {
		t.Fatal("search_path known after a DO block that sets it")
	}
	s.ReadBack("billing, public", "")
	if p, ok := s.SearchPath(); !ok || !slices.Equal(p, []string{"billing", "public"}) {
		t.Fatalf("after read back: %v %v", p, ok)
	}
	if r := eng.Judge(s, "DROP TABLE invoices"); r.Action != Block {
		t.Errorf("DROP TABLE invoices with billing on the path: %s", r.Action)
	}
	s.ReadBack(`"$user", public`, "")
	if r := eng.Judge(s, "DROP TABLE invoices"); r.Action != Allow {
		t.Errorf("DROP TABLE invoices after the path was read back: %s", r.Action)
	}
	// $user follows the role read back.
	s.ReadBack(`"$user", public`, "billing")
	if r := eng.Judge(s, "DROP TABLE invoices"); r.Action != Block {
		t.Errorf("DROP TABLE invoices as role billing: %s", r.Action)
	}

	s = knownSession("app")
	judgeAndApply(eng, s, "BEGIN", 'T')
	judgeAndApply(eng, s, "DO $$BEGIN PERFORM set_config('search_path', 'public', true); END$$", 'T')
	s.ReadBack("public", "")
	if _, ok := s.SearchPath(); !ok {
		t.Fatal("read back in a transaction: unknown")
	}
	judgeAndApply(eng, s, "COMMIT", 'I')
	if _, ok := s.SearchPath(); ok {
		t.Error("what survives the transaction was taken from a read back inside it")
	}
}

// TestLiveSessionModel runs messages on a real server, applying their
// changes as the proxy does, and checks after each that the search_path
// pgmoat believes is the server's, or unknown; when unknown, it reads the
// settings back as the proxy would.
func TestLiveSessionModel(t *testing.T) {
	c := pgtest.Get(t)
	db := c.NewDatabase(t)
	c.Exec(t, db, `
CREATE SCHEMA billing;
CREATE FUNCTION public.switch_path(p text) RETURNS void LANGUAGE plpgsql AS $$BEGIN PERFORM set_config('search_path', p, false); END$$;
CREATE FUNCTION public.switch_local(p text) RETURNS void LANGUAGE sql AS $$SELECT set_config('search_path', p, true)$$;`)
	conn := c.Connect(t, db)
	ctx := context.Background()
	eng := testEngine(t, defaultProtect)
	cat, _ := liveCatalog(t, conn)
	eng.SetCatalog(db, cat)
	s := NewSession(Identity{User: "postgres", Database: db})
	serverPath := func() (string, string) {
		var path, cur, sess string
		if err := conn.QueryRow(ctx, "SELECT current_setting('search_path'), current_user, session_user", pgx.QueryExecModeSimpleProtocol).Scan(&path, &cur, &sess); err != nil {
			t.Fatal(err)
		}
		if cur == sess {
			cur = ""
		}
		return path, cur
	}
	path, _ := serverPath()
	want, _ := splitIdentList(path)
	s.SetSearchPath(want)
	for _, msg := range []string{
		"SET search_path TO billing, public",
		"BEGIN",
		"SET search_path TO public",
		"SELECT 1/0",
		"COMMIT",
		"BEGIN",
		"SAVEPOINT a",
		"SET search_path TO billing",
		"SELECT 1/0",
		"ROLLBACK TO a",
		"COMMIT",
		"DO $$BEGIN SET search_path TO public; END$$",
		"SELECT switch_path('billing')",
		"BEGIN",
		"SELECT switch_local('public')",
		"COMMIT",
		"BEGIN",
		"DO $$BEGIN PERFORM set_config('search_path', 'public', false); END$$",
		"SELECT 1/0",
		"COMMIT",
		"RESET search_path",
	} {
		r := eng.Judge(s, msg)
		results, err := conn.PgConn().Exec(ctx, msg).ReadAll()
		// Statements that completed are confirmed; after an error the
		// rest of the message did not run.
		for i, v := range r.Statements {
			if i < len(results) && results[i].Err == nil {
				s.Apply(v.Changes...)
			}
		}
		_ = err
		s.Sync(conn.PgConn().TxStatus())
		if conn.PgConn().TxStatus() == 'E' {
			continue // the server answers nothing but ROLLBACK now
		}
		path, role := serverPath()
		got, known := s.SearchPath()
		server, _ := splitIdentList(path)
		if known && !slices.Equal(got, server) {
			t.Fatalf("after %q: pgmoat believes search_path %q, the server has %q", msg, got, server)
		}
		if !known {
			s.ReadBack(path, role)
		}
	}
}
