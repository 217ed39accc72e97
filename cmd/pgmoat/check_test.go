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
	if f.Line != 3 || f.Col != 1 || f.Decision != "hold" || f.Rule != "migrations-need-approval" ||
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
	// Unknown search_path: an unqualified name may be any schema's.
	_, _, code := runCLI(t, "DROP TABLE invoices;", "check", "--config", exampleConfig, "-")
	if code != 1 {
		t.Fatalf("unknown search_path: exit %d, want 1", code)
	}
	_, _, code = runCLI(t, "DROP TABLE invoices;", "check", "--config", exampleConfig, "--search-path", "public", "-")
	if code != 0 {
		t.Fatalf("search_path public: exit %d, want 0", code)
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
