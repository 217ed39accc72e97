package rules

import (
	"slices"
	"testing"
)

// judgeAndApply runs each message through the engine and applies its
// changes as the proxy would after success, then syncs with status.
func judgeAndApply(eng *Engine, s *Session, sql string, status byte) *Result {
	r := eng.Judge(s, sql)
	for _, v := range r.Statements {
		s.Apply(v.Changes...)
	}
	s.Sync(status)
	return r
}

func TestSearchPath(t *testing.T) {
	eng := testEngine(t, defaultProtect)
	cases := []struct {
		name  string
		steps []string // messages run and applied in order (idle after each)
		sql   string
		want  Action
	}{
		{"default path misses billing", nil, "DROP TABLE invoices", Allow},
		{"set path to billing", []string{"SET search_path TO billing"}, "DROP TABLE invoices", Block},
		{"same message", nil, "SET search_path TO billing; DROP TABLE invoices", Block},
		{"set then reset", []string{"SET search_path TO billing", "RESET search_path"}, "DROP TABLE invoices", Allow},
		{"set default", []string{"SET search_path TO billing", "SET search_path TO DEFAULT"}, "DROP TABLE invoices", Allow},
		{"$user is billing", []string{"SET ROLE billing"}, "DROP TABLE invoices", Block},
		{"reset role", []string{"SET ROLE billing", "RESET ROLE"}, "DROP TABLE invoices", Allow},
		{"set_config", []string{"SELECT set_config('search_path', 'billing', false)"}, "DROP TABLE invoices", Block},
		{"set_config keeps old too", []string{"SET search_path TO billing", "SELECT set_config('search_path', 'public', false)"}, "DROP TABLE invoices", Block},
		{"set_config computed", []string{"SELECT set_config('search_path', current_user, false)"}, "DROP TABLE scratch", Block},
		{"set_config pinned by pg_settings", []string{"SELECT set_config(name, 'billing', false) FROM pg_settings WHERE name = 'search_path'"}, "DROP TABLE invoices", Block},
		{"set_config of role", []string{"SELECT set_config('role', 'billing', false)"}, "DROP TABLE invoices", Block},
		{"set_config of role none", []string{"SET ROLE billing", "SELECT set_config('role', 'none', false)"}, "DROP TABLE invoices", Allow},
		{"set_config of a role pgmoat cannot read", []string{"SELECT set_config('role', current_user, false)"}, "DROP TABLE scratch", Block},
		{"set_config of another setting", []string{"SELECT set_config('lock_timeout', '1s', false)"}, "DROP TABLE invoices", Allow},
		{"quoted literal is one schema", []string{"SET search_path = 'billing, public'"}, "DROP TABLE invoices", Allow},
		{"set local in transaction", nil, "BEGIN; SET LOCAL search_path TO billing; UPDATE invoices SET amount = 0; COMMIT", Block},
		{"set local ends with commit", []string{"BEGIN; SET LOCAL search_path TO billing; COMMIT"}, "DROP TABLE invoices", Allow},
		{"set survives commit", []string{"BEGIN; SET search_path TO billing; COMMIT"}, "DROP TABLE invoices", Block},
		{"set undone by rollback", []string{"BEGIN; SET search_path TO billing; ROLLBACK"}, "DROP TABLE invoices", Allow},
		{"rollback to savepoint", []string{"BEGIN; SAVEPOINT a; SET search_path TO billing; ROLLBACK TO a; COMMIT"}, "DROP TABLE invoices", Allow},
		{"release keeps", []string{"BEGIN; SAVEPOINT a; SET search_path TO billing; RELEASE a; COMMIT"}, "DROP TABLE invoices", Block},
		{"discard all", []string{"SET search_path TO billing", "DISCARD ALL"}, "DROP TABLE invoices", Allow},
		{"reset all", []string{"SET search_path TO billing", "RESET ALL"}, "DROP TABLE invoices", Allow},
		{"pg_catalog listed does not hide users", []string{"SET search_path TO pg_catalog, public"}, "DROP TABLE users", Block},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := knownSession("app")
			for _, m := range c.steps {
				judgeAndApply(eng, s, m, 'I')
			}
			if r := eng.Judge(s, c.sql); r.Action != c.want {
				p, ok := s.SearchPath()
				t.Errorf("%q after %q: got %s, want %s (path %v %v)", c.sql, c.steps, r.Action, c.want, p, ok)
			}
		})
	}
}

func TestTransactionStatesAcrossMessages(t *testing.T) {
	eng := testEngine(t, defaultProtect)
	s := knownSession("app")
	judgeAndApply(eng, s, "BEGIN", 'T')
	judgeAndApply(eng, s, "SET LOCAL search_path TO billing", 'T')
	if r := eng.Judge(s, "TRUNCATE invoices"); r.Action != Block {
		t.Fatalf("in transaction: got %s", r.Action)
	}
	judgeAndApply(eng, s, "COMMIT", 'I')
	if r := eng.Judge(s, "TRUNCATE invoices"); r.Action != Allow {
		t.Fatalf("after commit: got %s", r.Action)
	}
	// A transaction that ends without pgmoat seeing how keeps both values.
	judgeAndApply(eng, s, "BEGIN", 'T')
	judgeAndApply(eng, s, "SET search_path TO billing", 'T')
	s.Sync('I')
	if r := eng.Judge(s, "TRUNCATE invoices"); r.Action != Block {
		t.Fatalf("after unseen end: got %s", r.Action)
	}
	// SET LOCAL outside a transaction lasts for its message only.
	s2 := knownSession("app")
	judgeAndApply(eng, s2, "SET LOCAL search_path TO billing", 'I')
	if p, _ := s2.SearchPath(); !slices.Equal(p, []string{"$user", "public"}) {
		t.Fatalf("SET LOCAL outside a transaction stuck: %v", p)
	}
}

// TestSavepoints: the savepoints a session holds, as the enforcer reads
// them to follow portals through RELEASE and ROLLBACK TO.
func TestSavepoints(t *testing.T) {
	eng := testEngine(t, defaultProtect)
	s := knownSession("app")
	at := func(step string, depth int, places map[string]int) {
		t.Helper()
		if got := s.Savepoints(); got != depth {
			t.Errorf("after %s: %d savepoints, want %d", step, got, depth)
		}
		for name, want := range places {
			if got := s.Savepoint(name); got != want {
				t.Errorf("after %s: savepoint %s at %d, want %d", step, name, got, want)
			}
		}
	}
	judgeAndApply(eng, s, "BEGIN", 'T')
	at("BEGIN", 0, map[string]int{"a": -1})
	judgeAndApply(eng, s, "SAVEPOINT a; SAVEPOINT \"B\"; SAVEPOINT a", 'T')
	at("three savepoints", 3, map[string]int{"a": 2, "B": 1, "b": -1})
	judgeAndApply(eng, s, "ROLLBACK TO a", 'T')
	at("ROLLBACK TO a", 3, map[string]int{"a": 2})
	judgeAndApply(eng, s, `RELEASE SAVEPOINT "B"`, 'T')
	at("RELEASE B", 1, map[string]int{"a": 0, "B": -1})
	judgeAndApply(eng, s, "COMMIT", 'I')
	at("COMMIT", 0, map[string]int{"a": -1})
}

func TestPreparedStatements(t *testing.T) {
	eng := testEngine(t, defaultProtect)
	s := knownSession("app")
	// PREPARE itself is judged; once allowed (a rule could allow it),
	// EXECUTE is judged as the prepared statement.
	r := eng.Judge(s, "PREPARE wipe2(int) AS DELETE FROM users WHERE id = $1 OR $1 IS NULL")
	if r.Action != Block {
		t.Fatalf("PREPARE: got %s", r.Action)
	}
	s.Apply(r.Statements[0].Changes...)
	if _, ok := s.Prepared("wipe2"); !ok {
		t.Fatal("PREPARE not recorded")
	}
	for _, sql := range []string{"EXECUTE wipe2(NULL)", "EXPLAIN ANALYZE EXECUTE wipe2(1)", "execute WIPE2(1)"} {
		if r := eng.Judge(s, sql); r.Action != Block {
			t.Errorf("%q: got %s", sql, r.Action)
		}
	}
	if r := eng.Judge(s, "EXPLAIN EXECUTE wipe2(1)"); r.Action != Allow {
		t.Errorf("EXPLAIN EXECUTE: got %s", r.Action)
	}
	// Protocol-level named statements share the namespace.
	s.RegisterPrepared("s1", "TRUNCATE billing.payments")
	if r := eng.Judge(s, "EXECUTE s1"); r.Action != Block {
		t.Errorf("EXECUTE of a Parse'd statement: got %s", r.Action)
	}
	s.RegisterPrepared("ok", "SELECT 1")
	if r := eng.Judge(s, "EXECUTE ok"); r.Action != Allow {
		t.Errorf("EXECUTE ok: got %s", r.Action)
	}
	judgeAndApply(eng, s, "DEALLOCATE wipe2", 'I')
	if _, ok := s.Prepared("wipe2"); ok {
		t.Error("DEALLOCATE not applied")
	}
	if r := eng.Judge(s, "EXECUTE wipe2(1)"); r.Action != Block || r.Decision().Effects[0].Op != OpOpaque {
		t.Errorf("EXECUTE of a deallocated statement: got %s", r.Action)
	}
	judgeAndApply(eng, s, "DEALLOCATE ALL", 'I')
	if _, ok := s.Prepared("ok"); ok {
		t.Error("DEALLOCATE ALL not applied")
	}
}

func TestCheckStartup(t *testing.T) {
	for _, c := range []struct {
		params map[string]string
		bad    bool
		path   []string
	}{
		{map[string]string{"user": "u", "client_encoding": "UTF8"}, false, nil},
		{map[string]string{"client_encoding": "SJIS"}, true, nil},
		{map[string]string{"client_encoding": "win-932"}, true, nil},
		{map[string]string{"options": "-c standard_conforming_strings=off"}, true, nil},
		{map[string]string{"options": "--standard-conforming-strings=off"}, true, nil},
		{map[string]string{"options": "-cclient_encoding=GB18030"}, true, nil},
		{map[string]string{"options": "-c search_path=billing,\\ public"}, false, []string{"billing", "public"}},
		{map[string]string{"options": "-c search_path=\"Billing\""}, false, []string{"Billing"}},
		{map[string]string{"standard_conforming_strings": "on"}, false, nil},
	} {
		path, _, err := CheckStartup(c.params)
		if (err != nil) != c.bad {
			t.Errorf("%v: err = %v, want bad=%v", c.params, err, c.bad)
		}
		if !slices.Equal(path, c.path) {
			t.Errorf("%v: path %q, want %q", c.params, path, c.path)
		}
	}
	if err := CheckParameter("client_encoding", "BIG5"); err == nil {
		t.Error("ParameterStatus client_encoding BIG5 accepted")
	}
}

func TestJudgeOpaque(t *testing.T) {
	eng := testEngine(t, defaultProtect)
	r := eng.JudgeOpaque(knownSession("app"), "FunctionCall of function OID 1234")
	if r.Action != Block || r.Decision().Rule != RuleDefaultOpaque {
		t.Fatalf("got %s %q", r.Action, r.Decision().Rule)
	}
	if r := testEngine(t, PolicyConfig{}).JudgeOpaque(knownSession("app"), "x"); r.Action != Allow {
		t.Fatalf("nothing protected: %s", r.Action)
	}
}

// TestSyncIdleShortcut: a ReadyForQuery 'I' after another, with nothing
// applied in between, is skipped without reading the settings; anything
// applied in between makes the next one reconcile as before.
func TestSyncIdleShortcut(t *testing.T) {
	eng := testEngine(t, defaultProtect)
	s := knownSession("app")
	if !s.Sync('I') {
		t.Fatal("the first Sync reported nothing to do")
	}
	if s.Sync('I') {
		t.Error("an idle session idle again, nothing applied, reported a move")
	}
	// SET LOCAL outside a transaction block lasts for its message only:
	// the 'I' that ends it must put the session's search_path back.
	before, _ := s.SearchPath()
	for _, v := range eng.Judge(s, "SET LOCAL search_path TO billing").Statements {
		s.Apply(v.Changes...)
	}
	if !s.Sync('I') {
		t.Fatal("Sync after an applied SET LOCAL reported no move")
	}
	if after, _ := s.SearchPath(); !slices.Equal(after, before) {
		t.Errorf("search_path after SET LOCAL's message = %v, want %v", after, before)
	}
	if r := eng.Judge(s, "DROP TABLE invoices"); r.Action != Allow {
		t.Errorf("DROP TABLE invoices after SET LOCAL's message: %v, want allow (billing is not on the path)", r.Action)
	}
	// In a transaction and out again: both reconcile.
	if !s.Sync('T') || !s.Sync('I') || s.Sync('I') {
		t.Error("T then I then I: want moved, moved, not moved")
	}
	s.ReadBack("billing", "")
	if !s.Sync('I') {
		t.Error("Sync after ReadBack reported no move")
	}
}
