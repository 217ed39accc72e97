package rules

import (
	"context"
	"testing"

	"github.com/pgmoat/pgmoat/internal/pgtest"
)

// alwaysCases are filters that name a column yet keep every row of
// public.users (rowsAll: judged as DELETE or UPDATE of every row), each
// class with real filters next to them (judged as targeted: without the
// guard, allowed). live marks those TestLiveTautologies runs on a real
// table to show the claim holds.
var alwaysCases = []struct {
	class string
	sql   string
	all   bool
	live  bool
}{
	// Conditions over PL/pgSQL's special variables only.
	{"special variables", "CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN DELETE FROM users WHERE TG_OP = 'DELETE'; RETURN NULL; END$$", true, false},
	{"special variables", "CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN DELETE FROM users WHERE tg_table_name = 'orders' AND TG_WHEN = 'AFTER'; RETURN NULL; END$$", true, false},
	{"special variables", "CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN UPDATE users SET note = NEW.note WHERE TG_LEVEL = 'ROW' OR tg_nargs > 0; RETURN NEW; END$$", true, false},
	{"special variables", "CREATE FUNCTION f() RETURNS event_trigger LANGUAGE plpgsql AS $$BEGIN DELETE FROM users WHERE tg_tag = 'DROP TABLE'; END$$", true, false},
	{"special variables", "CREATE FUNCTION f() RETURNS event_trigger LANGUAGE plpgsql AS $$BEGIN DELETE FROM users WHERE TG_EVENT <> 'x'; END$$", true, false},
	{"special variables", "DO $$BEGIN DELETE FROM users WHERE NOT found; END$$", true, false},
	{"special variables", "CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN DELETE FROM users WHERE id = OLD.id; RETURN OLD; END$$", false, false},
	{"special variables", "CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN DELETE FROM users WHERE id = NEW.id AND TG_OP = 'UPDATE'; RETURN NEW; END$$", false, false},

	// An expression compared with itself.
	{"self comparison", "DELETE FROM users WHERE id = id + 0", true, true},
	{"self comparison", "DELETE FROM users WHERE id = 0 + id", true, true},
	{"self comparison", "DELETE FROM users WHERE id * 1 = id", true, true},
	{"self comparison", "DELETE FROM users WHERE id / 1 = users.id", true, true},
	{"self comparison", "DELETE FROM users WHERE id = -(-id)", true, true},
	{"self comparison", "DELETE FROM users WHERE id < id + 1", true, true},
	{"self comparison", "DELETE FROM users WHERE id - 1 < id", true, true},
	{"self comparison", "DELETE FROM users WHERE id - id = 0", true, true},
	{"self comparison", "DELETE FROM users WHERE 0 * id = 0", true, true},
	{"self comparison", "DELETE FROM users WHERE lower(email) = lower(users.email)", true, true},
	{"self comparison", "DELETE FROM users WHERE id = (SELECT id)", true, true},
	{"self comparison", "DELETE FROM users WHERE (id, email) = (id, email)", true, true},
	{"self comparison", "UPDATE users SET note = 'x' WHERE note IS NOT DISTINCT FROM note", true, true},
	{"self comparison", "DELETE FROM users WHERE id = id + 1", false, true},
	{"self comparison", "DELETE FROM users WHERE id * 2 = 10", false, true},
	{"self comparison", "DELETE FROM users WHERE lower(email) = 'u1@example.com'", false, true},
	{"self comparison", "DELETE FROM users WHERE id = (SELECT 3)", false, true},

	// Tests every value passes.
	{"every value", "DELETE FROM users WHERE id IS DISTINCT FROM NULL", true, true},
	{"every value", "DELETE FROM users WHERE NULL IS DISTINCT FROM email", true, true},
	{"every value", "DELETE FROM users WHERE id IN (1, id)", true, true},
	{"every value", "DELETE FROM users WHERE email LIKE '%'", true, true},
	{"every value", "DELETE FROM users WHERE email ILIKE '%%'", true, true},
	{"every value", "DELETE FROM users WHERE email SIMILAR TO '%'", true, true},
	{"every value", "DELETE FROM users WHERE email ~ ''", true, true},
	{"every value", "DELETE FROM users WHERE email ~* '.*'", true, true},
	{"every value", "DELETE FROM users WHERE id::text LIKE '%'", true, true},
	{"every value", "DELETE FROM users WHERE id::text <> ''", true, true},
	{"every value", "DELETE FROM users WHERE CAST(id AS varchar) != ''", true, true},
	{"every value", "DELETE FROM users WHERE '' < created::text", true, true},
	{"every value", "DELETE FROM users WHERE length(id::text) > 0", true, true},
	{"every value", "DELETE FROM users WHERE abs(id) >= 0", true, true},
	{"every value", "DELETE FROM users WHERE char_length(email) >= 0", true, true},
	{"every value", "DELETE FROM users WHERE email LIKE '%@example.com'", false, true},
	{"every value", "DELETE FROM users WHERE email ~ '^u1'", false, true},
	{"every value", "DELETE FROM users WHERE email <> 'u1@example.com'", false, true},
	{"every value", "DELETE FROM users WHERE length(email) > 14", false, true},
	{"every value", "DELETE FROM users WHERE abs(id) > 5", false, true},
	{"every value", "DELETE FROM users WHERE id IN (1, 2)", false, true},

	// Ranges over a whole type.
	{"whole range", "DELETE FROM users WHERE id <= 2147483647", true, true},
	{"whole range", "DELETE FROM users WHERE 2147483647 >= id", true, true},
	{"whole range", "DELETE FROM users WHERE id < 9223372036854775807", true, true},
	{"whole range", "DELETE FROM users WHERE id >= -2147483648", true, true},
	{"whole range", "DELETE FROM users WHERE id > -9223372036854775808", true, true},
	{"whole range", "DELETE FROM users WHERE created < 'infinity'", true, true},
	{"whole range", "DELETE FROM users WHERE created > '-infinity'::timestamptz", true, true},
	{"whole range", "DELETE FROM users WHERE amount <= 'NaN'", true, true},
	{"whole range", "DELETE FROM users WHERE email >= ''", true, true},
	{"whole range", "DELETE FROM users WHERE id BETWEEN -2147483648 AND 2147483647", true, true},
	{"whole range", "DELETE FROM users WHERE id BETWEEN SYMMETRIC 2147483647 AND -2147483648", true, true},
	{"whole range", "DELETE FROM users WHERE id NOT BETWEEN 10 AND 1", true, true},
	{"whole range", "DELETE FROM users WHERE id <= 2147483647 AND id >= -2147483648", true, true},
	{"whole range", "DELETE FROM users WHERE id < 2147483647 AND id > -2147483648", false, false},
	{"whole range", "DELETE FROM users WHERE id <= 10", false, true},
	{"whole range", "DELETE FROM users WHERE created < now() - interval '1 day'", false, true},
	{"whole range", "DELETE FROM users WHERE id BETWEEN 1 AND 10", false, true},
	{"whole range", "DELETE FROM users WHERE id NOT BETWEEN 1 AND 10", false, true},
	{"whole range", "DELETE FROM users WHERE email > 'u2'", false, true},

	// System columns every row has.
	{"system columns", "DELETE FROM users WHERE tableoid > 0", true, true},
	{"system columns", "DELETE FROM users WHERE tableoid <> 0", true, true},
	{"system columns", "DELETE FROM users WHERE tableoid = 'users'::regclass", true, true},
	{"system columns", "DELETE FROM users WHERE tableoid = 'public.users'::regclass::oid", true, true},
	{"system columns", "DELETE FROM users WHERE tableoid::regclass = 'users'::regclass", true, true},
	{"system columns", "DELETE FROM users WHERE xmin <> 0", true, true},
	{"system columns", "DELETE FROM users WHERE xmin::text <> '0'", true, true},
	{"system columns", "UPDATE users SET note = 'x' WHERE xmax = 0", false, true},
	{"system columns", "DELETE FROM users WHERE ctid > '(0,0)'", true, true},
	{"system columns", "DELETE FROM users WHERE ctid <> '(0, 0)'", true, true},
	{"system columns", "DELETE FROM users WHERE ctid IS NOT NULL", true, true},
	{"system columns", "DELETE FROM users WHERE tableoid = 'orgs'::regclass", false, true},
	{"system columns", "DELETE FROM users WHERE ctid = '(0,1)'", false, true},
	{"system columns", "DELETE FROM users WHERE xmin = 1234", false, true},

	// Conditions that complete each other.
	{"complements", "DELETE FROM users WHERE id < 5 OR id >= 5", true, true},
	{"complements", "DELETE FROM users WHERE id <= 5 OR id > 5", true, true},
	{"complements", "DELETE FROM users WHERE id < 5 OR id = 5 OR id > 5", true, true},
	{"complements", "DELETE FROM users WHERE id > 10 OR id < 20", true, true},
	{"complements", "DELETE FROM users WHERE id <> 5 OR id = 5", true, true},
	{"complements", "DELETE FROM users WHERE note = 'a' OR note <> 'a' OR note IS NULL", true, true},
	{"complements", "DELETE FROM users WHERE (id = 5) OR NOT (id = 5)", true, true},
	{"complements", "DELETE FROM users WHERE id < 5 OR id > 5", false, true},
	{"complements", "DELETE FROM users WHERE note = 'a' OR note = 'b'", false, true},
	{"complements", "DELETE FROM users WHERE id < 5 OR id > 10", false, true},

	// CASE, COALESCE and boolean tests over branches that keep every row.
	{"branches", "DELETE FROM users WHERE CASE WHEN id = 5 THEN true ELSE true END", true, true},
	{"branches", "DELETE FROM users WHERE CASE id WHEN 1 THEN id = id ELSE id IS NOT NULL END", true, true},
	{"branches", "DELETE FROM users WHERE COALESCE(id = id, true)", true, true},
	{"branches", "DELETE FROM users WHERE (id = id) IS TRUE", true, true},
	{"branches", "DELETE FROM users WHERE (id <> id) IS NOT TRUE", true, true},
	{"branches", "DELETE FROM users WHERE (id = 5) IS NOT UNKNOWN", true, true},
	{"branches", "DELETE FROM users WHERE NOT (id <> id)", true, true},
	{"branches", "DELETE FROM users WHERE CASE WHEN id = 5 THEN true ELSE false END", false, true},
	{"branches", "DELETE FROM users WHERE CASE WHEN id = 5 THEN true END", false, true},
	{"branches", "DELETE FROM users WHERE COALESCE(id = 5, false)", false, true},
	{"branches", "DELETE FROM users WHERE (id = 5) IS TRUE", false, true},

	// NOT IN a few constants.
	{"not in constants", "DELETE FROM users WHERE id NOT IN (SELECT -1)", true, true},
	{"not in constants", "DELETE FROM users WHERE id NOT IN (SELECT 0 UNION SELECT -1)", true, true},
	{"not in constants", "DELETE FROM users WHERE id NOT IN (VALUES (-1), (-2))", true, true},
	{"not in constants", "DELETE FROM users WHERE id <> ALL (SELECT -1)", true, true},
	{"not in constants", "DELETE FROM users WHERE id NOT IN (SELECT id FROM orgs WHERE name = 'org1')", false, true},
	{"not in constants", "DELETE FROM users WHERE id IN (SELECT -1)", false, true},
	{"not in constants", "DELETE FROM users WHERE id NOT IN (SELECT NULL::int)", false, true},

	// Subqueries and joins that give every row back to itself.
	{"self reference", "DELETE FROM users WHERE id = ANY(ARRAY(SELECT id FROM users))", true, true},
	{"self reference", "DELETE FROM users WHERE id IN (SELECT id FROM users)", true, true},
	{"self reference", "DELETE FROM users WHERE id = ANY (SELECT s.id FROM users s)", true, true},
	{"self reference", "DELETE FROM users WHERE (id, email) IN (SELECT id, email FROM users)", true, true},
	{"self reference", "DELETE FROM users WHERE id IN (SELECT id FROM users UNION ALL SELECT org_id FROM orgs)", true, true},
	{"self reference", "DELETE FROM users WHERE id IN (SELECT id FROM users INTERSECT SELECT id FROM users)", true, true},
	{"self reference", "DELETE FROM users WHERE id IN (SELECT id FROM (SELECT * FROM users) s)", true, true},
	{"self reference", "DELETE FROM users WHERE id IN (SELECT id FROM users GROUP BY id)", true, true},
	{"self reference", "DELETE FROM users WHERE id IN (SELECT DISTINCT id + 0 FROM users WHERE true ORDER BY 1)", true, true},
	{"self reference", "WITH k AS (SELECT id FROM users) DELETE FROM users WHERE id IN (SELECT id FROM k)", true, true},
	{"self reference", "WITH a AS (SELECT * FROM users), b AS (SELECT id FROM a) DELETE FROM users WHERE id IN (SELECT id FROM b)", true, true},
	{"self reference", "DELETE FROM users WHERE id IN (WITH k AS (SELECT id FROM users) SELECT id FROM k)", true, true},
	{"self reference", "DELETE FROM users u WHERE EXISTS (SELECT 1 FROM users s WHERE s.id = u.id)", true, true},
	{"self reference", "DELETE FROM users WHERE EXISTS (SELECT 1 FROM users s WHERE s.id = users.id LIMIT 1)", true, true},
	{"self reference", "DELETE FROM users u WHERE EXISTS (SELECT FROM users s WHERE s.email = u.email)", true, true},
	{"self reference", "DELETE FROM users WHERE id IN (SELECT id FROM users s WHERE s.org_id = users.org_id)", true, true},
	{"self reference", "UPDATE users u SET note = '' WHERE u.id IN (SELECT id FROM users)", true, true},
	{"self reference", "DELETE FROM users t USING users s WHERE s.id = t.id", true, true},
	{"self reference", "DELETE FROM users t USING users s WHERE t.id = s.id AND t.email = s.email", true, true},
	{"self reference", "DELETE FROM users t USING (SELECT id FROM users) s WHERE s.id = t.id", true, true},
	{"self reference", "UPDATE users t SET note = 'x' FROM users s WHERE s.id = t.id", true, true},
	{"self reference", "MERGE INTO users t USING users s ON s.id = t.id WHEN MATCHED THEN DELETE", true, true},
	{"self reference", "MERGE INTO users t USING (SELECT * FROM users) s ON t.id = s.id WHEN MATCHED THEN UPDATE SET note = 'x'", true, true},
	{"self reference", "DELETE FROM users WHERE id IN (SELECT id FROM users WHERE created < now() - interval '1 year')", false, true},
	{"self reference", "DELETE FROM users WHERE id IN (SELECT id FROM users LIMIT 10)", false, true},
	{"self reference", "DELETE FROM users WHERE id IN (SELECT id FROM users EXCEPT SELECT id FROM users WHERE id > 2)", false, true},
	{"self reference", "DELETE FROM users WHERE id IN (SELECT org_id FROM users)", false, true},
	{"self reference", "DELETE FROM users WHERE id IN (SELECT id FROM orgs WHERE name = 'org1')", false, true},
	{"self reference", "DELETE FROM users u WHERE EXISTS (SELECT 1 FROM users s WHERE s.org_id = u.org_id AND s.id < u.id)", false, true},
	{"self reference", "DELETE FROM users t USING users s WHERE s.id = t.id + 1", false, true},
	{"self reference", "DELETE FROM users t USING orgs o WHERE o.id = t.org_id AND o.name = 'org1'", false, true},
	{"self reference", "MERGE INTO users t USING users s ON s.id = t.id + 1 WHEN MATCHED THEN DELETE", false, true},

	// INSERT ... SELECT every row of the table itself ... ON CONFLICT DO UPDATE.
	{"self upsert", "INSERT INTO users SELECT * FROM users ON CONFLICT (id) DO UPDATE SET note = excluded.note || 'x'", true, true},
	{"self upsert", "INSERT INTO users TABLE users ON CONFLICT (id) DO UPDATE SET note = 'x'", true, true},
	{"self upsert", "INSERT INTO users (id, org_id, email) SELECT id, org_id, 'x@y.z' FROM users ON CONFLICT (id) DO UPDATE SET note = 'x'", true, true},
	{"self upsert", "WITH c AS (SELECT * FROM users) INSERT INTO users SELECT * FROM c ON CONFLICT (id) DO UPDATE SET note = 'x'", true, true},
	{"self upsert", "INSERT INTO users SELECT * FROM users ON CONFLICT (id) DO NOTHING", false, true},
	{"self upsert", "INSERT INTO users SELECT * FROM users WHERE id = 5 ON CONFLICT (id) DO UPDATE SET note = 'x'", false, true},
	{"self upsert", "INSERT INTO users (id, org_id, email) SELECT id + 100, org_id, email FROM users ON CONFLICT (id) DO UPDATE SET note = 'x'", false, true},
	{"self upsert", "INSERT INTO users SELECT * FROM users ON CONFLICT (id) DO UPDATE SET note = 'x' WHERE users.id = 3", false, true},
}

// TestAlwaysTrueFilters: without the guard (pgmoat check), a filter that
// keeps every row blocks like no filter at all, and its real-filter twin
// is allowed.
func TestAlwaysTrueFilters(t *testing.T) {
	eng := testEngine(t, defaultProtect)
	for _, c := range alwaysCases {
		want := Allow
		if c.all {
			want = Block
		}
		r := eng.Judge(knownSession("app"), c.sql)
		if r.Action != want {
			t.Errorf("%s: %q: got %s, want %s", c.class, c.sql, r.Action, want)
			for _, v := range r.Statements {
				t.Logf("   %s %q %+v", v.Action, v.Sentence, v.Effects)
			}
		}
	}
}

// TestAlwaysTrueFiltersVerify: with the guard, a filter that keeps every
// row is still certain (blocked before it runs), and a real filter is run
// under guard.
func TestAlwaysTrueFiltersVerify(t *testing.T) {
	p, err := Compile(defaultProtect)
	if err != nil {
		t.Fatal(err)
	}
	eng := NewEngine(p, EngineOptions{CacheBytes: -1, Verify: true})
	for _, c := range alwaysCases {
		if c.class == "special variables" {
			continue // bodies loop: a real filter there is judged by its body's analysis
		}
		r := eng.Judge(knownSession("app"), c.sql)
		if c.all && r.Action != Block || !c.all && r.Action == Block {
			t.Errorf("%s: %q: got %s (every row: %v)", c.class, c.sql, r.Action, c.all)
		}
	}
}

// TestEveryRowButAFew: with the catalog's unique keys, excluding a few key
// values keeps every row but those.
func TestEveryRowButAFew(t *testing.T) {
	eng := testEngine(t, defaultProtect)
	cat, err := CatalogFromSQL(relDDL)
	if err != nil {
		t.Fatal(err)
	}
	cat.AddUniqueKey("public", "users", []string{"id"})
	cat.AddUniqueKey("public", "scratch", []string{"id"})
	eng.SetCatalog("app", cat)
	runCases(t, eng, func() *Session { return knownSession("app") }, []opCase{
		{"DELETE FROM users WHERE id <> 1", Block, OpDeleteAll},
		{"DELETE FROM users WHERE id != $1", Block, OpDeleteAll},
		{"DELETE FROM users WHERE 1 <> id", Block, OpDeleteAll},
		{"DELETE FROM users WHERE id NOT IN (1, 2, 3)", Block, OpDeleteAll},
		{"DELETE FROM users WHERE NOT (id = 7)", Block, OpDeleteAll},
		{"DELETE FROM users WHERE NOT (id IN (1, 2))", Block, OpDeleteAll},
		{"DELETE FROM users WHERE id IS DISTINCT FROM 3", Block, OpDeleteAll},
		{"UPDATE users SET note = 'x' WHERE id <> 42", Block, OpUpdateAll},
		// Real filters: a column that is not a key, a key fixed.
		{"DELETE FROM users WHERE note <> 'x'", Allow, 0},
		{"DELETE FROM users WHERE NOT (note = 'x')", Allow, 0},
		{"DELETE FROM users WHERE id = 1", Allow, 0},
		{"DELETE FROM scratch WHERE id <> 1", Allow, 0}, // not protected
	})
}

// TestAlwaysTrueFastPath: the fast path shares decisions across literals
// only when no literal decided anything; these forms depend on theirs.
func TestAlwaysTrueFastPath(t *testing.T) {
	p, err := Compile(defaultProtect)
	if err != nil {
		t.Fatal(err)
	}
	eng := NewEngine(p, EngineOptions{})
	for _, pair := range [][2]string{
		{"DELETE FROM users WHERE id <= 40", "DELETE FROM users WHERE id <= 2147483647"},
		{"DELETE FROM users WHERE id = id + 1", "DELETE FROM users WHERE id = id + 0"},
		{"DELETE FROM users WHERE xmin <> 5", "DELETE FROM users WHERE xmin <> 0"},
		{"DELETE FROM users WHERE email LIKE 'a%'", "DELETE FROM users WHERE email LIKE '%'"},
		{"DELETE FROM users WHERE created < '2020-01-01'", "DELETE FROM users WHERE created < 'infinity'"},
		{"DELETE FROM users WHERE id < 5 OR id > 10", "DELETE FROM users WHERE id < 5 OR id > 4"},
		{"DELETE FROM users WHERE id::text <> 'x'", "DELETE FROM users WHERE id::text <> ''"},
	} {
		s := knownSession("app")
		if r := eng.Judge(s, pair[0]); r.Action != Allow {
			t.Errorf("%q: got %s", pair[0], r.Action)
		}
		if r := eng.Judge(s, pair[1]); r.Action != Block {
			t.Errorf("%q after %q: got %s (path %s)", pair[1], pair[0], r.Action, r.Path)
		}
	}
}

// TestLiveTautologies runs each filter on a real table in a transaction
// that rolls back: those pgmoat says keep every row delete or update every
// row, and their twins do not.
func TestLiveTautologies(t *testing.T) {
	c := pgtest.Get(t)
	db := c.NewDatabase(t)
	c.Exec(t, db, `
CREATE TABLE orgs (id int PRIMARY KEY, name text);
CREATE TABLE users (id int PRIMARY KEY, org_id int, email text, note text, created timestamptz, amount numeric);
INSERT INTO orgs SELECT g, 'org' || g FROM generate_series(1, 3) g;
INSERT INTO users SELECT g, 1 + g % 3, 'u' || g || CASE WHEN g % 4 = 0 THEN '@other.org' ELSE '@example.com' END,
       CASE WHEN g % 2 = 0 THEN 'n' END, now() - g * interval '1 hour', g * 1.5
  FROM generate_series(1, 20) g;`)
	conn := c.Connect(t, db)
	ctx := context.Background()
	for _, tc := range alwaysCases {
		if !tc.live {
			continue
		}
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, tc.sql); err != nil {
			t.Errorf("%q: %v", tc.sql, err)
		} else {
			// The rows of the 20 that the statement deleted or rewrote
			// (rows it inserted do not count).
			var touched int
			if err := tx.QueryRow(ctx, `SELECT 20 - count(*) FILTER (WHERE xmin <> pg_current_xact_id()::xid) FROM users WHERE id BETWEEN 1 AND 20`).Scan(&touched); err != nil {
				t.Fatal(err)
			}
			if (touched == 20) != tc.all {
				t.Errorf("%s: %q changed %d of 20 rows; pgmoat says every row: %v", tc.class, tc.sql, touched, tc.all)
			}
		}
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
	}
}
