package rules

import (
	"strings"
	"testing"
)

// TestSideDoorsWithoutCatalog: pgmoat check without --schema knows the
// functions that reach outside the transaction by name, and refuses
// making code it cannot read.
func TestSideDoorsWithoutCatalog(t *testing.T) {
	eng := testEngine(t, defaultProtect)
	runCases(t, eng, func() *Session { return knownSession("app") }, []opCase{
		{"SELECT lo_export(42, '/var/lib/postgresql/data/base/1/1259')", Block, OpOpaque},
		{"SELECT pg_file_unlink('base/16384/16385')", Block, OpOpaque},
		{"SELECT heap_force_kill('users'::regclass, ARRAY['(0,1)']::tid[])", Block, OpOpaque},
		{"ALTER FUNCTION dblink_exec(text, text) RENAME TO innocent", Block, OpOpaque},
		{"ALTER FUNCTION public.dblink_exec(text) SET SCHEMA hidden", Block, OpOpaque},
		{"ALTER FUNCTION lo_export(oid, text) RENAME TO backup", Block, OpOpaque},
		{"CREATE FUNCTION innocent(text, text) RETURNS text LANGUAGE c AS '$libdir/dblink', 'dblink_exec'", Block, OpOpaque},
		{"CREATE FUNCTION innocent(text, text) RETURNS text LANGUAGE c AS '/tmp/copy_of_dblink', 'dblink_exec'", Block, OpOpaque},
		{"CREATE FUNCTION sc(text, text, bool) RETURNS text LANGUAGE internal AS 'set_config_by_name'", Block, OpOpaque},
		{"CREATE FUNCTION sv(regclass, bigint) RETURNS bigint LANGUAGE internal STRICT AS 'setval_oid'", Block, OpOpaque},
		{"CREATE OPERATOR === (PROCEDURE = dblink_exec, LEFTARG = text, RIGHTARG = text)", Block, OpOpaque},
		{"CREATE AGGREGATE a(text) (SFUNC = dblink_exec, STYPE = text)", Block, OpOpaque},
		{"CREATE TABLE t (a text DEFAULT dblink_exec('dbname=app', 'DROP TABLE users'))", Block, OpOpaque},
		{"CREATE TRIGGER t BEFORE INSERT ON scratch FOR EACH ROW EXECUTE FUNCTION check_foreign_key(1, 'cascade', 'id', 'users', 'id')", Block, OpOpaque},
		{"CREATE SUBSCRIPTION s CONNECTION 'host=elsewhere' PUBLICATION p", Block, OpOpaque},
		{"ALTER SUBSCRIPTION s ENABLE", Block, OpOpaque},
		// Twins.
		{"SELECT lo_unlink(42)", Allow, 0},
		{"ALTER FUNCTION my_lower(text) RENAME TO my_lower2", Allow, 0},
		{"ALTER FUNCTION my_lower(text) SET SCHEMA util", Allow, 0},
		{"CREATE FUNCTION innocent(text, text) RETURNS text LANGUAGE sql AS 'SELECT $2'", Allow, 0},
		{"CREATE OPERATOR === (PROCEDURE = texteq, LEFTARG = text, RIGHTARG = text)", Allow, 0},
		{"CREATE AGGREGATE a(text) (SFUNC = textcat, STYPE = text)", Allow, 0},
		{"CREATE TABLE t (a text DEFAULT md5(random()::text))", Allow, 0},
		{"CREATE TRIGGER t BEFORE UPDATE ON scratch FOR EACH ROW EXECUTE FUNCTION moddatetime(updated_at)", Allow, 0},
		{"CREATE SUBSCRIPTION s CONNECTION 'host=elsewhere' PUBLICATION p WITH (enabled = false)", Allow, 0},
		{"ALTER SUBSCRIPTION s DISABLE", Allow, 0},
		{"DROP SUBSCRIPTION s", Allow, 0},
	})
}

// sideDoorSchema is what pgmoat check --schema would read: dblink_exec
// re-declared under innocent names, and objects that run it.
const sideDoorSchema = `
CREATE TABLE public.users (id int PRIMARY KEY);
CREATE FUNCTION public.innocent(text, text) RETURNS text LANGUAGE c AS '$libdir/dblink', 'dblink_exec';
CREATE FUNCTION public.harmless(text, text) RETURNS text LANGUAGE sql IMMUTABLE AS 'SELECT $2';
CREATE FUNCTION public.wrap(text) RETURNS text LANGUAGE sql AS $$ SELECT public.innocent('dbname=app', $1) $$;
CREATE OPERATOR public.==> (PROCEDURE = public.innocent, LEFTARG = text, RIGHTARG = text);
CREATE OPERATOR public.==< (PROCEDURE = public.harmless, LEFTARG = text, RIGHTARG = text);
CREATE AGGREGATE public.evil(text) (SFUNC = public.innocent, STYPE = text);
CREATE AGGREGATE public.fine(text) (SFUNC = public.harmless, STYPE = text);
CREATE TYPE public.mood AS (t text);
CREATE FUNCTION public.tomood(text) RETURNS public.mood LANGUAGE sql AS $$ SELECT ROW(public.wrap($1))::public.mood $$;
CREATE CAST (text AS public.mood) WITH FUNCTION public.tomood(text);
CREATE DOMAIN public.checked AS text CHECK (public.innocent('dbname=app', VALUE) IS NOT NULL);
CREATE TABLE public.t_def (a text DEFAULT public.wrap('DROP TABLE users'));
CREATE TABLE public.t_dom (d public.checked);
CREATE TABLE public.t_ok (a text DEFAULT public.harmless('', 'x'));
CREATE TABLE public.t_idx (a text);
CREATE INDEX t_idx_a ON public.t_idx ((public.innocent('dbname=app', a)));
CREATE VIEW public.v_door AS SELECT 'a' ==> 'b' AS r;
CREATE VIEW public.v_ok AS SELECT 'a' ==< 'b' AS r;
CREATE FUNCTION public.trg() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN PERFORM public.wrap(NEW.a); RETURN NEW; END$$;
CREATE TABLE public.t_trg (a text);
CREATE TRIGGER t BEFORE INSERT ON public.t_trg FOR EACH ROW EXECUTE FUNCTION public.trg();
`

// TestSideDoorsFromSchema: with the schema's DDL, pgmoat check finds the
// statements that fire a function reaching outside the transaction,
// whatever it is called and however it is reached.
func TestSideDoorsFromSchema(t *testing.T) {
	eng := testEngine(t, PolicyConfig{Protect: []string{"public.users"}})
	cat, err := CatalogFromSQL(sideDoorSchema)
	if err != nil {
		t.Fatal(err)
	}
	eng.SetCatalog("app", cat)
	for _, c := range []struct {
		sql  string
		want Action
		says string
	}{
		{"SELECT innocent('dbname=app', 'DROP TABLE users')", Block, "public.innocent() reaches outside the transaction"},
		{"SELECT wrap('DROP TABLE users')", Block, "public.wrap() calls public.innocent()"},
		{"SELECT 'a' ==> 'DROP TABLE users'", Block, "uses operator ==>: operator public.==> runs public.innocent()"},
		{"SELECT evil(x) FROM (VALUES ('q')) v(x)", Block, "public.evil() calls public.innocent()"},
		{"SELECT 'DROP TABLE users'::text::mood", Block, "cast from text to public.mood runs public.tomood() calls public.wrap()"},
		{"SELECT 'x'::checked", Block, "check of domain public.checked"},
		{"INSERT INTO t_def DEFAULT VALUES", Block, "INSERT INTO public.t_def runs the default of column a"},
		{"INSERT INTO t_dom VALUES ('x')", Block, "check of domain checked on column d"},
		{"COPY t_idx FROM STDIN", Block, "COPY INTO public.t_idx runs the index t_idx_a"},
		{"REINDEX INDEX t_idx_a", Block, "REINDEX public.t_idx"},
		{"SELECT * FROM v_door", Block, "reading public.v_door"},
		{"INSERT INTO t_trg VALUES ('DROP TABLE users')", Block, "trigger t: public.trg() calls public.wrap()"},
		{"CREATE TRIGGER t2 AFTER INSERT ON t_ok FOR EACH ROW EXECUTE FUNCTION trg()", Block, "public.trg() calls"},
		{"ALTER FUNCTION public.innocent(text, text) RENAME TO nothing_to_see", Block, "public.innocent()"},
		{"ALTER FUNCTION wrap(text) SET SCHEMA hidden", Block, "public.wrap() calls"},
		// Twins.
		{"SELECT harmless('dbname=app', 'x')", Allow, ""},
		{"SELECT 'a' ==< 'b'", Allow, ""},
		{"SELECT fine(x) FROM (VALUES ('q')) v(x)", Allow, ""},
		{"INSERT INTO t_ok DEFAULT VALUES", Allow, ""},
		{"SELECT * FROM v_ok", Allow, ""},
		{"INSERT INTO t_idx VALUES ('x')", Block, "index t_idx_a"},
		{"ALTER FUNCTION public.harmless(text, text) RENAME TO harmless2", Allow, ""},
		{"SELECT 'x'::text", Allow, ""},
	} {
		r := eng.JudgeScript(knownSession("app"), c.sql)
		if r.Action != c.want {
			t.Errorf("%q: got %s (%s), want %s", c.sql, r.Action, sentenceOf(r), c.want)
			continue
		}
		if c.says != "" && !strings.Contains(r.Decision().Sentence, c.says) {
			t.Errorf("%q: sentence %q does not say %q", c.sql, r.Decision().Sentence, c.says)
		}
	}
}
