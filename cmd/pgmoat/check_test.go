package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const exampleConfig = "../../examples/pgmoat.yaml"

func runCLI(t *testing.T, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	if stdin != "" {
		f := filepath.Join(t.TempDir(), "stdin")
		if err := os.WriteFile(f, []byte(stdin), 0o600); err != nil {
			t.Fatal(err)
		}
		in, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		defer in.Close()
		old := os.Stdin
		os.Stdin = in
		defer func() { os.Stdin = old }()
	}
	var out, errb bytes.Buffer
	code = run(context.Background(), args, &out, &errb)
	return out.String(), errb.String(), code
}

func migrations(t *testing.T, dir string) []string {
	files, err := filepath.Glob(filepath.Join("../../examples/migrations", dir, "*.sql"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no example migrations in %s: %v", dir, err)
	}
	return files
}

func TestCheckSafeMigrationsExitZero(t *testing.T) {
	out, errOut, code := runCLI(t, "", append([]string{"check", "--config", exampleConfig}, migrations(t, "safe")...)...)
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	if !strings.Contains(out, "pgmoat check: ok: 2 file(s)") || strings.Contains(out, ": block:") {
		t.Errorf("output:\n%s", out)
	}
}

func TestCheckUnsafeMigrationsText(t *testing.T) {
	out, _, code := runCLI(t, "", append([]string{"check", "--config", exampleConfig}, migrations(t, "unsafe")...)...)
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s", code, out)
	}
	for _, want := range []string{
		"0003_cleanup.sql:3:1: block: DELETE FROM invoices",
		"may resolve to billing.invoices through search_path",
		"0004_rename.sql:2:1: block: ALTER TABLE public.users RENAME COLUMN email TO email_address",
		"0004_rename.sql:3:1: block: DROP TABLE IF EXISTS public.users_archive, public.users",
		"rule default-destructive: DROP TABLE public.users: table is protected by public.users",
		"0005_sneaky.sql:1:1: block: DO $$",
		"TRUNCATE billing.payments",
		"0005_sneaky.sql:6:1: block: WITH gone AS (DELETE FROM public.users",
		"pgmoat check: FAIL: 3 file(s)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "users_archive: table is protected") {
		t.Errorf("users_archive reported as protected:\n%s", out)
	}
}

func TestCheckJSON(t *testing.T) {
	out, _, code := runCLI(t, "", "check", "--config", exampleConfig, "--format", "json", "--application", "goose",
		"../../examples/migrations/unsafe/0004_rename.sql")
	if code != 1 {
		t.Fatalf("exit %d, want 1 (held statements fail the check)\n%s", code, out)
	}
	var doc struct {
		Findings []finding    `json:"findings"`
		Summary  checkSummary `json:"summary"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if len(doc.Findings) != 2 || doc.Summary.Held != 2 || doc.Summary.Blocked != 0 || doc.Summary.Statements != 4 {
		t.Fatalf("findings/summary: %+v", doc)
	}
	f := doc.Findings[1]
	if f.Line != 3 || f.Col != 1 || f.Decision != "hold" || f.Rule != "migration-tools-need-approval" || f.Direction != "up" ||
		len(f.Operations) != 1 || f.Operations[0] != "drop" || !strings.Contains(strings.Join(f.Objects, ","), "public.users") {
		t.Errorf("finding: %+v", f)
	}
}

func TestCheckGitHub(t *testing.T) {
	out, _, code := runCLI(t, "", "check", "--config", exampleConfig, "--format", "github",
		"../../examples/migrations/unsafe/0004_rename.sql")
	if code != 1 {
		t.Fatalf("exit %d", code)
	}
	want := "::error file=../../examples/migrations/unsafe/0004_rename.sql,line=3,col=1,title=pgmoat%3A block (default-destructive)::DROP TABLE public.users: table is protected by public.users; rule default-destructive%0ADROP TABLE IF EXISTS"
	if !strings.Contains(out, want) {
		t.Errorf("output lacks\n%s\n in:\n%s", want, out)
	}
}

func TestCheckLogRuleIsNotAFailure(t *testing.T) {
	out, _, code := runCLI(t, "TRUNCATE billing.invoices;\n", "check", "--config", exampleConfig,
		"--user", "analytics", "--client", "10.20.1.2", "-")
	if code != 0 {
		t.Fatalf("exit %d, want 0 for a logged statement\n%s", code, out)
	}
	if !strings.Contains(out, "<stdin>:1:1: log: TRUNCATE billing.invoices") || !strings.Contains(out, "analytics-refresh") {
		t.Errorf("output:\n%s", out)
	}
	// The same statement from another network is blocked.
	_, _, code = runCLI(t, "TRUNCATE billing.invoices;\n", "check", "--config", exampleConfig,
		"--user", "analytics", "--client", "192.0.2.1", "-")
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
}

func TestCheckSearchPathFlag(t *testing.T) {
	// Without --search-path or a catalog, check assumes PostgreSQL's
	// default "$user", public: invoices is public.invoices...
	_, _, code := runCLI(t, "DROP TABLE invoices;", "check", "--config", exampleConfig, "-")
	if code != 0 {
		t.Fatalf("default search_path: exit %d, want 0", code)
	}
	// ... unless the user is billing ($user) or the path says billing.
	_, _, code = runCLI(t, "DROP TABLE invoices;", "check", "--config", exampleConfig, "--user", "billing", "-")
	if code != 1 {
		t.Fatalf("user billing: exit %d, want 1", code)
	}
	_, _, code = runCLI(t, "DROP TABLE invoices;", "check", "--config", exampleConfig, "--search-path", "billing,public", "-")
	if code != 1 {
		t.Fatalf("search_path billing: exit %d, want 1", code)
	}
	// What the search path alone cannot settle fails with a hint.
	out, _, code := runCLI(t, "TRUNCATE scratch CASCADE;", "check", "--config", exampleConfig, "-")
	if code != 1 || !strings.Contains(out, "hint: ") || !strings.Contains(out, "--schema FILE") {
		t.Fatalf("TRUNCATE ... CASCADE without a catalog: exit %d\n%s", code, out)
	}
}

// TestCheckSchemaCatalog: with --schema, check knows which relations
// exist where: unprotected names pass whatever the search path, and
// DROP SCHEMA ... CASCADE of a schema without protected tables passes.
func TestCheckSchemaCatalog(t *testing.T) {
	schema := filepath.Join(t.TempDir(), "schema.sql")
	os.WriteFile(schema, []byte("\\restrict x\nSELECT pg_catalog.set_config('search_path', '', false);\n"+
		"CREATE SCHEMA billing;\nCREATE SCHEMA archive;\nCREATE TABLE public.users (id integer);\nCREATE TABLE public.scratch (id integer);\n"+
		"CREATE TABLE public.audit_log (id integer);\nCREATE TABLE public.users_archive (id integer);\nCREATE TABLE billing.invoices (id integer);\n"+
		"CREATE TABLE archive.old (id integer);\nCOPY public.scratch (id) FROM stdin;\n1\n\\.\n\\unrestrict x\n"), 0o600)
	ok := "DROP TABLE scratch;\nDROP TABLE users_archive;\nTRUNCATE audit_log;\nDROP SCHEMA archive CASCADE;\n"
	out, errOut, code := runCLI(t, ok, "check", "--config", exampleConfig, "--schema", schema, "--search-path", "billing,public", "-")
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	for sql, want := range map[string]string{
		"DROP TABLE invoices;":        "billing.invoices",
		"DROP SCHEMA billing CASCADE": "billing",
		"DELETE FROM not_in_schema;":  "may be a table protected by billing.*",
	} {
		out, _, code := runCLI(t, sql, "check", "--config", exampleConfig, "--schema", schema, "-")
		if code != 1 || !strings.Contains(out, want) {
			t.Errorf("%s: exit %d, want 1 naming %s\n%s", sql, code, want, out)
		}
	}
	if _, errOut, code := runCLI(t, "", "check", "--config", exampleConfig, "--schema", "nope.sql", "x.sql"); code != 2 || !strings.Contains(errOut, "--schema") {
		t.Errorf("missing schema file: exit %d %s", code, errOut)
	}
}

// TestCheckMigrationFormats: each tool's up and down sections are judged
// separately and reported with their direction; --skip-down leaves the
// downs out.
func TestCheckMigrationFormats(t *testing.T) {
	dir := t.TempDir()
	write := func(rel, text string) string {
		p := filepath.Join(dir, rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	files := []string{
		write("goose/20240101_users.sql", "-- +goose Up\nCREATE TABLE public.users2 (id int);\n-- +goose Down\nDROP TABLE public.users;\n"),
		write("migrate/1_x.up.sql", "CREATE TABLE public.t (id int);\n"),
		write("migrate/1_x.down.sql", "DROP TABLE public.users;\n"),
		write("dbmate/20240101_x.sql", "-- migrate:up\nALTER TABLE public.users ADD c int;\n-- migrate:down\nALTER TABLE public.users DROP c;\n"),
		write("flyway/V2__x.sql", "CREATE INDEX ON public.users (id);\n"),
		write("flyway/U2__x.sql", "TRUNCATE billing.invoices;\n"),
		write("sqitch/deploy/x.sql", "BEGIN;\nCREATE TABLE public.t2 (id int);\nCOMMIT;\n"),
		write("sqitch/revert/x.sql", "DROP TABLE billing.payments;\n"),
		write("liquibase/changelog.sql", "--liquibase formatted sql\n--changeset a:1\nCREATE TABLE public.t3 (id int);\n--rollback DROP TABLE public.users;\n"),
	}
	out, _, code := runCLI(t, "", append([]string{"check", "--config", exampleConfig}, files...)...)
	if code != 1 {
		t.Fatalf("exit %d, want 1 for the downs\n%s", code, out)
	}
	for _, want := range []string{
		"goose/20240101_users.sql:4:1: block (down): DROP TABLE public.users",
		"migrate/1_x.down.sql:1:1: block (down): DROP TABLE public.users",
		"dbmate/20240101_x.sql:4:1: block (down): ALTER TABLE public.users DROP c",
		"flyway/U2__x.sql:1:1: block (down): TRUNCATE billing.invoices",
		"sqitch/revert/x.sql:1:1: block (down): DROP TABLE billing.payments",
		"liquibase/changelog.sql:4:12: block (down): DROP TABLE public.users",
		"6 blocked, 0 held, 0 logged (6 in down migrations; --skip-down leaves them out)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	out, _, code = runCLI(t, "", append([]string{"check", "--config", exampleConfig, "--skip-down"}, files...)...)
	if code != 0 || !strings.Contains(out, "pgmoat check: ok: 9 file(s)") {
		t.Errorf("--skip-down: exit %d\n%s", code, out)
	}
	// A named format overrides detection; an unknown one is a usage error.
	out, _, code = runCLI(t, "", "check", "--config", exampleConfig, "--migration-format", "plain", files[0])
	if code != 1 || strings.Contains(out, "(down)") {
		t.Errorf("--migration-format plain: exit %d\n%s", code, out)
	}
	if _, errOut, code := runCLI(t, "", "check", "--config", exampleConfig, "--migration-format", "rails", files[0]); code != 2 || !strings.Contains(errOut, "goose") {
		t.Errorf("unknown format: exit %d %s", code, errOut)
	}
}

func TestCheckUsageErrors(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("policy:\n  protect: [nodot]\n"), 0o600)
	for name, args := range map[string][]string{
		"no config":      {"check", "x.sql"},
		"no files":       {"check", "--config", exampleConfig},
		"bad format":     {"check", "--config", exampleConfig, "--format", "xml", "x.sql"},
		"missing file":   {"check", "--config", exampleConfig, "does-not-exist.sql"},
		"invalid config": {"check", "--config", bad, "../../examples/migrations/safe/0001_create_orders.sql"},
		"unknown flag":   {"check", "--bogus"},
		"bad client":     {"check", "--config", exampleConfig, "--client", "nope", "x.sql"},
	} {
		out, errOut, code := runCLI(t, "", args...)
		if code != 2 {
			t.Errorf("%s: exit %d, want 2\n%s%s", name, code, out, errOut)
		}
		if name == "invalid config" && !strings.Contains(errOut, bad+": policy.protect[0]: invalid pattern") {
			t.Errorf("invalid config error does not name file and key: %s", errOut)
		}
	}
}

func TestCheckPositionSkipsCommentsBeforeAStatement(t *testing.T) {
	sql := "SELECT 1; -- trailing comment of line 1\n/* a /* nested */ block */ DROP TABLE public.users;\n"
	out, _, code := runCLI(t, sql, "check", "--config", exampleConfig, "-")
	if code != 1 || !strings.Contains(out, "<stdin>:2:28: block: DROP TABLE public.users\n") {
		t.Fatalf("exit %d, output:\n%s", code, out)
	}
}

// TestCheckPartitionFromEarlierFile: the files of a run are one history:
// a partition of a protected table made in one file is protected in the
// files after it.
func TestCheckPartitionFromEarlierFile(t *testing.T) {
	dir := t.TempDir()
	first := filepath.Join(dir, "0001_partition.sql")
	second := filepath.Join(dir, "0002_drop.sql")
	os.WriteFile(first, []byte("CREATE TABLE public.users_2024 PARTITION OF public.users FOR VALUES FROM (0) TO (100);\n"), 0o600)
	os.WriteFile(second, []byte("DROP TABLE public.users_2024;\n"), 0o600)
	out, _, code := runCLI(t, "", "check", "--config", exampleConfig, first, second)
	if code != 1 || !strings.Contains(out, "0002_drop.sql:1:1: block: DROP TABLE public.users_2024") ||
		!strings.Contains(out, "public.users_2024 is a partition or inheritance child of public.users, protected by public.users") {
		t.Fatalf("exit %d\n%s", code, out)
	}
	// Alone, the second file drops an unprotected table.
	if out, _, code := runCLI(t, "", "check", "--config", exampleConfig, second); code != 0 {
		t.Fatalf("second file alone: exit %d\n%s", code, out)
	}
}

// TestCheckContractFindings: pgmoat check reports what takes part of a
// protected table's contract away, cluster lockouts and side doors, as
// the proxy would, and lets the additive twins pass.
func TestCheckContractFindings(t *testing.T) {
	migration := `ALTER TABLE public.users ADD COLUMN nickname text;
CREATE INDEX users_nickname_idx ON public.users (nickname);
GRANT SELECT ON public.users TO reporting;
ALTER TABLE public.users ENABLE ROW LEVEL SECURITY;
SELECT setval('public.users_id_seq', 1);
CREATE RULE ignore_deletes AS ON DELETE TO public.users DO INSTEAD NOTHING;
ALTER ROLE app NOLOGIN;
ALTER FUNCTION dblink_exec(text, text) RENAME TO innocent;
`
	out, _, code := runCLI(t, migration, "check", "--config", exampleConfig, "--format", "json", "-")
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s", code, out)
	}
	var doc struct {
		Findings []finding    `json:"findings"`
		Summary  checkSummary `json:"summary"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	want := map[int]string{4: "contract", 5: "contract", 6: "contract", 7: "cluster_admin", 8: "opaque"}
	if len(doc.Findings) != len(want) || doc.Summary.Blocked != len(want) {
		t.Fatalf("findings: %+v", doc)
	}
	for _, f := range doc.Findings {
		if op := want[f.Line]; op == "" || f.Decision != "block" || len(f.Operations) == 0 || f.Operations[0] != op {
			t.Errorf("line %d: %s %v by %s (want block %s): %s", f.Line, f.Decision, f.Operations, f.Rule, op, f.Reason)
		}
	}
	if f := doc.Findings[3]; f.Rule != "default-cluster-admin" {
		t.Errorf("ALTER ROLE NOLOGIN decided by %q", f.Rule)
	}
}

// TestCheckContractWithSchema: with the schema's DDL, check knows which
// functions a protected table's triggers call and which sequences feed
// it, and reports a migration that changes them.
func TestCheckContractWithSchema(t *testing.T) {
	schema := filepath.Join(t.TempDir(), "schema.sql")
	if err := os.WriteFile(schema, []byte(`CREATE TABLE public.users (id int PRIMARY KEY DEFAULT nextval('public.global_ids'), note text);
CREATE SEQUENCE public.global_ids;
CREATE FUNCTION public.stamp() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN NEW.note := 'x'; RETURN NEW; END$$;
CREATE FUNCTION public.unused() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$;
CREATE TRIGGER users_stamp BEFORE INSERT ON public.users FOR EACH ROW EXECUTE FUNCTION public.stamp();
`), 0o600); err != nil {
		t.Fatal(err)
	}
	migration := `CREATE OR REPLACE FUNCTION public.unused() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NULL; END$$;
CREATE OR REPLACE FUNCTION public.stamp() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NULL; END$$;
ALTER SEQUENCE public.global_ids RESTART;
`
	out, _, code := runCLI(t, migration, "check", "--config", exampleConfig, "--schema", schema, "-")
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s", code, out)
	}
	for _, want := range []string{
		"<stdin>:2:1: block: CREATE OR REPLACE FUNCTION public.stamp()",
		"which the trigger users_stamp of public.users calls",
		"<stdin>:3:1: block: ALTER SEQUENCE public.global_ids RESTART",
		"(it feeds public.users)",
		"2 blocked",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
