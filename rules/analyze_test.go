package rules

import (
	"strings"
	"testing"
)

func testEngine(t testing.TB, cfg PolicyConfig) *Engine {
	t.Helper()
	p, err := Compile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return NewEngine(p, EngineOptions{CacheBytes: -1})
}

var defaultProtect = PolicyConfig{Protect: []string{"public.users", "billing.*"}}

// contractAllowed protects what defaultProtect does, with a rule that
// lets every session change contracts: for tests of what such a change
// (a foreign key added to a protected table) leads to afterwards.
var contractAllowed = PolicyConfig{Protect: defaultProtect.Protect, Rules: []RuleConfig{{Name: "contracts", Operations: []string{"contract"}, Action: "allow"}}}

// knownSession is a session whose search_path is the default one.
func knownSession(user string) *Session {
	s := NewSession(Identity{User: user, Database: "app"})
	s.SetSearchPath([]string{"$user", "public"})
	return s
}

type opCase struct {
	sql  string
	want Action
	op   Operation // expected operation of the deciding effect (blocks only)
}

func runCases(t *testing.T, eng *Engine, newSession func() *Session, cases []opCase) {
	t.Helper()
	for _, c := range cases {
		r := eng.Judge(newSession(), c.sql)
		if r.Action != c.want {
			t.Errorf("%q: got %s, want %s", c.sql, r.Action, c.want)
			for _, v := range r.Statements {
				t.Logf("   %q: %s %q %+v", v.Text, v.Action, v.Sentence, v.Effects)
			}
			continue
		}
		if c.want == Block && c.op != OpNone {
			d := r.Decision()
			found := false
			for _, ef := range d.Effects {
				if ef.Op == c.op {
					found = true
				}
			}
			if !found {
				t.Errorf("%q: no %s effect in %+v", c.sql, c.op, d.Effects)
			}
		}
	}
}

func TestOperations(t *testing.T) {
	eng := testEngine(t, defaultProtect)
	runCases(t, eng, func() *Session { return knownSession("app") }, []opCase{
		// drop
		{"DROP TABLE users", Block, OpDrop},
		{"DROP TABLE IF EXISTS public.users CASCADE", Block, OpDrop},
		{"DROP VIEW billing.v", Block, OpDrop},
		{"DROP MATERIALIZED VIEW billing.mv", Block, OpDrop},
		{"DROP SEQUENCE billing.invoices_id_seq", Block, OpDrop},
		{"DROP INDEX billing.invoices_pkey", Block, OpDrop},
		{"DROP SCHEMA billing", Block, OpDrop},
		{"DROP SCHEMA scratch CASCADE", Block, OpDrop},
		{"DROP SCHEMA scratch", Allow, 0},
		{"DROP DATABASE appdb", Block, OpDrop},
		{"DROP OWNED BY nobody", Block, OpDrop},
		{"DROP TYPE public.user_status CASCADE", Block, OpDrop},
		{"DROP TYPE public.user_status", Allow, 0},
		{"DROP EXTENSION dblink CASCADE", Block, OpDrop},
		{"DROP FUNCTION f() CASCADE", Block, OpDrop},
		{"DROP TABLE users_archive", Allow, 0},
		{"DROP TABLE \"USERS\"", Allow, 0},
		{`DROP TABLE U&"\0055SERS"`, Allow, 0},
		{`DROP TABLE U&"\0075sers"`, Block, OpDrop},
		{"DROP TABLE public.users2", Allow, 0},
		{"DROP TABLE billing_old.x", Allow, 0},
		{"DROP TRIGGER t ON users", Block, OpContract}, // a trigger is part of the contract
		{"DROP TRIGGER t ON audit_log", Allow, 0},
		// 63-byte truncation: the server drops "users" only if the name
		// truncates to it, and a long name matching a pattern by prefix
		// is the truncated one.
		{"DROP TABLE billing." + strings.Repeat("x", 70), Block, OpDrop},
		{"DROP TABLE public." + strings.Repeat("u", 70), Allow, 0},
		// truncate
		{"TRUNCATE users", Block, OpTruncate},
		{"TRUNCATE ONLY billing.invoices, public.audit_log", Block, OpTruncate},
		{"TRUNCATE audit_log", Allow, 0},
		{"TRUNCATE audit_log CASCADE", Block, OpTruncate}, // no catalog: FKs unknown
		// delete_all / update_all
		{"DELETE FROM users", Block, OpDeleteAll},
		{"DELETE FROM users WHERE true", Block, OpDeleteAll},
		{"DELETE FROM users WHERE 1=1", Block, OpDeleteAll},
		{"DELETE FROM users WHERE 2 > 1", Block, OpDeleteAll},
		{"DELETE FROM users WHERE NOT false", Block, OpDeleteAll},
		{"DELETE FROM users WHERE NULL IS NULL", Block, OpDeleteAll},
		{"DELETE FROM users WHERE id = 1 OR true", Block, OpDeleteAll},
		{"DELETE FROM users WHERE $1", Block, OpDeleteAll},
		{"DELETE FROM users WHERE id IS NOT NULL", Block, OpDeleteAll},
		{"DELETE FROM users WHERE NOT (id IS NULL)", Block, OpDeleteAll},
		{"DELETE FROM users WHERE id = id", Block, OpDeleteAll},
		{"DELETE FROM users u WHERE u.id = u.id", Block, OpDeleteAll},
		{"DELETE FROM users WHERE 'a' = 'a'", Block, OpDeleteAll},
		{"DELETE FROM users WHERE EXISTS (SELECT 1 FROM orgs WHERE id = 1)", Block, OpDeleteAll},
		{"DELETE FROM users WHERE now() > '2000-01-01'", Block, OpDeleteAll},
		{"DELETE FROM users WHERE true::boolean", Block, OpDeleteAll},
		{"DELETE FROM users WHERE 't'", Block, OpDeleteAll},
		{"DELETE FROM users WHERE id = 1 AND true", Allow, 0},
		{"DELETE FROM users WHERE false", Allow, 0},
		{"DELETE FROM users WHERE 1 = 0", Allow, 0},
		{"DELETE FROM users WHERE id = 1", Allow, 0},
		{"DELETE FROM users WHERE id = $1", Allow, 0},
		{"DELETE FROM users WHERE id IN (1, 2, 3)", Allow, 0},
		{"DELETE FROM users WHERE id IS NULL", Allow, 0},
		{"DELETE FROM users u WHERE EXISTS (SELECT 1 FROM orgs o WHERE o.id = u.org_id)", Allow, 0},
		{"DELETE FROM users_archive", Allow, 0},
		{"UPDATE users SET note = NULL", Block, OpUpdateAll},
		{"UPDATE billing.invoices SET amount = 0 WHERE $1 IS NULL", Block, OpUpdateAll},
		{"UPDATE users SET note = 'x' WHERE id = 7", Allow, 0},
		{"UPDATE users SET note = 'x' FROM orgs WHERE orgs.id = 1", Block, OpUpdateAll},
		{"UPDATE users SET note = 'x' FROM orgs WHERE orgs.id = users.org_id", Allow, 0},
		// MERGE
		{"MERGE INTO users u USING orgs o ON true WHEN MATCHED THEN DELETE", Block, OpDeleteAll},
		{"MERGE INTO users u USING orgs o ON 1=1 WHEN MATCHED THEN UPDATE SET note = 'x'", Block, OpUpdateAll},
		{"MERGE INTO users u USING orgs o ON u.org_id = o.id WHEN MATCHED THEN DELETE", Allow, 0},
		{"MERGE INTO users u USING orgs o ON u.org_id = o.id WHEN NOT MATCHED BY SOURCE THEN DELETE", Block, OpDeleteAll},
		{"MERGE INTO users u USING orgs o ON u.org_id = o.id WHEN NOT MATCHED THEN INSERT (id) VALUES (o.id)", Allow, 0},
		// CTEs and wrappers
		{"WITH d AS (DELETE FROM users RETURNING *) SELECT 1", Block, OpDeleteAll},
		{"WITH a AS (SELECT 1), d AS (UPDATE billing.payments SET amount = 0 RETURNING 1) SELECT * FROM a", Block, OpUpdateAll},
		{"WITH d AS (DELETE FROM users WHERE id = 1 RETURNING *) SELECT 1", Allow, 0},
		{"CREATE TABLE t AS WITH d AS (DELETE FROM users RETURNING *) SELECT * FROM d", Block, OpDeleteAll},
		{"WITH d AS (DELETE FROM users RETURNING *) SELECT * INTO t FROM d", Block, OpDeleteAll},
		{"COPY (DELETE FROM users RETURNING *) TO STDOUT", Block, OpDeleteAll},
		{"COPY (SELECT * FROM users) TO STDOUT", Allow, 0},
		{"COPY users FROM STDIN", Allow, 0},
		{"EXPLAIN ANALYZE DELETE FROM users", Block, OpDeleteAll},
		{"EXPLAIN (ANALYZE) DELETE FROM users", Block, OpDeleteAll},
		{"EXPLAIN (ANALYZE true) DELETE FROM users", Block, OpDeleteAll},
		{"EXPLAIN (ANALYZE 1) DELETE FROM users", Block, OpDeleteAll},
		{"EXPLAIN (ANALYZE on, COSTS off) DELETE FROM users", Block, OpDeleteAll},
		{"EXPLAIN (ANALYZE off, ANALYZE on) DELETE FROM users", Block, OpDeleteAll},
		{"EXPLAIN (ANALYZE on, ANALYZE off) DELETE FROM users", Allow, 0},
		{"EXPLAIN (ANALYZE 0) DELETE FROM users", Allow, 0},
		{"EXPLAIN DELETE FROM users", Allow, 0},
		{"EXPLAIN VERBOSE DELETE FROM users", Allow, 0},
		{"PREPARE p AS DELETE FROM users", Block, OpDeleteAll},
		{"PREPARE p(int) AS DELETE FROM users WHERE id = $1", Allow, 0},
		{"PREPARE p AS DELETE FROM users; EXECUTE p", Block, OpDeleteAll},
		{"EXECUTE unknown_stmt", Block, OpOpaque},
		// alter_destructive
		{"ALTER TABLE users DROP COLUMN email", Block, OpAlterDestructive},
		{"ALTER TABLE users ALTER COLUMN id TYPE bigint", Block, OpAlterDestructive},
		{"ALTER TABLE users RENAME TO people", Block, OpAlterDestructive},
		{"ALTER TABLE users RENAME COLUMN email TO mail", Block, OpAlterDestructive},
		{"ALTER TABLE billing.invoices SET SCHEMA public", Block, OpAlterDestructive},
		{"ALTER TABLE users DROP CONSTRAINT users_pkey", Block, OpAlterDestructive},
		{"ALTER TABLE users SET UNLOGGED", Block, OpAlterDestructive},
		{"ALTER INDEX users RENAME TO u2", Block, OpAlterDestructive},
		{"ALTER VIEW users RENAME TO u2", Block, OpAlterDestructive},
		{"ALTER MATERIALIZED VIEW users RENAME TO u2", Block, OpAlterDestructive},
		{"ALTER FOREIGN TABLE users DROP COLUMN email", Block, OpAlterDestructive},
		{"ALTER SCHEMA billing RENAME TO b2", Block, OpAlterDestructive},
		{"ALTER SCHEMA scratch RENAME TO s2", Allow, 0},
		{"ALTER TABLE users ADD COLUMN x int", Allow, 0},
		{"ALTER TABLE users_archive DROP COLUMN email", Allow, 0},
		// opaque
		{"DO $$ BEGIN EXECUTE 'DROP TABLE users'; END $$", Block, OpDrop},
		{"DO $$ BEGIN EXECUTE 'DROP TABLE ' || 'users'; END $$", Block, OpDrop},
		{"DO $$ BEGIN EXECUTE 'DROP TABLE scratch'; END $$", Allow, 0},
		{"DO $$ DECLARE t text := 'users'; BEGIN EXECUTE 'DROP TABLE ' || t; END $$", Block, OpOpaque},
		{"DO $$ BEGIN DELETE FROM users; END $$", Block, OpDeleteAll},
		{"DO $$ BEGIN PERFORM 1; END $$", Allow, 0},
		{"DO LANGUAGE plpython3u $$ plpy.execute('x') $$", Block, OpOpaque},
		{"SELECT dblink_exec('dbname=x', 'SELECT 1')", Block, OpOpaque},
		{`SELECT U&"\0064blink_exec"('dbname=x', 'DROP TABLE users')`, Block, OpOpaque},
		{"SELECT * FROM dblink('dbname=x', 'DELETE FROM users') AS t(x int)", Block, OpOpaque},
		{"COPY (SELECT 1) TO PROGRAM 'rm -rf /'", Block, OpOpaque},
		{"COPY users FROM '/tmp/x'", Block, OpOpaque},
		{"DELETE FROM pg_catalog.pg_class WHERE relname = 'users'", Block, OpOpaque},
		{"UPDATE pg_class SET relname = 'x' WHERE relname = 'users'", Block, OpOpaque},
		{"CREATE FUNCTION f() RETURNS void LANGUAGE sql AS 'DELETE FROM users'", Block, OpDeleteAll},
		{"CREATE FUNCTION f() RETURNS void LANGUAGE sql AS 'DELETE FROM users WHERE id = 1'", Allow, 0},
		{"CREATE FUNCTION f(flag bool) RETURNS void LANGUAGE sql AS 'DELETE FROM users WHERE flag'", Block, OpDeleteAll},
		{"CREATE PROCEDURE p() LANGUAGE sql BEGIN ATOMIC DELETE FROM users; END", Block, OpDeleteAll},
		{"CREATE FUNCTION f() RETURNS int LANGUAGE sql RETURN 1", Allow, 0},
		{"CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$BEGIN TRUNCATE billing.invoices; END$$", Block, OpTruncate},
		{"CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$DECLARE v bool := true; BEGIN DELETE FROM users WHERE v; END$$", Block, OpDeleteAll},
		{"CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$BEGIN IF (SELECT dblink_exec('', 'x')) IS NULL THEN RETURN; END IF; END$$", Block, OpOpaque},
		{"CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql SET search_path = billing AS $$BEGIN DELETE FROM invoices; END$$", Block, OpDeleteAll},
		{"CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$BEGIN RAISE NOTICE 'DROP TABLE users'; END$$", Allow, 0},
		{"CREATE FUNCTION f() RETURNS int LANGUAGE c AS 'mod', 'f'", Block, OpOpaque},
		{"CREATE FUNCTION f() RETURNS void LANGUAGE plperlu AS $$ 1 $$", Block, OpOpaque},
		{"CREATE RULE r AS ON INSERT TO audit_log DO ALSO DELETE FROM users", Block, OpDeleteAll},
		{"CREATE RULE r AS ON INSERT TO audit_log DO ALSO DELETE FROM users WHERE id = NEW.id", Allow, 0},
		{"CREATE FUNCTION g() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$; CREATE TRIGGER t AFTER INSERT ON users FOR EACH ROW EXECUTE FUNCTION g()", Block, OpContract},
		{"CREATE FUNCTION g() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$; CREATE TRIGGER t AFTER INSERT ON scratch FOR EACH ROW EXECUTE FUNCTION g()", Allow, 0},
		{"CREATE TEMP VIEW v AS SELECT * FROM users; DELETE FROM v", Block, OpDeleteAll},
		{"CREATE VIEW v AS SELECT * FROM users; UPDATE v SET note = 'x'", Block, OpUpdateAll},
		{"CREATE TEMP VIEW v AS SELECT * FROM users; DELETE FROM v WHERE id = 1", Allow, 0},
		// A temporary table does not shadow a protected one: it may be
		// gone by means pgmoat cannot see, and then the name is the
		// protected table's. Qualified, it is unambiguous.
		{"CREATE TEMP TABLE users (id int); DROP TABLE users", Block, OpDrop},
		{"CREATE TEMP TABLE users (id int); DROP TABLE pg_temp.users", Allow, 0},
		{"CREATE TEMP TABLE users (id int); DROP TABLE pg_temp.users; DROP TABLE users", Block, OpDrop},
		// lexer_state
		{"SET standard_conforming_strings = off", Block, OpLexerState},
		{"SET standard_conforming_strings TO false", Block, OpLexerState},
		{"SET LOCAL standard_conforming_strings = 0", Block, OpLexerState},
		{"SET standard_conforming_strings = on", Allow, 0},
		{"SET client_encoding = 'SJIS'", Block, OpLexerState},
		{"SET client_encoding TO 'shift_jis_2004'", Block, OpLexerState},
		{"SET NAMES 'GBK'", Block, OpLexerState},
		{"SET NAMES 'UTF8'", Allow, 0},
		{"SET client_encoding = 'LATIN1'", Allow, 0},
		{"SELECT set_config('standard_conforming_strings', 'off', false)", Block, OpLexerState},
		{"SELECT set_config('client_encoding', 'BIG5', false)", Block, OpLexerState},
		{"SELECT set_config(current_setting('x'), 'off', false)", Block, OpLexerState},
		// Settings that change neither lexing nor name resolution pass,
		// named or pinned by pg_settings' WHERE (pg_dump's first query).
		{"SELECT set_config('statement_timeout', '0', false)", Allow, 0},
		{"SELECT pg_catalog.set_config('restrict_nonsystem_relation_kind', 'view', false)", Allow, 0},
		{"SELECT set_config(name, 'view, foreign-table', false) FROM pg_settings WHERE name = 'restrict_nonsystem_relation_kind'", Allow, 0},
		{"SELECT pg_catalog.set_config(s.name, 'x', false) FROM pg_catalog.pg_settings s WHERE s.name IN ('lock_timeout', 'statement_timeout') AND s.context = 'user'", Allow, 0},
		{"SELECT set_config(name, 'off', false) FROM pg_settings WHERE name = 'standard_conforming_strings'", Block, OpLexerState},
		{"SELECT set_config(name, 'SJIS', false) FROM pg_settings WHERE name IN ('lock_timeout', 'client_encoding')", Block, OpLexerState},
		{"SELECT set_config(name, 'off', false) FROM pg_settings WHERE name LIKE 'standard%'", Block, OpLexerState},
		{"SELECT set_config(name, 'off', false) FROM pg_settings WHERE name = 'lock_timeout' OR true", Block, OpLexerState},
		{"SELECT set_config(name, 'off', false) FROM pg_settings", Block, OpLexerState},
		{"SELECT set_config(name, 'off', false) FROM public.pg_settings WHERE name = 'lock_timeout'", Block, OpLexerState},
		{"SELECT set_config(name, 'off', false) FROM pg_settings, (SELECT 'standard_conforming_strings' AS name) x WHERE pg_settings.name = 'lock_timeout'", Block, OpLexerState},
		{"SELECT set_config(x.name, 'off', false) FROM pg_settings s, pg_settings x WHERE s.name = 'lock_timeout'", Block, OpLexerState},
		{"SELECT (SELECT set_config(name, 'off', false) FROM pg_settings WHERE name = 'standard_conforming_strings')", Block, OpLexerState},
		{"ALTER ROLE bob SET standard_conforming_strings = off", Block, OpLexerState},
		{"ALTER DATABASE app SET client_encoding = 'UHC'", Block, OpLexerState},
		{"ALTER SYSTEM SET standard_conforming_strings = off", Block, OpLexerState},
		{"RESET standard_conforming_strings", Allow, 0},
		// unparseable
		{"DROP TABLE", Block, OpUnparseable},
		{"\\dt", Block, OpUnparseable},
		// harmless look-alikes and decoys
		{"SELECT 'DROP TABLE users'", Allow, 0},
		{"SELECT $$DELETE FROM users$$", Allow, 0},
		{"SELECT 1 -- DROP TABLE users", Allow, 0},
		{"SELECT 1 /* ; DELETE FROM users; */", Allow, 0},
		{"SELECT E'\\'; DROP TABLE users; --'", Allow, 0},
		{"INSERT INTO audit_log(msg) VALUES ('TRUNCATE users')", Allow, 0},
		{"SELECT * FROM users WHERE id = 1 FOR UPDATE", Allow, 0},
		{"VACUUM FULL users", Allow, 0},
		{"REINDEX TABLE users", Allow, 0},
		{"CREATE INDEX ON users (email)", Allow, 0},
		{"ANALYZE users", Allow, 0},
		{"", Allow, 0},
		{"  ;  ", Allow, 0},
	})
}

func TestNothingProtectedAllowsEverything(t *testing.T) {
	eng := testEngine(t, PolicyConfig{Rules: []RuleConfig{{Name: "r", Operations: []string{"destructive"}, Action: "block"}}})
	for _, sql := range []string{"DROP TABLE users", "DO $$BEGIN EXECUTE x; END$$", "SET standard_conforming_strings = off", "garbage garbage"} {
		if r := eng.Judge(knownSession("app"), sql); r.Action != Allow {
			t.Errorf("%q: got %s", sql, r.Action)
		}
	}
}
