package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgmoat/pgmoat/audit"
	"github.com/pgmoat/pgmoat/internal/moattest"
	"github.com/pgmoat/pgmoat/internal/pgtest"
)

// The migration tools the e2e tests run through pgmoat, installed from
// the Go module proxy with only their PostgreSQL drivers: golang-migrate
// (lib/pq: each migration file is one simple Query) and goose (pgx: one
// statement per message, in a transaction unless NO TRANSACTION).
var (
	migrateCLI = goTool{name: "migrate", module: "github.com/golang-migrate/migrate/v4/cmd/migrate", version: "v4.18.3", tags: "postgres file"}
	gooseCLI   = goTool{name: "goose", module: "github.com/pressly/goose/v3/cmd/goose", version: "v3.26.0",
		tags: "no_clickhouse no_libsql no_mssql no_mysql no_sqlite3 no_vertica no_ydb no_duckdb no_spanner no_starrocks"}
)

// goTool is a command installed with go install into bin/tools/ of the
// repository (which git ignores), once per test binary.
type goTool struct {
	name, module, version, tags string
}

var (
	goToolMu   sync.Mutex
	goToolPath = map[string]string{}
)

// path returns the tool's binary, installing it first if needed.
func (g goTool) path(t *testing.T) string {
	t.Helper()
	goToolMu.Lock()
	defer goToolMu.Unlock()
	if p, ok := goToolPath[g.name]; ok {
		return p
	}
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(file), "..", "bin", "tools", g.name+"-"+g.version)
	p := filepath.Join(dir, g.name)
	if _, err := os.Stat(p); err != nil {
		if err := g.install(dir, p); err != nil {
			t.Fatal(err)
		}
	}
	goToolPath[g.name] = p
	return p
}

func (g goTool) install(dir, p string) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return err
	}
	// Install into a temporary directory and rename, so that a
	// concurrent or interrupted run never sees half a binary.
	tmp, err := os.MkdirTemp(filepath.Dir(dir), "."+g.name+"-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "install", "-tags", g.tags, g.module+"@"+g.version)
	cmd.Dir = tmp
	cmd.Env = append(os.Environ(), "GOBIN="+tmp, "GOFLAGS=-buildvcs=false")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go install %s@%s: %v\n%s", g.module, g.version, err, out)
	}
	os.MkdirAll(dir, 0o755)
	if err := os.Rename(filepath.Join(tmp, g.name), p); err != nil {
		if _, statErr := os.Stat(p); statErr != nil {
			return err
		}
	}
	return nil
}

// migrateTool returns golang-migrate's CLI.
func migrateTool(t *testing.T) string { return migrateCLI.path(t) }

// runMigrate runs `migrate -database url -path dir up` and returns its
// output and exit code.
func runMigrate(t *testing.T, url, dir string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return runTool(ctx, t, migrateTool(t), "-database", url, "-path", dir, "up")
}

// TestPreapprovedMigration runs golang-migrate through pgmoat: a
// destructive migration pre-approved with `pgmoat approve` passes and is
// audited as a pre-approval use; an unapproved one stops the tool with
// pgmoat's error and leaves the table alone.
func TestPreapprovedMigration(t *testing.T) {
	migrateTool(t) // install first: a failure to install is not pgmoat's
	c := pgtest.Get(t)
	db := newDB(t, c)
	m := moattest.Start(t, c, moattest.Options{Config: blockPolicy})
	pg := direct(t, c, db)
	ctx := context.Background()
	url := m.SuperConnString(db)

	dir := t.TempDir()
	write := func(name, sql string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(sql), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("1_add_nickname.up.sql", "ALTER TABLE users ADD COLUMN nickname text;\n")
	drop := write("2_drop_legacy_flag.up.sql", "ALTER TABLE users DROP COLUMN legacy_flag;\nCREATE INDEX users_name ON users (name);\n")

	// Pre-approve migration 2, as a deploy pipeline would after review.
	out, errOut, code := pgmoatCLI(t, m, moattest.ApproverToken,
		"approve", "--file", drop, "--ttl", "1h", "--reason", "reviewed in PR 42", "--database", db)
	if code != 0 || !strings.HasPrefix(out, "pre-approval ") {
		t.Fatalf("pgmoat approve: exit %d\n%s%s", code, out, errOut)
	}
	preID := strings.TrimSuffix(strings.Fields(out)[1], ":")

	out, code = runMigrate(t, url, dir)
	if code != 0 {
		t.Fatalf("migrate up with the pre-approval: exit %d\n%s\npgmoat:\n%s", code, out, m.Log())
	}
	if hasColumn(t, pg, "users", "legacy_flag") || !hasColumn(t, pg, "users", "nickname") {
		t.Fatal("migrations 1 and 2 did not both apply")
	}
	wantTable(t, pg, "public.users", 3)
	wantVersion(t, pg, 2, false)

	evs := waitAudit(t, m.AuditPath, "preapproval_used", func(ev audit.Event) bool {
		return ev.Kind == audit.PreapprovalUsed && ev.PreapprovalID == preID &&
			strings.Contains(ev.Statement, "DROP COLUMN legacy_flag") && ev.Database == db
	})
	if len(evs[0].Approvers) == 0 || evs[0].Approvers[0] != "alice" {
		t.Errorf("preapproval_used does not name the approver alice: %+v", evs[0])
	}
	list, err := approver(m, false).ListPreApprovals(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].ID != preID || list[0].Uses != 1 {
		t.Errorf("pre-approvals: %+v; want %s used once", list, preID)
	}

	// An unapproved destructive migration stops the tool.
	write("3_drop_orders.up.sql", "DROP TABLE orders;\n")
	out, code = runMigrate(t, url, dir)
	if code == 0 {
		t.Fatalf("migrate up with an unapproved DROP TABLE succeeded:\n%s", out)
	}
	if !strings.Contains(out, "pgmoat blocked DROP TABLE public.orders") {
		t.Errorf("migrate's output does not carry pgmoat's error:\n%s", out)
	}
	wantTable(t, pg, "public.orders", 3)
	wantVersion(t, pg, 3, true) // golang-migrate marks a failed migration dirty
}

// hasColumn reports whether public.table has column.
func hasColumn(t *testing.T, pg *pgx.Conn, table, column string) bool {
	t.Helper()
	var n int
	if err := pg.QueryRow(context.Background(), `SELECT count(*) FROM information_schema.columns
WHERE table_schema = 'public' AND table_name = $1 AND column_name = $2`, table, column).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n == 1
}

// wantVersion checks golang-migrate's schema_migrations.
func wantVersion(t *testing.T, pg *pgx.Conn, version int, dirty bool) {
	t.Helper()
	var v int
	var d bool
	if err := pg.QueryRow(context.Background(), "SELECT version, dirty FROM schema_migrations").Scan(&v, &d); err != nil {
		t.Fatal(err)
	}
	if v != version || d != dirty {
		t.Errorf("schema_migrations: version %d dirty %v, want %d %v", v, d, version, dirty)
	}
}

// waitAudit polls the audit file until events match and returns them.
func waitAudit(t *testing.T, path, what string, match func(audit.Event) bool) []audit.Event {
	t.Helper()
	var found []audit.Event
	moattest.WaitFor(t, 10*time.Second, what+" in the audit log", func() bool {
		evs, err := audit.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		found = found[:0]
		for _, ev := range evs {
			if match(ev) {
				found = append(found, ev)
			}
		}
		return len(found) > 0
	})
	return found
}
