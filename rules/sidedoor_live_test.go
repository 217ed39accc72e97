package rules

import (
	"context"
	"strings"
	"testing"

	"github.com/pgmoat/pgmoat/internal/pgtest"
)

// sideDoorDDL makes, for one function pair, every kind of object that
// runs a function implicitly. {F} and {FI} (IMMUTABLE) are the function,
// {S} a suffix for names, {OP} the operator, {C} a connection string
// literal and {Q} a statement literal for the function to run there.
const sideDoorDDL = `
CREATE FUNCTION wrap{S}(text) RETURNS text LANGUAGE sql AS $$ SELECT {F}({C}, $1) $$;
CREATE TABLE t_def{S} (x text DEFAULT {F}({C}, {Q}));
CREATE TABLE t_gen{S} (a text, g text GENERATED ALWAYS AS ({FI}({C}, a)) STORED);
CREATE DOMAIN dcheck{S} AS text CHECK ({F}({C}, VALUE) IS NOT NULL);
CREATE TABLE t_dom{S} (d dcheck{S});
CREATE TABLE t_idx{S} (a text);
CREATE INDEX ON t_idx{S} (({FI}({C}, a)));
CREATE VIEW v_door{S} AS SELECT {F}({C}, {Q}) AS r;
CREATE VIEW v_v{S} AS SELECT * FROM v_door{S};
CREATE OPERATOR {OP} (PROCEDURE = {F}, LEFTARG = text, RIGHTARG = text);
CREATE VIEW v_op{S} AS SELECT {C} {OP} {Q} AS r;
CREATE AGGREGATE agg{S}(text) (SFUNC = {F}, STYPE = text, INITCOND = {C});
CREATE VIEW v_agg{S} AS SELECT agg{S}(q) FROM (VALUES ({Q})) v(q);
CREATE TYPE mood{S} AS (t text);
CREATE FUNCTION tomood{S}(text) RETURNS mood{S} LANGUAGE sql AS $$ SELECT ROW({F}({C}, $1))::mood{S} $$;
CREATE CAST (text AS mood{S}) WITH FUNCTION tomood{S}(text);
CREATE TYPE mood3{S} AS (t text);
CREATE FUNCTION tomood3{S}(text) RETURNS mood3{S} LANGUAGE sql AS $$ SELECT ROW({F}({C}, $1))::mood3{S} $$;
CREATE FUNCTION trg{S}() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN PERFORM wrap{S}(NEW.a); RETURN NEW; END$$;
CREATE TABLE t_trg{S} (a text);
CREATE TRIGGER tt BEFORE INSERT ON t_trg{S} FOR EACH ROW EXECUTE FUNCTION trg{S}();
CREATE TABLE t_rule{S} (a text);
CREATE RULE r AS ON INSERT TO t_rule{S} DO ALSO SELECT {F}({C}, NEW.a);
CREATE TABLE t_pol{S} (a text);
CREATE POLICY p ON t_pol{S} USING ({F}({C}, a) IS NOT NULL);
ALTER TABLE t_pol{S} ENABLE ROW LEVEL SECURITY;
`

// TestLiveSideDoors: dblink_exec renamed, re-declared as LANGUAGE c under
// another name, and reached through a function body, an operator, an
// aggregate, a cast, a column default, a generated column, a domain
// check, an index expression, a view, a trigger, a rule and a policy.
// On the real server each statement that fires one writes through
// another connection, where rolling back does not reach; pgmoat, with
// the catalog loaded as the proxy loads it and guarded execution on,
// blocks it with a sentence that names the object and what it reaches.
// The same construct over a harmless function writes nothing and is
// let through (run under guard when it runs code). Making such objects,
// and renaming, moving or re-pointing an escaping function, is refused;
// the harmless twins are not.
func TestLiveSideDoors(t *testing.T) {
	c := pgtest.Get(t)
	db := c.NewDatabase(t)
	lit := func(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
	conninfo := lit(c.SuperConnString(db, "sslmode=disable"))
	q := lit("INSERT INTO public.escaped VALUES (1)")
	c.Exec(t, db, `
CREATE EXTENSION dblink;
CREATE TABLE public.escaped (n int);
CREATE TABLE public.users (id int PRIMARY KEY, note text);
CREATE TABLE public.scratch (id int, a text);
INSERT INTO public.scratch VALUES (1, 'INSERT INTO public.escaped VALUES (1)');
CREATE SCHEMA other;
ALTER FUNCTION dblink_exec(text, text) RENAME TO innocent;
CREATE FUNCTION public.redecl(text, text) RETURNS text LANGUAGE c AS '$libdir/dblink', 'dblink_exec';
CREATE FUNCTION public.redecl_i(text, text) RETURNS text LANGUAGE c IMMUTABLE AS '$libdir/dblink', 'dblink_exec';
CREATE FUNCTION public.safe(text, text) RETURNS text LANGUAGE sql IMMUTABLE AS 'SELECT $2';
CREATE FUNCTION public.safe_i(text, text) RETURNS text LANGUAGE sql IMMUTABLE AS 'SELECT $2';`)
	for _, set := range [][]string{{"{F}", "redecl", "{FI}", "redecl_i", "{S}", "", "{OP}", "==>"}, {"{F}", "safe", "{FI}", "safe_i", "{S}", "_ok", "{OP}", "==<"}} {
		r := strings.NewReplacer(append(set, "{C}", conninfo, "{Q}", q)...)
		c.Exec(t, db, r.Replace(sideDoorDDL))
		c.Exec(t, db, r.Replace("INSERT INTO t_idx{S} VALUES ({Q})")) // a row for REINDEX and ANALYZE to index
	}
	ctx := context.Background()
	conn := c.Connect(t, db)
	eng := liveVerifyingEngine(t, conn, db, "public.users")
	escaped := func() int {
		var n int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM public.escaped").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	// escapes runs stmt on the server in a transaction it rolls back and
	// reports whether it wrote through another connection.
	escapes := func(stmt string) bool {
		before := escaped()
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(stmt, "COPY ") {
			_, err = tx.Conn().PgConn().CopyFrom(ctx, strings.NewReader("INSERT INTO public.escaped VALUES (1)\n"), stmt)
		} else {
			_, err = tx.Exec(ctx, stmt)
		}
		tx.Rollback(ctx)
		if err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
		return escaped() > before
	}
	judge := func(stmt string) *Result { return eng.Judge(liveSession(db), stmt) }
	twinOf := strings.NewReplacer("innocent(", "safe(", "redecl_i(", "safe_i(", "redecl(", "safe(", "==>", "==<",
		"wrap(", "wrap_ok(", "t_def", "t_def_ok", "t_gen", "t_gen_ok", "dcheck", "dcheck_ok", "t_dom", "t_dom_ok",
		"t_idx", "t_idx_ok", "v_door", "v_door_ok", "v_v", "v_v_ok", "v_op", "v_op_ok", "agg(", "agg_ok(", "v_agg", "v_agg_ok",
		"mood3", "mood3_ok", "tomood3(", "tomood3_ok(", "::mood", "::mood_ok", "t_trg", "t_trg_ok", "trg()", "trg_ok()",
		"t_rule", "t_rule_ok", "t_pol", "t_pol_ok")
	fill := strings.NewReplacer("{C}", conninfo, "{Q}", q)
	for _, tc := range []struct {
		name, door string
		// twin, when set, is the harmless twin; otherwise twinOf says
		twin string
		// what the sentence must name (the object, the function reached)
		says []string
		// server: run door and twin on the server to show the door
		// escapes and the twin does not.
		server bool
	}{
		{"renamed", "SELECT innocent({C}, {Q})", "", []string{"public.innocent()", "dblink"}, true},
		{"re-declared", "SELECT redecl({C}, {Q})", "", []string{"public.redecl()"}, true},
		{"sql function", "SELECT wrap({Q})", "", []string{"public.wrap() calls public.redecl()"}, true},
		{"operator", "SELECT {C} ==> {Q}", "", []string{"operator public.==>", "public.redecl()"}, true},
		{"operator in a view", "SELECT * FROM v_op", "", []string{"public.v_op", "public.redecl()"}, true},
		{"aggregate", "SELECT agg(q) FROM (VALUES ({Q})) v(q)", "", []string{"public.agg()", "public.redecl()"}, true},
		{"aggregate in a view", "SELECT * FROM v_agg", "", []string{"public.v_agg"}, true},
		{"cast", "SELECT {Q}::text::mood", "", []string{"cast from text to mood", "public.tomood() calls public.redecl()"}, true},
		{"column default", "INSERT INTO t_def DEFAULT VALUES", "", []string{"default of column x", "public.redecl()"}, true},
		{"generated column", "INSERT INTO t_gen (a) VALUES ({Q})", "", []string{"generated column g", "public.redecl_i()"}, true},
		{"domain check", "INSERT INTO t_dom VALUES ({Q})", "", []string{"check of domain dcheck"}, true},
		{"domain cast", "SELECT {Q}::dcheck", "", []string{"check of domain public.dcheck"}, true},
		{"index expression", "INSERT INTO t_idx VALUES ({Q})", "", []string{"index t_idx_redecl_i_idx"}, true},
		{"index expression, COPY", "COPY t_idx FROM STDIN", "", []string{"COPY INTO public.t_idx"}, true},
		{"index expression, REINDEX", "REINDEX TABLE t_idx", "", []string{"REINDEX public.t_idx"}, true},
		{"index expression, ANALYZE", "ANALYZE t_idx", "", []string{"ANALYZE public.t_idx"}, true},
		{"index expression, UPDATE", "UPDATE t_idx SET a = a || ' '", "", []string{"UPDATE public.t_idx"}, true},
		{"view", "SELECT * FROM v_door", "", []string{"reading public.v_door runs the query of the view", "public.redecl()"}, true},
		{"view over a view", "SELECT r FROM v_v", "", []string{"public.v_door"}, true},
		{"view in a CTE", "WITH x AS (SELECT * FROM v_door) SELECT count(*) FROM x", "", []string{"public.v_door"}, true},
		{"trigger", "INSERT INTO t_trg VALUES ({Q})", "", []string{"trigger tt", "public.trg() calls public.wrap() calls public.redecl()"}, true},
		{"rule", "INSERT INTO t_rule VALUES ({Q})", "", []string{"rule r"}, true},
		{"policy", "UPDATE t_pol SET a = a", "", []string{"policy p"}, false}, // the superuser bypasses row-level security
		// Making doors.
		{"CREATE INDEX", "CREATE INDEX ON scratch ((redecl_i({C}, a)))", "", []string{"public.redecl_i()"}, true},
		{"rename", "ALTER FUNCTION innocent(text, text) RENAME TO innocent2", "", []string{"public.innocent()"}, false},
		{"move", "ALTER FUNCTION redecl(text, text) SET SCHEMA other", "", []string{"public.redecl()"}, false},
		{"re-declare", "CREATE FUNCTION again(text, text) RETURNS text LANGUAGE c AS '$libdir/dblink', 'dblink_exec'", "CREATE FUNCTION again(text, text) RETURNS text LANGUAGE sql AS 'SELECT $2'", []string{"reaches outside the transaction"}, false},
		{"re-point", "CREATE OR REPLACE FUNCTION safe(text, text) RETURNS text LANGUAGE c AS '$libdir/dblink', 'dblink_exec'", "CREATE OR REPLACE FUNCTION safe(text, text) RETURNS text LANGUAGE sql IMMUTABLE AS 'SELECT $2 || $1'", []string{"LANGUAGE c"}, false},
		{"make an operator", "CREATE OPERATOR ===> (PROCEDURE = innocent, LEFTARG = text, RIGHTARG = text)", "CREATE OPERATOR ===> (PROCEDURE = safe, LEFTARG = text, RIGHTARG = text)", []string{"procedure innocent()"}, false},
		{"make an aggregate", "CREATE AGGREGATE agg2(text) (SFUNC = redecl, STYPE = text)", "CREATE AGGREGATE agg2(text) (SFUNC = safe, STYPE = text)", []string{"sfunc redecl()"}, false},
		{"make a cast", "CREATE CAST (text AS mood3) WITH FUNCTION tomood3(text)", "", []string{"tomood3()"}, false},
		{"make a default", "CREATE TABLE t2 (a text DEFAULT innocent({C}, {Q}))", "", []string{"public.innocent()"}, false},
		{"make a generated column", "ALTER TABLE scratch ADD COLUMN g text GENERATED ALWAYS AS (redecl_i({C}, a)) STORED", "", []string{"public.redecl_i()"}, false},
		{"make a domain", "CREATE DOMAIN d2 AS text CHECK (redecl({C}, VALUE) IS NOT NULL)", "", []string{"public.redecl()"}, false},
		{"make a view", "CREATE VIEW v2 AS SELECT wrap({Q})", "", []string{"public.wrap()"}, false},
		{"make a policy", "CREATE POLICY p2 ON scratch USING (redecl({C}, a) IS NOT NULL)", "", []string{"public.redecl()"}, false},
		{"make a trigger", "CREATE TRIGGER tt2 BEFORE INSERT ON scratch FOR EACH ROW EXECUTE FUNCTION trg()", "", []string{"public.trg()"}, false},
	} {
		door := fill.Replace(tc.door)
		twin := twinOf.Replace(door)
		if tc.twin != "" {
			twin = fill.Replace(tc.twin)
		}
		r := judge(door)
		if r.Action != Block {
			t.Errorf("%s: %q: pgmoat says %s (%s), want block", tc.name, tc.door, r.Action, sentenceOf(r))
		} else {
			for _, w := range tc.says {
				if !strings.Contains(r.Decision().Sentence, w) {
					t.Errorf("%s: sentence %q does not name %q", tc.name, r.Decision().Sentence, w)
				}
			}
		}
		if r := judge(twin); r.Action >= Hold {
			t.Errorf("%s: twin %q: pgmoat says %s (%s)", tc.name, strings.ReplaceAll(twin, conninfo, "{C}"), r.Action, sentenceOf(r))
		}
		if !tc.server {
			continue
		}
		if !escapes(door) {
			t.Errorf("%s: %q wrote nothing through another connection: the case shows nothing", tc.name, tc.door)
		}
		if escapes(twin) {
			t.Errorf("%s: twin %q wrote through another connection", tc.name, strings.ReplaceAll(twin, conninfo, "{C}"))
		}
	}
}
