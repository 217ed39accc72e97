package e2e

import (
	"bytes"
	"context"
	"errors"
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

// migrateModule is the migration tool the pre-approval test runs through
// pgmoat: golang-migrate's CLI, built with only its postgres driver and
// file source (lib/pq sends each migration file as one simple Query).
const (
	migrateModule  = "github.com/golang-migrate/migrate/v4/cmd/migrate"
	migrateVersion = "v4.18.3"
)

var (
	migrateOnce sync.Once
	migratePath string
	migrateErr  error
)

// migrateTool returns golang-migrate's CLI, installed once into
// bin/tools/ of the repository (which git ignores) from the Go module
// proxy.
func migrateTool(t *testing.T) string {
	t.Helper()
	migrateOnce.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		dir := filepath.Join(filepath.Dir(file), "..", "bin", "tools", "migrate-"+migrateVersion)
		migratePath = filepath.Join(dir, "migrate")
		if _, err := os.Stat(migratePath); err == nil {
			return
		}
		// Install into a temporary directory and rename, so that a
		// concurrent or interrupted run never sees half a binary.
		tmp, err := os.MkdirTemp(filepath.Dir(dir), ".migrate-")
		if err != nil {
			if err = os.MkdirAll(filepath.Dir(dir), 0o755); err == nil {
				tmp, err = os.MkdirTemp(filepath.Dir(dir), ".migrate-")
			}
			if err != nil {
				migrateErr = err
				return
			}
		}
		defer os.RemoveAll(tmp)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "install", "-tags", "postgres file", migrateModule+"@"+migrateVersion)
		cmd.Dir = tmp
		cmd.Env = append(os.Environ(), "GOBIN="+tmp, "GOFLAGS=-buildvcs=false")
		if out, err := cmd.CombinedOutput(); err != nil {
			migrateErr = fmt.Errorf("go install %s@%s: %v\n%s", migrateModule, migrateVersion, err, out)
			return
		}
		os.MkdirAll(dir, 0o755)
		if err := os.Rename(filepath.Join(tmp, "migrate"), migratePath); err != nil {
			if _, statErr := os.Stat(migratePath); statErr != nil {
				migrateErr = err
			}
		}
	})
	if migrateErr != nil {
		t.Fatal(migrateErr)
	}
	return migratePath
}

// runMigrate runs `migrate -database url -path dir up` and returns its
// output and exit code.
func runMigrate(t *testing.T, url, dir string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, migrateTool(t), "-database", url, "-path", dir, "up")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return out.String(), 0
	case errors.As(err, &exit):
		return out.String(), exit.ExitCode()
	}
	t.Fatalf("running migrate: %v\n%s", err, out.String())
	return "", -1
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
