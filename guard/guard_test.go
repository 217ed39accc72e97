package guard

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgmoat/pgmoat/internal/pgtest"
	"github.com/pgmoat/pgmoat/rules"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

const schema = `
CREATE TYPE status AS ENUM ('active', 'disabled');
CREATE TYPE addr AS (street text, city text);
CREATE DOMAIN email AS text CHECK (VALUE LIKE '%@%');
CREATE TABLE users (id serial PRIMARY KEY, email email, status status DEFAULT 'active', home addr, note text);
INSERT INTO users (email, note) SELECT 'u' || g || '@x', 'n' FROM generate_series(1, 50) g;
CREATE SCHEMA billing;
CREATE TABLE billing.events (id int, at date) PARTITION BY RANGE (at);
CREATE TABLE billing.events_2024 PARTITION OF billing.events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE billing.events_2025 PARTITION OF billing.events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
INSERT INTO billing.events SELECT g, '2024-06-01'::date + g FROM generate_series(1, 40) g;
CREATE TABLE scratch (id int);
CREATE ROLE guard_app;
GRANT SELECT, INSERT, UPDATE ON users TO guard_app;
CREATE FUNCTION noop() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$;
`

var patterns = []string{"public.users", "billing.*"}

// snapshot runs the query and parses it.
func snapshot(t *testing.T, ctx context.Context, tx pgx.Tx) *Snapshot {
	t.Helper()
	rows, err := tx.Query(ctx, Query(patterns), pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		t.Fatal(err)
	}
	var raw [][][]byte
	for rows.Next() {
		var row [][]byte
		for _, v := range rows.RawValues() {
			row = append(row, append([]byte(nil), v...))
		}
		raw = append(raw, row)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	s, err := Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestCompareLive runs statements between two snapshots in a transaction
// on a real server, then rolls back, and checks what Compare measured.
func TestCompareLive(t *testing.T) {
	c := pgtest.Get(t)
	db := c.NewDatabase(t)
	c.Exec(t, db, schema)
	conn := c.Connect(t, db)
	ctx := context.Background()
	lim := func(int) rules.RowLimits { return rules.DefaultRowLimits }
	for _, tc := range []struct {
		name string
		sql  string
		want []rules.Operation // in any order; nil: no violation
		what string            // a fragment of the first violation's sentence
	}{
		{"targeted delete", "DELETE FROM users WHERE id = 7", nil, ""},
		{"a few rows", "UPDATE users SET note = 'x' WHERE id <= 10", nil, ""},
		{"insert", "INSERT INTO users (email) VALUES ('n@x')", nil, ""},
		{"unprotected", "DELETE FROM scratch; DROP TABLE scratch", nil, ""},
		{"additive", "ALTER TABLE users ADD COLUMN extra text; CREATE INDEX ON users (note); GRANT SELECT ON users TO PUBLIC; COMMENT ON TABLE users IS 'x'", nil, ""},
		{"delete every row", "DELETE FROM users WHERE id > 0", []rules.Operation{rules.OpDeleteAll}, "would delete 50 of 50 rows of public.users"},
		{"update most rows", "UPDATE users SET note = 'gone' WHERE id % 10 <> 0", []rules.Operation{rules.OpUpdateAll}, "update 45 of 50 rows"},
		{"loop", "DO $$DECLARE r record; BEGIN FOR r IN SELECT id FROM users LOOP DELETE FROM users WHERE id = r.id; END LOOP; END$$", []rules.Operation{rules.OpDeleteAll}, "delete 50 of 50"},
		{"partition", "DELETE FROM billing.events_2024", []rules.Operation{rules.OpDeleteAll}, "delete 40 of 40 rows of billing.events"},
		{"truncate", "TRUNCATE users CASCADE", []rules.Operation{rules.OpTruncate}, "truncate"},
		{"drop", "DROP TABLE users", []rules.Operation{rules.OpDrop}, "drop"},
		{"drop partition", "DROP TABLE billing.events_2025", []rules.Operation{rules.OpDrop}, ""},
		{"detach", "ALTER TABLE billing.events DETACH PARTITION billing.events_2024", []rules.Operation{rules.OpAlterDestructive}, "detach"},
		{"additive default", "ALTER TABLE users ADD COLUMN flag bool NOT NULL DEFAULT false", nil, ""},
		{"not null without default", "ALTER TABLE users ADD COLUMN must int NOT NULL DEFAULT 1; ALTER TABLE users ALTER COLUMN must DROP DEFAULT", []rules.Operation{rules.OpContract}, ""},
		{"rename", "ALTER TABLE users RENAME TO users_old", []rules.Operation{rules.OpDrop}, ""},
		{"drop column", "ALTER TABLE users DROP COLUMN note", []rules.Operation{rules.OpAlterDestructive}, "column"},
		{"domain cascade", "DROP DOMAIN email CASCADE", []rules.Operation{rules.OpAlterDestructive}, "column"},
		{"enum rename", "ALTER TYPE status RENAME VALUE 'active' TO 'gone'", []rules.Operation{rules.OpAlterDestructive}, "type"},
		{"composite attribute", "ALTER TYPE addr DROP ATTRIBUTE city CASCADE", []rules.Operation{rules.OpAlterDestructive}, "type"},
		{"revoke", "REVOKE UPDATE ON users FROM guard_app", []rules.Operation{rules.OpContract}, "revoke"},
		{"trigger", "CREATE TRIGGER t BEFORE INSERT ON users FOR EACH ROW EXECUTE FUNCTION noop()", []rules.Operation{rules.OpContract}, "triggers"},
		{"rls", "ALTER TABLE users ENABLE ROW LEVEL SECURITY", []rules.Operation{rules.OpContract}, "row security"},
		{"not null", "ALTER TABLE users ALTER COLUMN note SET NOT NULL", []rules.Operation{rules.OpContract}, "NOT NULL"},
		{"check not valid", "ALTER TABLE users ADD CONSTRAINT c CHECK (note <> 'x') NOT VALID", []rules.Operation{rules.OpContract}, "constraints"},
		{"unique index", "CREATE UNIQUE INDEX ON users (note, id)", []rules.Operation{rules.OpContract}, "unique indexes"},
		{"default", "ALTER TABLE users ALTER COLUMN status DROP DEFAULT", []rules.Operation{rules.OpContract}, ""},
		{"setval back", "SELECT setval('users_id_seq', 1)", []rules.Operation{rules.OpContract}, "move back"},
		{"sequence bound", "ALTER SEQUENCE users_id_seq MAXVALUE 60", []rules.Operation{rules.OpContract}, "sequences"},
		{"replica identity", "ALTER TABLE users REPLICA IDENTITY FULL", []rules.Operation{rules.OpContract}, ""},
		{"publication", "CREATE PUBLICATION p FOR TABLE users", []rules.Operation{rules.OpContract}, "publications"},
		{"owner", "ALTER TABLE users OWNER TO guard_app", []rules.Operation{rules.OpContract}, "owner"},
		{"replica role", "SET session_replication_role = replica", []rules.Operation{rules.OpClusterAdmin}, ""},
		// A statement that makes the session hostile to the snapshot
		// query itself must not change what it reads.
		{"hostile session", `CREATE FUNCTION public.fake_eq(oid, oid) RETURNS bool LANGUAGE sql AS 'SELECT false';
CREATE OPERATOR public.= (LEFTARG = oid, RIGHTARG = oid, FUNCTION = public.fake_eq);
CREATE TABLE public.pg_class (x int);
SET search_path = public, pg_catalog;
DELETE FROM public.users`, []rules.Operation{rules.OpDeleteAll}, "50 of 50"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tx, err := conn.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(ctx)
			before := snapshot(t, ctx, tx)
			if _, err := tx.Exec(ctx, tc.sql, pgx.QueryExecModeSimpleProtocol); err != nil {
				t.Fatal(err)
			}
			after := snapshot(t, ctx, tx)
			got := Compare(before, after, lim)
			var ops []rules.Operation
			for _, v := range got {
				ops = append(ops, v.Op)
			}
			if len(tc.want) == 0 && len(got) > 0 || len(tc.want) > 0 && !containsAll(ops, tc.want) {
				t.Fatalf("got %+v, want %v", got, tc.want)
			}
			if tc.what != "" && !strings.Contains(got[0].What, tc.what) {
				t.Errorf("sentence %q lacks %q", got[0].What, tc.what)
			}
		})
	}
}

func containsAll(have, want []rules.Operation) bool {
	for _, w := range want {
		found := false
		for _, h := range have {
			found = found || h == w
		}
		if !found {
			return false
		}
	}
	return true
}
