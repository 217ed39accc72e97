package e2e

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	pg_query "github.com/pganalyze/pg_query_go/v6"

	"github.com/pgmoat/pgmoat/internal/clients"
	"github.com/pgmoat/pgmoat/internal/moattest"
	"github.com/pgmoat/pgmoat/internal/pgtest"
)

// The evasion corpus is a copy of the team's shared corpus
// (../../shared/corpus from this package, present in the team's
// checkout but not in a user's clone); TestCorpusCopyInSync keeps the two
// identical.
const (
	corpusDir       = "../testdata/corpus"
	sharedCorpusDir = "../../shared/corpus"
)

var corpusFiles = []string{"evasion.tsv", "schema.sql", "README.md"}

// corpusPolicy is the policy the corpus's expectations are written for.
const corpusPolicy = "policy:\n  protect: [public.users, billing.*]\n"

// protectedTables are the tables the corpus's policy protects.
var protectedTables = []string{"public.users", "billing.invoices", "billing.payments"}

// TestCorpusCopyInSync fails when testdata/corpus differs from the shared
// corpus it was copied from.
func TestCorpusCopyInSync(t *testing.T) {
	if _, err := os.Stat(sharedCorpusDir); err != nil {
		t.Skipf("no shared corpus at %s (only the team's checkout has it): %v", sharedCorpusDir, err)
	}
	for _, f := range corpusFiles {
		shared, err := os.ReadFile(filepath.Join(sharedCorpusDir, f))
		if err != nil {
			t.Fatal(err)
		}
		ours, err := os.ReadFile(filepath.Join(corpusDir, f))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(shared, ours) {
			t.Errorf("%s differs from %s: copy it again (cp %s/%s %s/)", filepath.Join(corpusDir, f),
				filepath.Join(sharedCorpusDir, f), sharedCorpusDir, f, corpusDir)
		}
	}
}

// corpusExceptions are block rows that pgmoat, by design, lets the server
// refuse in this test's sessions, and why. Each still must fail and
// change nothing, and is also run where the corpus's expectation applies.
var corpusExceptions = map[string]string{
	// The superuser's search_path is "$user", public: invoices can only
	// be public.invoices, which does not exist, so pgmoat forwards it and
	// the server raises 42P01. In a session whose search_path reaches
	// billing (the search-path variant below) pgmoat blocks it.
	"T134": "unqualified name that cannot resolve to a protected table in this session",
}

// corpusRow is one line of evasion.tsv, its SQL decoded.
type corpusRow struct {
	id, expected, category, sql string
}

func loadCorpus(t *testing.T) []corpusRow {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(corpusDir, "evasion.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if lines[0] != "id\texpected\tcategory\tsql" {
		t.Fatalf("evasion.tsv: unexpected header %q", lines[0])
	}
	var rows []corpusRow
	for i, line := range lines[1:] {
		f := strings.SplitN(line, "\t", 4)
		if len(f) != 4 || (f[1] != "block" && f[1] != "allow") {
			t.Fatalf("evasion.tsv line %d: malformed: %q", i+2, line)
		}
		rows = append(rows, corpusRow{id: f[0], expected: f[1], category: f[2], sql: decodeCorpusSQL(f[3])})
	}
	return rows
}

// decodeCorpusSQL decodes the corpus's escapes: \n, \t, \r and \f; every
// other backslash is literal.
func decodeCorpusSQL(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			if r, ok := map[byte]byte{'n': '\n', 't': '\t', 'r': '\r', 'f': '\f'}[s[i+1]]; ok {
				b.WriteByte(r)
				i++
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func TestDecodeCorpusSQL(t *testing.T) {
	for in, want := range map[string]string{
		`TRUNCATE\r\nusers`:        "TRUNCATE\r\nusers",
		`SELECT 'x'\n'\'; --'`:     "SELECT 'x'\n'\\'; --'",
		`DROP TABLE U&"\0075sers"`: `DROP TABLE U&"\0075sers"`,
		`a\tb\fc\\n`:               "a\tb\fc\\\n",
	} {
		if got := decodeCorpusSQL(in); got != want {
			t.Errorf("decodeCorpusSQL(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestEvasionCorpus runs every row of the evasion corpus through the live
// proxy against a database built from the corpus's schema.sql: psql sends
// each row as one Query (-c) and, separately, as a script (psql splits it
// into statements itself); extended-protocol rows go through Parse with
// an untyped parameter. Every block row must fail with pgmoat's 42501 and
// leave the protected tables as they were (rows, contents, columns,
// names); every allow row must succeed.
func TestEvasionCorpus(t *testing.T) {
	c := pgtest.Get(t)
	rows := loadCorpus(t)
	schema, err := os.ReadFile(filepath.Join(corpusDir, "schema.sql"))
	if err != nil {
		t.Fatal(err)
	}
	db := c.NewDatabase(t)
	cdb := newCorpusDB(t, c, db, string(schema))
	cdb.rebuild(t)

	// T163 writes a server-side file; have its directory exist, so that
	// only pgmoat stands between the row and the file.
	const serverFileDir = "/tmp/evasion_pg"
	serverFile := filepath.Join(serverFileDir, "copy_to_file.out")
	if _, err := os.Stat(serverFileDir); os.IsNotExist(err) {
		if err := os.Mkdir(serverFileDir, 0o777); err == nil {
			os.Chmod(serverFileDir, 0o777)
			t.Cleanup(func() { os.RemoveAll(serverFileDir) })
		}
	}
	os.Remove(serverFile)

	m := moattest.Start(t, c, moattest.Options{Config: corpusPolicy})
	url := m.SuperConnString(db)

	for _, mode := range []string{"message", "script"} {
		for _, row := range rows {
			if row.category == "extended-protocol" {
				continue
			}
			t.Run(mode+"/"+row.id, func(t *testing.T) {
				var stderr string
				var code int
				if mode == "message" {
					_, stderr, code = clients.Psql(t, url, "", "-c", `\set VERBOSITY verbose`, "-c", row.sql)
				} else {
					_, stderr, code = clients.Psql(t, url, "\\set VERBOSITY verbose\n"+row.sql+"\n")
				}
				errs := psqlErrors(stderr)
				switch {
				case row.expected == "allow" && (len(errs) > 0 || code != 0):
					if mode == "script" && cdb.failsDirectly(t, row) {
						// psql's own lexer splits this row into other
						// statements than the server would (T211: psql
						// ends E'x' '\' where the server continues the
						// escape string), and the pieces fail on
						// PostgreSQL directly too: not pgmoat's doing.
						t.Logf("allow row %s also fails directly when psql splits it; through pgmoat: %s", row.id, stderr)
						break
					}
					t.Errorf("allow row %s (%s) failed (psql exit %d): %s\nSQL: %s", row.id, row.category, code, stderr, row.sql)
				case row.expected == "block" && corpusExceptions[row.id] != "":
					if len(errs) == 0 {
						t.Errorf("block row %s (%s) did not fail: %s\nSQL: %s", row.id, corpusExceptions[row.id], stderr, row.sql)
					} else {
						t.Logf("block row %s: %s: %s", row.id, corpusExceptions[row.id], errs[0].code)
					}
				case row.expected == "block":
					cdb.checkBlocked(t, row, mode, stderr, code)
				}
				if row.id == "T163" {
					if _, err := os.Stat(serverFile); err == nil {
						t.Errorf("%s: the server wrote %s", row.id, serverFile)
						os.Remove(serverFile)
					}
				}
				cdb.checkAndRestore(t, row, mode)
			})
		}
	}

	// The search-path rows again, in sessions whose search_path starts
	// with billing (set at startup), where every one of them would reach
	// a protected table.
	billingURL := m.SuperConnString(db, "options=-c%20search_path%3Dbilling%2Cpublic")
	for _, row := range rows {
		if row.category != "search-path" || row.expected != "block" {
			continue
		}
		t.Run("billing-path/"+row.id, func(t *testing.T) {
			_, stderr, code := clients.Psql(t, billingURL, "", "-c", `\set VERBOSITY verbose`, "-c", row.sql)
			cdb.checkBlocked(t, row, "message", stderr, code)
			cdb.checkAndRestore(t, row, "message")
		})
	}

	for _, row := range rows {
		if row.category != "extended-protocol" {
			continue
		}
		t.Run("extended/"+row.id, func(t *testing.T) {
			pc := connect(t, url)
			// Parse with an untyped parameter, then Bind "1" (true for a
			// boolean, 1 for an integer).
			err := pc.PgConn().ExecParams(context.Background(), row.sql, [][]byte{[]byte("1")}, nil, nil, nil).Read().Err
			if row.expected == "allow" {
				if err != nil {
					t.Errorf("allow row %s failed: %v\nSQL: %s", row.id, err, row.sql)
				}
			} else if code := stateOf(err); code != "42501" {
				t.Errorf("block row %s: err = %v, want pgmoat's 42501\nSQL: %s", row.id, err, row.sql)
			}
			cdb.checkAndRestore(t, row, "extended")
		})
	}
}

// psqlError is one ERROR psql printed with VERBOSITY verbose.
type psqlError struct {
	code, message string
}

var psqlErrorLine = regexp.MustCompile(`(?m)^(?:psql:[^\n]*?: )?ERROR:  ([0-9A-Z]{5}): (.*)$`)

func psqlErrors(stderr string) []psqlError {
	var out []psqlError
	for _, m := range psqlErrorLine.FindAllStringSubmatch(stderr, -1) {
		out = append(out, psqlError{code: m[1], message: m[2]})
	}
	if len(out) == 0 && (strings.Contains(stderr, "ERROR:") || strings.Contains(stderr, "FATAL:")) {
		out = append(out, psqlError{code: "?????", message: stderr})
	}
	return out
}

// corpusDB is the database the corpus runs against, with what it looked
// like when built.
type corpusDB struct {
	c               *pgtest.Cluster
	name            string
	ddl, data       string
	conn            *pgx.Conn
	base            dbSnapshot
	rebuilt, resets int
}

func newCorpusDB(t *testing.T, c *pgtest.Cluster, db, schema string) *corpusDB {
	t.Helper()
	tree, err := pg_query.Parse(schema)
	if err != nil {
		t.Fatalf("schema.sql: %v", err)
	}
	// Split schema.sql into its DDL and its data (the INSERTs), so that
	// data changed by an allow row can be put back without rebuilding.
	var ddl, data strings.Builder
	for _, s := range tree.Stmts {
		text := schema[s.StmtLocation : s.StmtLocation+s.StmtLen]
		if s.StmtLen == 0 {
			text = schema[s.StmtLocation:]
		}
		if s.Stmt.GetInsertStmt() != nil {
			data.WriteString(text + ";\n")
		} else {
			ddl.WriteString(text + ";\n")
		}
	}
	d := &corpusDB{c: c, name: db, ddl: ddl.String(), data: data.String()}
	d.conn = direct(t, c, db)
	t.Cleanup(func() { t.Logf("corpus database: %d full rebuilds, %d data resets", d.rebuilt, d.resets) })
	return d
}

// rebuild drops everything in the database and builds it from schema.sql.
func (d *corpusDB) rebuild(t *testing.T) {
	t.Helper()
	d.c.Exec(t, d.name, `DO $$DECLARE r record; BEGIN
  FOR r IN SELECT evtname FROM pg_event_trigger LOOP EXECUTE format('DROP EVENT TRIGGER %I', r.evtname); END LOOP;
  FOR r IN SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\_%' AND nspname <> 'information_schema' LOOP
    EXECUTE format('DROP SCHEMA %I CASCADE', r.nspname);
  END LOOP;
END$$;
SET client_min_messages = warning;
CREATE SCHEMA public AUTHORIZATION pg_database_owner;
GRANT ALL ON SCHEMA public TO PUBLIC;
`+d.ddl+d.data)
	d.rebuilt++
	// The tables are new: find the protected ones by name again.
	d.base = dbSnapshot{}
	d.base = d.snapshot(t)
}

// resetData puts the rows of schema.sql back.
func (d *corpusDB) resetData(t *testing.T) {
	t.Helper()
	var tables []string
	for name := range d.base.data {
		tables = append(tables, name)
	}
	slices.Sort(tables)
	d.c.Exec(t, d.name, "TRUNCATE "+strings.Join(tables, ", ")+" RESTART IDENTITY CASCADE;\n"+d.data)
	d.resets++
}

// dbSnapshot is what the corpus rows must not change: for each protected
// table, its identity, columns, row count and contents; for the whole
// database, its objects and every table's contents.
type dbSnapshot struct {
	protected map[string]string
	objects   string
	data      map[string]string
}

func (d *corpusDB) snapshot(t *testing.T) dbSnapshot {
	t.Helper()
	ctx := context.Background()
	s := dbSnapshot{protected: map[string]string{}, data: map[string]string{}}
	for _, tb := range protectedTables {
		// Look the table up by the oid it had when the database was
		// built, so that a rename or a drop and re-create shows.
		var desc string
		oid := d.base.protectedOID(tb)
		err := d.conn.QueryRow(ctx, `
SELECT n.nspname || '.' || c.relname || ' oid=' || c.oid || ' cols=' ||
       (SELECT string_agg(a.attname || ':' || format_type(a.atttypid, a.atttypmod), ',' ORDER BY a.attnum)
        FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid = coalesce($1::oid, to_regclass($2)::oid)`, oid, tb).Scan(&desc)
		if err == pgx.ErrNoRows {
			desc = "gone"
		} else if err != nil {
			t.Fatalf("snapshot of %s: %v", tb, err)
		} else {
			desc += " " + tableContents(t, d.conn, tb)
		}
		s.protected[tb] = desc
	}
	if err := d.conn.QueryRow(ctx, `
WITH ns AS (SELECT oid, nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\_%' AND nspname <> 'information_schema')
SELECT string_agg(x, E'\n' ORDER BY x) FROM (
  SELECT 'schema ' || nspname AS x FROM ns
  UNION ALL
  SELECT 'rel ' || ns.nspname || '.' || c.relname || ' ' || c.relkind::text || ' ' || coalesce(
    (SELECT string_agg(a.attname || ':' || format_type(a.atttypid, a.atttypmod), ',' ORDER BY a.attnum)
     FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '')
  FROM pg_class c JOIN ns ON ns.oid = c.relnamespace
  UNION ALL
  SELECT 'func ' || p.oid::regprocedure::text FROM pg_proc p JOIN ns ON ns.oid = p.pronamespace
  UNION ALL
  SELECT 'type ' || ns.nspname || '.' || typname FROM pg_type ty JOIN ns ON ns.oid = ty.typnamespace
  UNION ALL
  SELECT 'rule ' || r.rulename || ' on ' || r.ev_class::regclass::text FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class JOIN ns ON ns.oid = c.relnamespace
  UNION ALL
  SELECT 'trigger ' || tgname FROM pg_trigger WHERE NOT tgisinternal
  UNION ALL
  SELECT 'event trigger ' || evtname FROM pg_event_trigger
  UNION ALL
  SELECT 'extension ' || extname FROM pg_extension
) objects`).Scan(&s.objects); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	rows, err := d.conn.Query(ctx, `SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname NOT LIKE 'pg\_%' AND n.nspname <> 'information_schema'`)
	if err != nil {
		t.Fatal(err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	for _, tb := range tables {
		s.data[tb] = tableContents(t, d.conn, tb)
	}
	return s
}

var oidInDesc = regexp.MustCompile(` oid=(\d+) `)

// protectedOID returns the oid a protected table had in this snapshot, or
// nil when there was none.
func (s dbSnapshot) protectedOID(tb string) any {
	if m := oidInDesc.FindStringSubmatch(s.protected[tb]); m != nil {
		return m[1]
	}
	return nil
}

func tableContents(t *testing.T, conn *pgx.Conn, tb string) string {
	t.Helper()
	var n int
	var sum string
	if err := conn.QueryRow(context.Background(),
		"SELECT count(*), coalesce(md5(string_agg(r::text, ',' ORDER BY r::text)), '') FROM "+tb+" r").Scan(&n, &sum); err != nil {
		t.Fatalf("contents of %s: %v", tb, err)
	}
	return fmt.Sprintf("rows=%d md5=%s", n, sum)
}

// failsDirectly runs row as a psql script straight against PostgreSQL
// (then restores the database) and reports whether it failed there too.
func (d *corpusDB) failsDirectly(t *testing.T, row corpusRow) bool {
	t.Helper()
	d.checkAndRestore(t, row, "script")
	_, stderr, _ := clients.Psql(t, d.c.SuperConnString(d.name, "sslmode=disable"), "\\set VERBOSITY verbose\n"+row.sql+"\n")
	return len(psqlErrors(stderr)) > 0
}

// checkBlocked checks psql's output for a block row.
func (d *corpusDB) checkBlocked(t *testing.T, row corpusRow, mode, stderr string, code int) {
	t.Helper()
	errs := psqlErrors(stderr)
	var refusals []psqlError
	for _, e := range errs {
		if e.code == "42501" && strings.HasPrefix(e.message, "pgmoat ") {
			refusals = append(refusals, e)
		}
	}
	if len(refusals) == 0 {
		t.Errorf("block row %s (%s, %s): not refused by pgmoat (psql exit %d): %s\nSQL: %s", row.id, row.category, mode, code, stderr, row.sql)
		return
	}
	if mode != "message" {
		return
	}
	// One Query: the whole message is refused at once.
	if len(errs) != 1 || code != 1 {
		t.Errorf("block row %s: want exactly one error and psql exit 1, got exit %d: %s", row.id, code, stderr)
	}
	tree, err := pg_query.Parse(row.sql)
	if err != nil {
		t.Fatalf("corpus row %s does not parse: %v", row.id, err)
	}
	if n := len(tree.Stmts); n > 1 && !strings.Contains(stderr, fmt.Sprintf("The whole message (%d statements) was refused", n)) {
		t.Errorf("block row %s has %d statements; the refusal does not say the whole message was refused: %s", row.id, n, stderr)
	}
}

// checkAndRestore compares the database with how it was built: a block
// row must not have changed a protected table (nor, sent as one message,
// anything at all); whatever changed is put back for the next row.
func (d *corpusDB) checkAndRestore(t *testing.T, row corpusRow, mode string) {
	t.Helper()
	now := d.snapshot(t)
	if row.expected == "block" {
		for _, tb := range protectedTables {
			if now.protected[tb] != d.base.protected[tb] {
				t.Errorf("block row %s (%s): protected table %s changed:\n  before: %s\n  after:  %s\nSQL: %s",
					row.id, mode, tb, d.base.protected[tb], now.protected[tb], row.sql)
			}
		}
		if mode != "script" && (now.objects != d.base.objects || !maps.Equal(now.data, d.base.data)) {
			t.Errorf("block row %s (%s): the database changed although the message was refused\nSQL: %s", row.id, mode, row.sql)
		}
	}
	switch {
	case now.objects != d.base.objects:
		d.rebuild(t)
	case !maps.Equal(now.data, d.base.data):
		d.resetData(t)
		// The tables are the same; their rows are schema.sql's again
		// (audit_log's timestamps are new).
		d.base = d.snapshot(t)
	}
}
