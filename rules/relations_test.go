package rules

import (
	"strings"
	"testing"
)

// runAllowed sends each message for s as the proxy does: judged, and when
// let through (allow or log) its changes applied to the session and
// learnt for the database's other sessions as if the server ran it. It
// returns the messages refused.
func runAllowed(eng *Engine, s *Session, msgs ...string) (refused []string) {
	for _, m := range msgs {
		r := eng.Judge(s, m)
		if r.Action >= Hold {
			refused = append(refused, m)
			continue
		}
		for _, v := range r.Statements {
			s.Apply(v.Changes...)
			eng.Learn(s.Identity().Database, v.Changes...)
		}
		s.Sync('I')
	}
	return refused
}

// relDDL is the schema of the catalog-backed tests below.
const relDDL = `
CREATE TABLE public.users (id int PRIMARY KEY, note text);
CREATE TABLE public.scratch (id int PRIMARY KEY);
CREATE TABLE public.orgs (id int PRIMARY KEY);
CREATE TABLE billing.invoices (id int PRIMARY KEY);
CREATE TABLE public.old_parent (id int);
CREATE TABLE public.old_child (id int) INHERITS (old_parent);
CREATE TABLE public.events (id int) PARTITION BY RANGE (id);
CREATE TABLE billing.events_1 PARTITION OF events FOR VALUES FROM (0) TO (10);
CREATE TABLE public.sp (id int) PARTITION BY RANGE (id);
ALTER TABLE sp ATTACH PARTITION billing.invoices FOR VALUES FROM (0) TO (10);
CREATE VIEW public.users_v AS SELECT * FROM users;
CREATE TABLE a.users (id int);
`

func catalogEngine(t *testing.T) *Engine {
	t.Helper()
	return catalogEngineWith(t, defaultProtect)
}

func catalogEngineWith(t *testing.T, cfg PolicyConfig) *Engine {
	t.Helper()
	eng := testEngine(t, cfg)
	cat, err := CatalogFromSQL(relDDL)
	if err != nil {
		t.Fatal(err)
	}
	eng.SetCatalog("app", cat)
	return eng
}

type seqCase struct {
	name  string
	steps []string // messages sent first, in the same session
	sql   string
	want  Action
	// inSentence, when set, must be part of the deciding sentence.
	inSentence string
}

// runSeqCases runs each case in a new engine, so that what one case's
// session made does not reach the next case.
func runSeqCases(t *testing.T, newEngine func(t *testing.T) *Engine, newSession func() *Session, cases []seqCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			eng := newEngine(t)
			s := newSession()
			runAllowed(eng, s, c.steps...)
			r := eng.Judge(s, c.sql)
			if r.Action != c.want {
				t.Errorf("%q after %q: got %s, want %s", c.sql, c.steps, r.Action, c.want)
				for _, v := range r.Statements {
					t.Logf("   %q: %s %q", v.Text, v.Action, v.Sentence)
				}
				return
			}
			if c.inSentence != "" && !strings.Contains(r.Decision().Sentence, c.inSentence) {
				t.Errorf("%q: sentence %q does not say %q", c.sql, r.Decision().Sentence, c.inSentence)
			}
		})
	}
}

// TestRewiringProtectedTables: making a protected table a child or
// partition of another table is destructive, since DELETE, UPDATE and
// TRUNCATE of that table would then reach it; the look-alikes are not.
func TestRewiringProtectedTables(t *testing.T) {
	eng := testEngine(t, defaultProtect)
	runCases(t, eng, func() *Session { return knownSession("app") }, []opCase{
		{"ALTER TABLE users INHERIT parent", Block, OpAlterDestructive},
		{"ALTER TABLE IF EXISTS public.users INHERIT parent", Block, OpAlterDestructive},
		{"ALTER TABLE pp ATTACH PARTITION users FOR VALUES FROM (0) TO (100)", Block, OpAlterDestructive},
		{"ALTER TABLE pp ATTACH PARTITION billing.invoices DEFAULT", Block, OpAlterDestructive},
		{"ALTER TABLE users NO INHERIT parent", Block, OpAlterDestructive},
		// The child is not protected, or the parent is protected already
		// (every way to it counts): partition maintenance goes on.
		{"ALTER TABLE scratch INHERIT parent", Allow, 0},
		{"ALTER TABLE pp ATTACH PARTITION scratch FOR VALUES FROM (0) TO (100)", Allow, 0},
		{"ALTER TABLE billing.invoices ATTACH PARTITION billing.invoices_2025 FOR VALUES FROM (0) TO (100)", Allow, 0},
		{"ALTER TABLE users ATTACH PARTITION users_2025 FOR VALUES FROM (0) TO (100)", Allow, 0},
		{"ALTER TABLE pp DETACH PARTITION users", Allow, 0},
		{"ALTER TABLE parent INHERIT users", Allow, 0},
		{"CREATE TABLE users_child (x int) INHERITS (users)", Allow, 0},
		{"CREATE TABLE users_2025 PARTITION OF users FOR VALUES FROM (0) TO (100)", Allow, 0},
		{"ALTER INDEX pp_idx ATTACH PARTITION users_pkey", Allow, 0},
		// Rules and triggers on a protected table: their actions are
		// analysed where pgmoat can see them, and the rule itself changes
		// the table's contract (DO INSTEAD NOTHING swallows every DELETE).
		{"CREATE RULE r AS ON INSERT TO users DO ALSO DELETE FROM users", Block, OpDeleteAll},
		{"CREATE RULE r AS ON DELETE TO users DO INSTEAD NOTHING", Block, OpContract},
		{"CREATE RULE r AS ON DELETE TO scratch DO INSTEAD NOTHING", Allow, 0},
	})
}

// TestRelationsInOneMessage: relations an earlier statement of the same
// message creates or re-wires lead later statements to protected tables.
// Contract changes are allowed, so that a foreign key added to a
// protected table counts for what follows.
func TestRelationsInOneMessage(t *testing.T) {
	eng := testEngine(t, contractAllowed)
	runCases(t, eng, func() *Session { return knownSession("app") }, []opCase{
		{"CREATE TABLE parent (id int); ALTER TABLE users INHERIT parent; DELETE FROM parent", Block, OpAlterDestructive},
		{"CREATE TABLE par (id int); CREATE TABLE billing.kid () INHERITS (par); DELETE FROM par", Block, OpDeleteAll},
		{"CREATE TABLE par (id int); CREATE TABLE billing.kid () INHERITS (par); UPDATE par SET id = 0", Block, OpUpdateAll},
		{"CREATE TABLE par (id int); CREATE TABLE billing.kid () INHERITS (par); TRUNCATE par", Block, OpTruncate},
		{"CREATE TABLE par (id int); CREATE TABLE billing.kid () INHERITS (par); DROP TABLE par CASCADE", Block, OpDrop},
		{"CREATE TABLE par (id int); CREATE TABLE billing.kid () INHERITS (par); DELETE FROM ONLY par", Allow, 0},
		{"CREATE TABLE par (id int); CREATE TABLE billing.kid () INHERITS (par); TRUNCATE ONLY par", Allow, 0},
		{"CREATE TABLE par (id int); CREATE TABLE billing.kid () INHERITS (par); DELETE FROM par WHERE id = 1", Allow, 0},
		{"CREATE TABLE par (id int); CREATE TABLE billing.kid () INHERITS (par); ALTER TABLE par DROP COLUMN id", Block, OpAlterDestructive},
		{"CREATE TABLE par (id int); CREATE TABLE billing.kid () INHERITS (par); ALTER TABLE ONLY par DROP COLUMN id", Allow, 0},
		{"CREATE TABLE pp (id int) PARTITION BY RANGE (id); CREATE TABLE billing.p1 PARTITION OF pp FOR VALUES FROM (0) TO (10); TRUNCATE pp", Block, OpTruncate},
		{"CREATE TABLE pp (id int) PARTITION BY RANGE (id); CREATE TABLE billing.p1 PARTITION OF pp FOR VALUES FROM (0) TO (10); DROP TABLE pp", Block, OpDrop},
		{"CREATE TABLE pp (id int) PARTITION BY RANGE (id); CREATE TABLE p1 PARTITION OF pp FOR VALUES FROM (0) TO (10); TRUNCATE pp", Allow, 0},
		// views over views, rules, foreign keys, foreign tables
		{"CREATE VIEW v1 AS SELECT * FROM users; CREATE VIEW v2 AS SELECT * FROM v1; DELETE FROM v2", Block, OpDeleteAll},
		{"CREATE VIEW v AS SELECT 1 AS id; CREATE RULE r AS ON DELETE TO v DO INSTEAD DELETE FROM users WHERE id = old.id; DELETE FROM v", Block, OpDeleteAll},
		{"CREATE VIEW v AS SELECT 1 AS id; CREATE RULE r AS ON INSERT TO v DO INSTEAD DELETE FROM users WHERE id = new.id; DELETE FROM v", Allow, 0},
		{`CREATE TABLE t (id int, note text); CREATE RULE "_RETURN" AS ON SELECT TO t DO INSTEAD SELECT id, note FROM users; DELETE FROM t`, Block, OpDeleteAll},
		{"CREATE TABLE p (id int PRIMARY KEY); ALTER TABLE users ADD FOREIGN KEY (id) REFERENCES p; TRUNCATE p CASCADE", Block, OpTruncate},
		{"CREATE TABLE p (id int PRIMARY KEY); CREATE TABLE billing.c (id int REFERENCES p); TRUNCATE p CASCADE", Block, OpTruncate},
		{"CREATE TABLE p (id int PRIMARY KEY); CREATE TABLE c (id int REFERENCES p); TRUNCATE p CASCADE", Allow, 0},
		{"CREATE FOREIGN TABLE ft (id int) SERVER loopback; DELETE FROM ft", Block, OpDeleteAll},
		{"CREATE FOREIGN TABLE ft (id int) SERVER loopback; DELETE FROM ft WHERE id = 1", Allow, 0},
		// renames keep what a relation reaches
		{"CREATE VIEW v AS SELECT * FROM users; ALTER VIEW v RENAME TO w; DELETE FROM w", Block, OpDeleteAll},
		{"CREATE VIEW v AS SELECT * FROM users; ALTER TABLE v RENAME TO w; UPDATE w SET note = 'x'", Block, OpUpdateAll},
		{"CREATE VIEW v AS SELECT * FROM users; ALTER VIEW v SET SCHEMA scratch; DELETE FROM scratch.v", Block, OpDeleteAll},
		// a temporary table never hides a protected one
		{"CREATE TEMP TABLE users (id int); DELETE FROM users", Block, OpDeleteAll},
		{"BEGIN; CREATE TEMP TABLE users (id int); ROLLBACK; DELETE FROM users", Block, OpDeleteAll},
		{"CREATE TEMP TABLE users (id int); DELETE FROM pg_temp.users", Allow, 0},
		{"CREATE TEMP TABLE t (id int); DELETE FROM t", Allow, 0},
		{"CREATE TEMP VIEW tv AS SELECT * FROM t; DELETE FROM tv", Allow, 0},
	})
}

// TestRelationsAcrossMessages: what a session's confirmed statements did
// to relations counts in its later messages (psql sends each statement of
// a script as its own message), and only in that session. Contract
// changes are allowed, so that a foreign key added to a protected table
// is applied.
func TestRelationsAcrossMessages(t *testing.T) {
	runSeqCases(t, func(t *testing.T) *Engine { return testEngine(t, contractAllowed) }, func() *Session { return knownSession("app") }, []seqCase{
		{"temp view", []string{"CREATE TEMP VIEW tv AS SELECT * FROM users"}, "DELETE FROM tv", Block, "reaches users (search_path: app, public) (through view or rule tv"},
		{"temp view update", []string{"CREATE TEMP VIEW tv AS SELECT * FROM users"}, "UPDATE tv SET note = NULL", Block, ""},
		{"temp view merge", []string{"CREATE TEMP VIEW tv AS SELECT * FROM users"}, "MERGE INTO tv USING scratch s ON true WHEN MATCHED THEN DELETE", Block, ""},
		{"temp view targeted", []string{"CREATE TEMP VIEW tv AS SELECT * FROM users"}, "DELETE FROM tv WHERE id = 1", Allow, ""},
		{"view", []string{"CREATE VIEW v AS SELECT id FROM billing.invoices"}, "DELETE FROM v", Block, ""},
		{"view over a temp table is temporary", []string{"CREATE TEMP TABLE t (id int)", "CREATE VIEW v AS SELECT * FROM t, users"}, "DELETE FROM pg_temp.v", Block, ""},
		{"view over view", []string{"CREATE VIEW v1 AS SELECT * FROM users", "CREATE VIEW v2 AS SELECT * FROM v1"}, "DELETE FROM v2", Block, ""},
		{"inheritance", []string{"CREATE TABLE par (id int)", "CREATE TABLE billing.kid () INHERITS (par)"}, "DELETE FROM par", Block, "child or partition of"},
		{"partition", []string{"CREATE TABLE pp (id int) PARTITION BY RANGE (id)", "CREATE TABLE billing.p1 PARTITION OF pp FOR VALUES FROM (0) TO (10)"}, "TRUNCATE pp", Block, ""},
		{"refused rewiring leaves nothing", []string{"CREATE TABLE par (id int)", "ALTER TABLE users INHERIT par"}, "DELETE FROM par", Allow, ""},
		{"rename", []string{"CREATE TEMP VIEW tv AS SELECT * FROM users", "ALTER VIEW tv RENAME TO tw"}, "DELETE FROM tw", Block, ""},
		{"rule", []string{"CREATE VIEW v AS SELECT 1 AS id", "CREATE RULE r AS ON UPDATE TO v DO INSTEAD UPDATE users SET note = NULL WHERE id = old.id"}, "UPDATE v SET id = 2", Block, ""},
		{"fk", []string{"CREATE TABLE p (id int PRIMARY KEY)", "ALTER TABLE users ADD FOREIGN KEY (id) REFERENCES p"}, "TRUNCATE p CASCADE", Block, ""},
		{"temp table does not hide", []string{"CREATE TEMP TABLE users (id int)"}, "TRUNCATE users", Block, ""},
		{"dropped temp table", []string{"CREATE TEMP TABLE users (id int)", "DROP TABLE pg_temp.users"}, "TRUNCATE users", Block, ""},
	})
}

// TestUnknownRelationsWithCatalog: with a catalog snapshot (the proxy), a
// statement that may change every row of a relation neither the snapshot
// nor the session knows counts as reaching every protected table: it may
// be a view or parent made after the snapshot, elsewhere. Ordinary
// statements on such relations go on, and so does everything on the
// relations the session made itself.
func TestUnknownRelationsWithCatalog(t *testing.T) {
	const why = "not in pgmoat's catalog snapshot"
	runSeqCases(t, catalogEngine, func() *Session { return knownSession("app") }, []seqCase{
		{"delete", nil, "DELETE FROM made_elsewhere", Block, why},
		{"update", nil, "UPDATE made_elsewhere SET x = 1", Block, why},
		{"merge", nil, "MERGE INTO made_elsewhere m USING scratch s ON true WHEN MATCHED THEN DELETE", Block, why},
		{"truncate", nil, "TRUNCATE made_elsewhere", Block, why},
		{"truncate qualified", nil, "TRUNCATE public.made_elsewhere", Block, why},
		{"drop cascade", nil, "DROP TABLE made_elsewhere CASCADE", Block, why},
		{"writable cte", nil, "WITH d AS (DELETE FROM made_elsewhere RETURNING *) SELECT 1", Block, why},
		{"in a function body", nil, "CREATE FUNCTION f() RETURNS void LANGUAGE sql AS 'DELETE FROM made_elsewhere'", Block, why},
		{"view over an unknown relation", []string{"CREATE VIEW v AS SELECT * FROM made_elsewhere"}, "DELETE FROM v", Block, why},
		{"renamed unknown", []string{"ALTER VIEW made_elsewhere RENAME TO w"}, "DELETE FROM w", Block, why},
		{"renamed away", []string{"ALTER TABLE scratch RENAME TO scratch2"}, "DELETE FROM scratch", Block, why},
		{"discarded temp", []string{"CREATE TEMP TABLE t (id int)", "DISCARD TEMP"}, "DELETE FROM t", Block, why},
		// A function's body runs when called, if ever: what it creates is
		// not the session's.
		{"function body's table", []string{"CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$BEGIN CREATE TEMP TABLE t (id int); DELETE FROM t; END$$"}, "DELETE FROM t", Block, why},
		{"function body's view", []string{"CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$BEGIN CREATE TEMP VIEW fv AS SELECT * FROM users; END$$", "SELECT f()"}, "DELETE FROM fv", Block, why},
		// allowed
		{"drop", nil, "DROP TABLE made_elsewhere", Allow, ""},
		{"targeted delete", nil, "DELETE FROM made_elsewhere WHERE id = 1", Allow, ""},
		{"targeted update", nil, "UPDATE made_elsewhere SET x = 1 WHERE id = $1", Allow, ""},
		{"insert", nil, "INSERT INTO made_elsewhere VALUES (1)", Allow, ""},
		{"select", nil, "SELECT * FROM made_elsewhere", Allow, ""},
		{"known table", nil, "DELETE FROM scratch", Allow, ""},
		{"known table truncate cascade", nil, "TRUNCATE scratch CASCADE", Allow, ""},
		{"own temp table", []string{"CREATE TEMP TABLE t (id int)"}, "DELETE FROM t", Allow, ""},
		{"own temp table truncate", []string{"CREATE TEMP TABLE t (id int)"}, "TRUNCATE t", Allow, ""},
		{"own temp table as", []string{"CREATE TEMP TABLE t AS SELECT * FROM users"}, "TRUNCATE t", Allow, ""},
		{"own select into", []string{"SELECT * INTO TEMP t FROM users"}, "DELETE FROM t", Allow, ""},
		{"own table", []string{"CREATE TABLE t2 (id int)"}, "DELETE FROM t2", Allow, ""},
		{"own table, one message", nil, "CREATE TABLE t2 (id int); TRUNCATE t2", Allow, ""},
		// golang-migrate's bookkeeping, in one session
		{"create if not exists", []string{`CREATE TABLE IF NOT EXISTS "public"."schema_migrations" (version bigint not null primary key, dirty boolean not null)`}, `TRUNCATE "public"."schema_migrations"`, Allow, ""},
		{"temp create if not exists", []string{"CREATE TEMP TABLE IF NOT EXISTS t (id int)"}, "DELETE FROM t", Allow, ""},
		{"create if not exists keeps the catalog's view", []string{"CREATE TABLE IF NOT EXISTS users_v (id int)"}, "DELETE FROM users_v", Block, "public.users"},
		{"own table in a function", nil, "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$BEGIN CREATE TEMP TABLE IF NOT EXISTS t (id int); TRUNCATE t; END$$", Allow, ""},
		{"renamed known", []string{"ALTER TABLE scratch RENAME TO scratch2"}, "DELETE FROM scratch2", Allow, ""},
		{"moved known", []string{"ALTER TABLE scratch SET SCHEMA a"}, "DELETE FROM a.scratch", Allow, ""},
		{"own view over a plain table", []string{"CREATE VIEW v AS SELECT * FROM scratch"}, "DELETE FROM v", Allow, ""},
	})
}

// TestCatalogReach: what the catalog snapshot says a relation reaches.
func TestCatalogReach(t *testing.T) {
	runSeqCases(t, catalogEngine, func() *Session { return knownSession("app") }, []seqCase{
		{"inheritance parent", nil, "DELETE FROM sp", Block, "billing.invoices"},
		{"partitioned parent", nil, "TRUNCATE events", Block, "billing.events_1"},
		{"partitioned parent drop", nil, "DROP TABLE events", Block, "billing.events_1"},
		{"partitioned parent only", nil, "UPDATE ONLY events SET id = 1", Allow, ""},
		{"plain parent", nil, "DELETE FROM old_parent", Allow, ""},
		{"view", nil, "DELETE FROM users_v", Block, ""},
		{"renamed view", []string{"ALTER VIEW users_v RENAME TO users_v2"}, "DELETE FROM users_v2", Block, ""},
		{"moved view", []string{"ALTER VIEW users_v SET SCHEMA a"}, "DELETE FROM a.users_v", Block, ""},
		// a.users comes first on this path and shadows public.users,
		// until the session drops it.
		{"shadowed", []string{"SET search_path TO a, public"}, "DELETE FROM users", Allow, ""},
		{"shadow dropped", []string{"SET search_path TO a, public", "DROP TABLE a.users"}, "DELETE FROM users", Block, ""},
		{"session table does not shadow", []string{"SET search_path TO b, public", "CREATE TABLE b.users (id int)"}, "DELETE FROM users", Block, ""},
	})
}

// TestSharedRelations: what one session made through pgmoat counts in the
// database's other sessions, whenever they started (Engine.Learn), except
// temporary relations and drops, which stay the session's.
func TestSharedRelations(t *testing.T) {
	const reaches = "reaches public.users"
	for _, c := range []struct {
		name       string
		made       []string // in session a, confirmed
		steps      []string // then in session b, opened before a made anything
		sql        string   // in session b
		want       Action
		inSentence string
	}{
		{"view", []string{"CREATE VIEW pv AS SELECT * FROM users"}, nil, "DELETE FROM pv", Block, reaches},
		{"view, IF NOT EXISTS does not launder it", []string{"CREATE VIEW pv AS SELECT * FROM users"}, []string{"CREATE TABLE IF NOT EXISTS pv (id int)"}, "UPDATE pv SET note = NULL", Block, reaches},
		{"swapped name", []string{"DROP TABLE scratch", "CREATE VIEW scratch AS SELECT * FROM users"}, nil, "DELETE FROM scratch", Block, reaches},
		{"renamed view", []string{"CREATE VIEW pv AS SELECT * FROM users", "ALTER VIEW pv RENAME TO pw"}, nil, "DELETE FROM pw", Block, reaches},
		{"renamed catalog view", []string{"ALTER VIEW users_v RENAME TO uv"}, nil, "DELETE FROM uv", Block, reaches},
		{"child", []string{"CREATE TABLE par (id int)", "CREATE TABLE billing.kid () INHERITS (par)"}, nil, "TRUNCATE par", Block, "billing.kid"},
		{"migration's table", []string{"CREATE TABLE jobs (id int)"}, nil, "TRUNCATE jobs", Allow, ""},
		{"migration's table delete", []string{"CREATE TABLE IF NOT EXISTS jobs (id int)"}, nil, "DELETE FROM jobs", Allow, ""},
		{"dropped again", []string{"CREATE TABLE jobs (id int)", "DROP TABLE jobs"}, nil, "TRUNCATE jobs", Block, "not in pgmoat's catalog snapshot"},
		// Another session's relations may be uncommitted: they shadow
		// nothing.
		{"no shadow", []string{"CREATE TABLE a.orgs (id int)", "CREATE TABLE a2.users (id int)"}, []string{"SET search_path TO a2, public"}, "DELETE FROM users", Block, ""},
		// Another session's drop may be rolled back: the table is still
		// the catalog's for the others.
		{"drop stays the session's", []string{"DROP TABLE scratch"}, nil, "DELETE FROM scratch", Allow, ""},
		// Temporary relations are the session's own.
		{"temp view", []string{"CREATE TEMP VIEW tv AS SELECT * FROM users"}, nil, "DELETE FROM tv", Block, "not in pgmoat's catalog snapshot"},
		{"temp table", []string{"CREATE TEMP TABLE tt (id int)"}, nil, "TRUNCATE tt", Block, "not in pgmoat's catalog snapshot"},
	} {
		t.Run(c.name, func(t *testing.T) {
			eng := catalogEngine(t)
			a, b := knownSession("app"), knownSession("app")
			eng.Judge(b, c.sql) // b was there before
			if refused := runAllowed(eng, a, c.made...); len(refused) > 0 {
				t.Fatalf("refused %q", refused)
			}
			runAllowed(eng, b, c.steps...)
			r := eng.Judge(b, c.sql)
			if r.Action != c.want {
				t.Fatalf("%q after %q in another session: %s (%s), want %s", c.sql, c.made, r.Action, r.Decision().Sentence, c.want)
			}
			if c.inSentence != "" && !strings.Contains(r.Decision().Sentence, c.inSentence) {
				t.Errorf("%q: sentence %q does not say %q", c.sql, r.Decision().Sentence, c.inSentence)
			}
		})
	}
}

// TestCreationSchema: an unqualified CREATE goes to the first schema of
// the search path that exists, so that a table a migration user made is
// known where other users' sessions look for it.
func TestCreationSchema(t *testing.T) {
	for _, c := range []struct {
		ddl, user string
		steps     []string
		want      string
	}{
		{"", "migrator", nil, "public"},                          // no schema migrator
		{"CREATE SCHEMA migrator;", "migrator", nil, "migrator"}, // an (empty) schema of the user's
		{"", "migrator", []string{"SET search_path TO a, public"}, "a"},
		{"", "migrator", []string{"SET ROLE billing"}, "billing"}, // $user is the current role
		{"", "migrator", []string{"SET search_path TO pg_temp, \"$user\""}, ""},
	} {
		eng := testEngine(t, defaultProtect)
		cat, err := CatalogFromSQL(relDDL + c.ddl)
		if err != nil {
			t.Fatal(err)
		}
		eng.SetCatalog("app", cat)
		s := knownSession(c.user)
		runAllowed(eng, s, c.steps...)
		r := eng.Judge(s, "CREATE TABLE jobs (id int)")
		var got string
		for _, ch := range r.Statements[0].Changes {
			if ch.Kind == ChangeCreateRelation {
				got = ch.Relation.Schema
			}
		}
		if got != c.want {
			t.Errorf("%q, user %s after %q: CREATE TABLE jobs goes to %q, want %q", c.ddl, c.user, c.steps, got, c.want)
		}
	}
	// What a migration user made is known to the application's sessions.
	eng := catalogEngine(t)
	runAllowed(eng, knownSession("migrator"), "CREATE TABLE jobs (id int)")
	if r := eng.Judge(knownSession("web"), "TRUNCATE jobs"); r.Action != Allow {
		t.Errorf("TRUNCATE of the migration's table in another user's session: %s (%s)", r.Action, r.Decision().Sentence)
	}
}

// TestSharedRelationsAndTheCache: learning changes the database's key, so
// a decision made before is not reused; learning nothing changes nothing.
func TestSharedRelationsAndTheCache(t *testing.T) {
	p, err := Compile(defaultProtect)
	if err != nil {
		t.Fatal(err)
	}
	eng := NewEngine(p, EngineOptions{})
	a, b := knownSession("app"), knownSession("app")
	if r := eng.Judge(b, "DELETE FROM pv"); r.Action != Allow {
		t.Fatalf("before the view: %s", r.Action)
	}
	if r := eng.Judge(b, "DELETE FROM pv"); r.Path != PathCache {
		t.Fatalf("not cached: %s", r.Path)
	}
	before := eng.catalog("app")
	eng.Learn("app", StateChange{Kind: ChangeBegin}, StateChange{Kind: ChangeCreateRelation, Relation: Object{Kind: KindTable, Schema: "pg_temp", Name: "t"}})
	if eng.catalog("app") != before {
		t.Error("learning nothing shared made a new catalog entry")
	}
	runAllowed(eng, a, "CREATE VIEW pv AS SELECT * FROM users")
	if r := eng.Judge(b, "DELETE FROM pv"); r.Action != Block || r.Path != PathFull {
		t.Errorf("after another session's view: %s by %s, want block by full analysis", r.Action, r.Path)
	}
}

// TestSharedRelationsSurviveReload: a new snapshot replaces what the
// sessions made only where it holds it (what it lacks may be in a
// transaction still open when it was read).
func TestSharedRelationsSurviveReload(t *testing.T) {
	eng := catalogEngine(t)
	a := knownSession("app")
	runAllowed(eng, a, "CREATE VIEW pv AS SELECT * FROM users", "CREATE TABLE jobs (id int)")
	old, err := CatalogFromSQL(relDDL)
	if err != nil {
		t.Fatal(err)
	}
	eng.SetCatalog("app", old)
	if r := eng.Judge(knownSession("app"), "DELETE FROM pv"); r.Action != Block {
		t.Errorf("view lost with a snapshot that lacks it: %s", r.Action)
	}
	fresh, err := CatalogFromSQL(relDDL + "CREATE VIEW pv AS SELECT * FROM users; CREATE TABLE jobs (id int);")
	if err != nil {
		t.Fatal(err)
	}
	eng.SetCatalog("app", fresh)
	if sh := eng.catalog("app").shared; sh != nil {
		t.Errorf("a snapshot holding everything left %+v", sh)
	}
	if r := eng.Judge(knownSession("app"), "DELETE FROM pv"); r.Action != Block {
		t.Errorf("view from the new snapshot: %s", r.Action)
	}
}

// TestDroppedSchemaUnshadows: once the session drops a schema, the
// catalog's relations in it shadow nothing.
func TestDroppedSchemaUnshadows(t *testing.T) {
	p, err := Compile(PolicyConfig{Protect: defaultProtect.Protect, Rules: []RuleConfig{
		{Name: "migrations", Match: MatchConfig{Users: []string{"migrator"}}, Operations: []string{"drop"}, Action: "allow"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	eng := NewEngine(p, EngineOptions{})
	cat, err := CatalogFromSQL(relDDL)
	if err != nil {
		t.Fatal(err)
	}
	eng.SetCatalog("app", cat)
	s := knownSession("migrator")
	if refused := runAllowed(eng, s, "SET search_path TO a, public", "DROP SCHEMA a CASCADE"); len(refused) > 0 {
		t.Fatalf("refused %q", refused)
	}
	if r := eng.Judge(s, "DELETE FROM users"); r.Action != Block {
		t.Errorf("DELETE FROM users after DROP SCHEMA a: %s", r.Action)
	}
}

// TestScriptIsStrictWithCatalog: pgmoat check with a catalog (--schema,
// --catalog) judges relations the catalog does not hold as the proxy
// does; without one, names are judged by the search path alone.
func TestScriptIsStrictWithCatalog(t *testing.T) {
	eng := catalogEngine(t)
	r := eng.JudgeScript(knownSession("app"), "DELETE FROM made_elsewhere;\nTRUNCATE made_elsewhere;\n")
	if r.Action != Block {
		t.Errorf("script: got %s, want block as the proxy", r.Action)
	}
	if r := eng.JudgeScript(knownSession("app"), "CREATE TABLE made_here (id int);\nDELETE FROM made_here;\n"); r.Action != Allow {
		t.Errorf("script that makes its table: got %s (%s)", r.Action, r.Decision().Sentence)
	}
	noCat := testEngine(t, defaultProtect)
	if r := noCat.Judge(knownSession("app"), "DELETE FROM made_elsewhere"); r.Action != Allow {
		t.Errorf("without a catalog: got %s (%s)", r.Action, r.Decision().Sentence)
	}
}

// TestUnsettledSession: a message pipelined behind unconfirmed ones is
// judged knowing the session's relations and the pending ones, with an
// unknown search_path.
func TestUnsettledSession(t *testing.T) {
	eng := catalogEngine(t)
	s := knownSession("app")
	runAllowed(eng, s, "CREATE TEMP VIEW tv AS SELECT * FROM users", "CREATE TEMP TABLE t (id int)")
	pending := eng.Judge(s, "CREATE TEMP VIEW tv2 AS SELECT * FROM billing.invoices; DROP TABLE pg_temp.t")
	var changes []StateChange
	for _, v := range pending.Statements {
		changes = append(changes, v.Changes...)
	}
	u := s.Unsettled(changes...)
	if _, ok := u.SearchPath(); ok {
		t.Error("unsettled session knows the search_path")
	}
	for sql, want := range map[string]Action{
		"DELETE FROM tv":              Block,
		"DELETE FROM tv2":             Block,
		"DELETE FROM t":               Block, // dropped by the pending message
		"DELETE FROM tv WHERE id = 1": Allow,
	} {
		if r := eng.Judge(u, sql); r.Action != want {
			t.Errorf("unsettled %q: got %s, want %s", sql, r.Action, want)
		}
	}
	if r := eng.Judge(s.Unsettled(), "TRUNCATE t"); r.Action != Allow {
		t.Errorf("unsettled without pending: TRUNCATE t: %s", r.Action)
	}
}

// TestOverlayCacheKeys: a cached decision is reused only by sessions whose
// relations agree: sessions that changed none share the cache, as do
// sessions that made the same relations; a session with a view does not
// get the decision of one without.
func TestOverlayCacheKeys(t *testing.T) {
	p, err := Compile(defaultProtect)
	if err != nil {
		t.Fatal(err)
	}
	eng := NewEngine(p, EngineOptions{})
	plain := knownSession("app")
	if r := eng.Judge(plain, "DELETE FROM tv"); r.Action != Allow {
		t.Fatalf("no view yet: %s", r.Action)
	}
	withView := knownSession("app")
	runAllowed(eng, withView, "CREATE TEMP VIEW tv AS SELECT * FROM users")
	if r := eng.Judge(withView, "DELETE FROM tv"); r.Action != Block || r.Path != PathFull {
		t.Errorf("with a view: %s by %s, want block by full analysis", r.Action, r.Path)
	}
	if r := eng.Judge(withView, "DELETE FROM tv"); r.Action != Block || r.Path != PathCache {
		t.Errorf("with a view again: %s by %s, want block from the cache", r.Action, r.Path)
	}
	other := knownSession("app")
	runAllowed(eng, other, "CREATE TEMP VIEW tv AS SELECT * FROM users")
	if r := eng.Judge(other, "DELETE FROM tv"); r.Action != Block || r.Path != PathCache {
		t.Errorf("same relations, other session: %s by %s, want block from the cache", r.Action, r.Path)
	}
	plain2 := knownSession("app")
	runAllowed(eng, plain2, "CREATE TEMP TABLE x (id int)", "DROP TABLE pg_temp.x", "DISCARD TEMP")
	fresh := knownSession("app")
	if fresh.stateKey(p, nil) != plain.stateKey(p, nil) {
		t.Error("sessions that changed no relation have different keys")
	}
	if r := eng.Judge(fresh, "DELETE FROM tv"); r.Action != Allow || r.Path != PathCache {
		t.Errorf("no view: %s by %s, want allow from the cache", r.Action, r.Path)
	}
	// A dropped relation is remembered (it hides the catalog's entry), so
	// plain2's key differs from a fresh session's: no shared decision.
	if plain2.stateKey(p, nil) == fresh.stateKey(p, nil) {
		t.Error("a session that dropped a relation shares a fresh session's key")
	}
	if withView.stateKey(p, nil) == fresh.stateKey(p, nil) {
		t.Error("a session with a view shares a fresh session's key")
	}
}

// TestDropSchemaCascadeWithCatalog: with a catalog, DROP SCHEMA ...
// CASCADE of a schema that holds no protected table, no parent of one, no
// table a protected one references and no type a protected one uses,
// passes; otherwise it is refused for what it reaches. Without a catalog
// it may reach every protected table.
func TestDropSchemaCascadeWithCatalog(t *testing.T) {
	p, err := Compile(PolicyConfig{Protect: []string{"public.users", "billing.*"}})
	if err != nil {
		t.Fatal(err)
	}
	cat, err := CatalogFromSQL(`
CREATE SCHEMA billing; CREATE SCHEMA archive; CREATE SCHEMA parents; CREATE SCHEMA lookups; CREATE SCHEMA types; CREATE SCHEMA empty;
CREATE TABLE archive.old_users (id int);
CREATE TABLE parents.base (id int);
CREATE TABLE billing.invoices (id int) INHERITS (parents.base);
CREATE TABLE lookups.countries (code text PRIMARY KEY);
CREATE TABLE public.users (id int, country text REFERENCES lookups.countries (code), status types.user_status);`)
	if err != nil {
		t.Fatal(err)
	}
	eng := NewEngine(p, EngineOptions{})
	eng.SetCatalog("app", cat)
	for sql, want := range map[string]Action{
		"DROP SCHEMA archive CASCADE":                                   Allow,
		"DROP SCHEMA empty CASCADE":                                     Allow,
		"DROP SCHEMA billing CASCADE":                                   Block,
		"DROP SCHEMA parents CASCADE":                                   Block, // billing.invoices inherits from parents.base
		"DROP SCHEMA lookups CASCADE":                                   Block, // users' foreign key goes
		"DROP SCHEMA types CASCADE":                                     Block, // users.status goes
		"DROP SCHEMA unknown_to_catalog CASCADE":                        Block, // made since the snapshot
		"CREATE TABLE archive.t (id int) ; DROP SCHEMA archive CASCADE": Block, // made since the snapshot
	} {
		s := knownSession("app")
		if r := eng.JudgeScript(s, sql); r.Action != want {
			t.Errorf("%s: got %s, want %s (%s)", sql, r.Action, want, r.Decision().Sentence)
		}
	}
	noCat := testEngine(t, defaultProtect)
	if r := noCat.JudgeScript(knownSession("app"), "DROP SCHEMA archive CASCADE"); r.Action != Block {
		t.Errorf("without a catalog: got %s", r.Action)
	}
}

// TestSessionSeesCatalogChange: a session judges under the catalog in
// force at each statement, however many it judged before (the engine
// hands a session its catalog from a copy it keeps until the catalogs
// change).
func TestSessionSeesCatalogChange(t *testing.T) {
	eng := testEngine(t, defaultProtect)
	cat, err := CatalogFromSQL(relDDL)
	if err != nil {
		t.Fatal(err)
	}
	s := knownSession("app")
	other := NewSession(Identity{User: "app", Database: "other"})
	other.SetSearchPath([]string{"$user", "public"})
	// With a catalog, a relation it does not know may reach a protected
	// one; without, only its name counts.
	const sql = "DELETE FROM made_elsewhere"
	for i, step := range []struct {
		set  func()
		want Action
	}{
		{func() {}, Allow},
		{func() { eng.SetCatalog("app", cat) }, Block},
		{func() { eng.SetCatalog("other", cat) }, Block}, // another database's change
		{func() { eng.SetCatalog("app", nil) }, Allow},
		{func() { eng.SetCatalog("app", cat) }, Block},
	} {
		step.set()
		for range 2 { // the second from the cache
			if got := eng.Judge(s, sql).Action; got != step.want {
				t.Fatalf("step %d: %s, want %s", i, got, step.want)
			}
		}
	}
	if got := eng.Judge(other, sql).Action; got != Block {
		t.Fatalf("database other, under its catalog: %s, want Block", got)
	}
}
