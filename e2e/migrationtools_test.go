package e2e

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgmoat/pgmoat/internal/clients"
	"github.com/pgmoat/pgmoat/internal/moattest"
	"github.com/pgmoat/pgmoat/internal/pgtest"
)

// toolPolicy holds destructive statements of the migration user, matched
// on what goose and golang-migrate really send: the user (they send no
// application_name). The tests' migration user is the superuser.
const toolPolicy = `policy:
  protect: [public.users, public.orders]
  rules:
    - {name: migrations-need-approval, match: {users: [postgres]}, operations: [destructive], action: hold}
`

// runTool runs a migration tool and returns its output and exit code.
func runTool(ctx context.Context, t *testing.T, bin string, args ...string) (string, int) {
	cmd := exec.CommandContext(ctx, bin, args...)
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
	t.Errorf("running %s: %v\n%s", bin, err, out.String())
	return out.String(), -1
}

// startTool runs a migration tool in the background; the result arrives
// on the channel.
func startTool(t *testing.T, bin string, args ...string) <-chan stmtResult {
	ch := make(chan stmtResult, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		out, code := runTool(ctx, t, bin, args...)
		var err error
		if code != 0 {
			err = errors.New(out)
		}
		ch <- stmtResult{err: err, tag: out}
	}()
	return ch
}

func writeMigration(t *testing.T, dir, name, sql string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(sql), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestGooseAsItConnects runs goose through pgmoat as it really connects
// (pgx, no application_name, each migration in a transaction unless NO
// TRANSACTION): a destructive NO TRANSACTION migration is held until
// approved; one in a transaction is refused at once with the hint to
// pre-approve, and passes once `pgmoat approve --file` pre-approved it;
// that pre-approval does not cover the file's Down section.
func TestGooseAsItConnects(t *testing.T) {
	goose := gooseCLI.path(t) // install first: a failure to install is not pgmoat's
	c := pgtest.Get(t)
	db := newDB(t, c)
	m := moattest.Start(t, c, moattest.Options{Config: toolPolicy})
	pg := direct(t, c, db)
	ctx := context.Background()
	dir := t.TempDir()
	gooseArgs := func(cmd ...string) []string {
		return append([]string{"-dir", dir, "postgres", m.SuperConnString(db)}, cmd...)
	}

	writeMigration(t, dir, "00001_add_nickname.sql", "-- +goose Up\nALTER TABLE users ADD COLUMN nickname text;\n\n-- +goose Down\nALTER TABLE users DROP COLUMN nickname;\n")
	writeMigration(t, dir, "00002_drop_flag.sql", "-- +goose NO TRANSACTION\n-- +goose Up\nALTER TABLE users DROP COLUMN legacy_flag;\n\n-- +goose Down\nALTER TABLE users ADD COLUMN legacy_flag bool;\n")
	done := startTool(t, goose, gooseArgs("up")...)
	holds := waitHolds(t, m, 1)
	if h := holds[0]; !strings.Contains(h.Statement, "DROP COLUMN legacy_flag") || h.Application != "" || h.Rule != "migrations-need-approval" {
		t.Errorf("hold: %+v", h)
	}
	notReturned(t, done, "goose up while its migration is held")
	if _, err := approver(m, false).Approve(ctx, holds[0].ID, "reviewed"); err != nil {
		t.Fatal(err)
	}
	if r := await(t, done, time.Minute, "goose up after the approval"); r.err != nil {
		t.Fatalf("goose up: %v\npgmoat:\n%s", r.err, m.Log())
	}
	if hasColumn(t, pg, "users", "legacy_flag") || !hasColumn(t, pg, "users", "nickname") {
		t.Fatal("migrations 1 and 2 did not both apply")
	}

	// In a transaction: refused at once, saying how to pre-approve.
	drop := writeMigration(t, dir, "00003_drop_orders.sql", "-- +goose Up\nDROP TABLE orders;\n\n-- +goose Down\nDROP TABLE users;\n")
	ctx2, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	out, code := runTool(ctx2, t, goose, gooseArgs("up")...)
	if code == 0 || !strings.Contains(out, "pgmoat blocked DROP TABLE public.orders") || !strings.Contains(out, "pgmoat approve --file") {
		t.Fatalf("goose up of an unapproved DROP in a transaction: exit %d\n%s", code, out)
	}
	wantTable(t, pg, "public.orders", 3)

	approveOut, approveErr, code := pgmoatCLI(t, m, moattest.ApproverToken, "approve", "--file", drop, "--ttl", "1d", "--reason", "PR 7", "--database", db)
	if code != 0 || !strings.Contains(approveOut, ": 1 statement(s) from") {
		t.Fatalf("pgmoat approve: exit %d (want 1 statement: the Up section only)\n%s%s", code, approveOut, approveErr)
	}
	if out, code := runTool(ctx2, t, goose, gooseArgs("up")...); code != 0 {
		t.Fatalf("pre-approved goose up: exit %d\n%s", code, out)
	}
	if tableExists(t, pg, "public.orders") {
		t.Fatal("orders survived its pre-approved migration")
	}
	// The Down section was not pre-approved with it.
	out, code = runTool(ctx2, t, goose, gooseArgs("down")...)
	if code == 0 || !strings.Contains(out, "pgmoat blocked DROP TABLE public.users") {
		t.Fatalf("goose down: exit %d\n%s", code, out)
	}
	wantTable(t, pg, "public.users", 3)
}

// TestGolangMigrateHeld runs golang-migrate through pgmoat as it really
// connects (lib/pq, no application_name, each file one simple Query): its
// destructive migration is held until approved, then completes.
func TestGolangMigrateHeld(t *testing.T) {
	migrateTool(t)
	c := pgtest.Get(t)
	db := newDB(t, c)
	m := moattest.Start(t, c, moattest.Options{Config: toolPolicy})
	pg := direct(t, c, db)
	dir := t.TempDir()
	writeMigration(t, dir, "1_drop_orders.up.sql", "DROP TABLE orders;\n")
	writeMigration(t, dir, "1_drop_orders.down.sql", "CREATE TABLE orders (id int);\n")
	done := startTool(t, migrateTool(t), "-database", m.SuperConnString(db), "-path", dir, "up")
	holds := waitHolds(t, m, 1)
	if !strings.Contains(holds[0].Statement, "DROP TABLE orders") {
		t.Errorf("hold: %+v", holds[0])
	}
	notReturned(t, done, "migrate up while held")
	wantTable(t, pg, "public.orders", 3)
	if _, err := approver(m, false).Approve(context.Background(), holds[0].ID, "reviewed"); err != nil {
		t.Fatal(err)
	}
	if r := await(t, done, time.Minute, "migrate up after the approval"); r.err != nil {
		t.Fatalf("migrate up: %v", r.err)
	}
	if tableExists(t, pg, "public.orders") {
		t.Error("orders survived the approved migration")
	}
	wantVersion(t, pg, 1, false)
}

// TestDbmateAsItConnects runs dbmate (from npm) through pgmoat as it
// really connects (lib/pq, no application_name): a transaction:false
// migration is held until approved; one in a transaction passes once
// `pgmoat approve --file` pre-approved its up section, and its down
// section stays refused.
func TestDbmateAsItConnects(t *testing.T) {
	dbmate, err := clients.DbmatePath()
	if err != nil {
		t.Fatal(err)
	}
	c := pgtest.Get(t)
	db := newDB(t, c)
	m := moattest.Start(t, c, moattest.Options{Config: toolPolicy})
	pg := direct(t, c, db)
	dir := t.TempDir()
	args := func(cmd ...string) []string {
		return append([]string{"--url", m.SuperConnString(db), "--migrations-dir", dir, "--no-dump-schema"}, cmd...)
	}
	writeMigration(t, dir, "20240101000000_drop_flag.sql", "-- migrate:up transaction:false\nALTER TABLE users DROP COLUMN legacy_flag;\n\n-- migrate:down\nALTER TABLE users ADD COLUMN legacy_flag bool;\n")
	done := startTool(t, dbmate, args("up")...)
	holds := waitHolds(t, m, 1)
	if !strings.Contains(holds[0].Statement, "DROP COLUMN legacy_flag") || holds[0].Application != "" {
		t.Errorf("hold: %+v", holds[0])
	}
	if _, err := approver(m, false).Approve(context.Background(), holds[0].ID, "reviewed"); err != nil {
		t.Fatal(err)
	}
	if r := await(t, done, time.Minute, "dbmate up after the approval"); r.err != nil {
		t.Fatalf("dbmate up: %v", r.err)
	}
	if hasColumn(t, pg, "users", "legacy_flag") {
		t.Fatal("legacy_flag survived the approved migration")
	}

	drop := writeMigration(t, dir, "20240102000000_drop_orders.sql", "-- migrate:up\nDROP TABLE orders;\n\n-- migrate:down\nDROP TABLE users;\n")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, code := runTool(ctx, t, dbmate, args("up")...); code == 0 || !strings.Contains(out, "pgmoat blocked DROP TABLE public.orders") {
		t.Fatalf("unapproved dbmate up: exit %d\n%s", code, out)
	}
	out, errOut, code := pgmoatCLI(t, m, moattest.ApproverToken, "approve", "--file", drop, "--ttl", "1h", "--reason", "PR 9", "--database", db)
	if code != 0 || !strings.Contains(out, ": 1 statement(s) from") {
		t.Fatalf("pgmoat approve: exit %d\n%s%s", code, out, errOut)
	}
	if out, code := runTool(ctx, t, dbmate, args("up")...); code != 0 {
		t.Fatalf("pre-approved dbmate up: exit %d\n%s", code, out)
	}
	if tableExists(t, pg, "public.orders") {
		t.Fatal("orders survived its pre-approved migration")
	}
	if out, code := runTool(ctx, t, dbmate, args("rollback")...); code == 0 || !strings.Contains(out, "pgmoat blocked DROP TABLE public.users") {
		t.Fatalf("dbmate rollback: exit %d\n%s", code, out)
	}
	wantTable(t, pg, "public.users", 3)
}
