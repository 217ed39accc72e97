package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgmoat/pgmoat/internal/clients"
	"github.com/pgmoat/pgmoat/internal/moattest"
	"github.com/pgmoat/pgmoat/internal/pgtest"
)

// TestBackupAndRestoreTools runs PostgreSQL's own backup tools through
// pgmoat with protected tables: pg_dump in its formats, pg_dumpall, a psql
// restore of a plain dump and pg_restore all work; pg_restore --clean over
// protected tables is refused with a hint that says how to pre-approve
// it, and passes once pre-approved.
func TestBackupAndRestoreTools(t *testing.T) {
	c := pgtest.Get(t)
	db := newDB(t, c)
	m := moattest.Start(t, c, moattest.Options{Config: blockPolicy})
	url := m.SuperConnString(db)
	dir := t.TempDir()

	dump := func(args ...string) []byte {
		t.Helper()
		out, errOut, code := clients.PgTool(t, nil, "pg_dump", append(args, "-d", url)...)
		if code != 0 {
			t.Fatalf("pg_dump %v: exit %d\n%s\npgmoat:\n%s", args, code, errOut, m.Log())
		}
		return out
	}
	plain := dump()
	for _, want := range []string{"CREATE TABLE public.users", "CREATE TABLE public.orders", "COPY public.users", "1\tuser1\tf"} {
		if !strings.Contains(string(plain), want) {
			t.Errorf("plain dump lacks %q", want)
		}
	}
	if only := string(dump("-t", "users")); !strings.Contains(only, "CREATE TABLE public.users") || strings.Contains(only, "public.orders") {
		t.Errorf("pg_dump -t users:\n%s", only)
	}
	if schema := string(dump("--schema-only")); !strings.Contains(schema, "CREATE TABLE public.users") || strings.Contains(schema, "COPY public.users") {
		t.Errorf("pg_dump --schema-only:\n%s", schema)
	}
	custom := filepath.Join(dir, "dump.fc")
	dump("-Fc", "-f", custom)

	out, errOut, code := clients.PgTool(t, nil, "pg_dumpall", "--schema-only", "-d", m.SuperConnString("postgres"))
	if code != 0 || !strings.Contains(string(out), "CREATE TABLE public.users") {
		t.Errorf("pg_dumpall --schema-only: exit %d\n%s", code, errOut)
	}

	// A psql restore of the plain dump into an empty database.
	fromPlain := c.NewDatabase(t)
	_, psqlErr, code := clients.Psql(t, m.SuperConnString(fromPlain), string(plain), "-v", "ON_ERROR_STOP=1", "-q")
	if code != 0 {
		t.Fatalf("psql restore: exit %d\n%s", code, psqlErr)
	}
	wantTable(t, direct(t, c, fromPlain), "public.users", 3)

	// pg_restore of the custom-format dump.
	restored := c.NewDatabase(t)
	restoredURL := m.SuperConnString(restored)
	if _, errOut, code := clients.PgTool(t, nil, "pg_restore", "--exit-on-error", "-d", restoredURL, custom); code != 0 {
		t.Fatalf("pg_restore: exit %d\n%s", code, errOut)
	}
	pg := direct(t, c, restored)
	wantTable(t, pg, "public.users", 3)
	wantTable(t, pg, "public.orders", 3)

	// pg_restore --clean drops the protected tables first: refused, with
	// the way to pre-approve it.
	c.Exec(t, restored, "INSERT INTO users VALUES (4, 'restored later', false)")
	_, errOut, code = clients.PgTool(t, nil, "pg_restore", "--clean", "--exit-on-error", "-d", restoredURL, custom)
	if code == 0 {
		t.Fatal("pg_restore --clean over protected tables succeeded")
	}
	for _, want := range []string{"pgmoat blocked", "public.users", "pgmoat approve --file -", "pg_restore --clean -f - DUMPFILE"} {
		if !strings.Contains(string(errOut), want) {
			t.Errorf("pg_restore --clean's error lacks %q:\n%s", want, errOut)
		}
	}
	wantTable(t, pg, "public.users", 4)

	// Pre-approved as the hint says, it runs.
	script, errOut, code := clients.PgTool(t, nil, "pg_restore", "--clean", "-f", "-", custom)
	if code != 0 {
		t.Fatalf("pg_restore -f -: exit %d\n%s", code, errOut)
	}
	scriptFile := filepath.Join(dir, "restore.sql")
	if err := os.WriteFile(scriptFile, script, 0o600); err != nil {
		t.Fatal(err)
	}
	approveOut, approveErr, code := pgmoatCLI(t, m, moattest.ApproverToken, "approve", "--file", scriptFile,
		"--ttl", "1h", "--reason", "restore drill", "--database", restored)
	if code != 0 {
		t.Fatalf("pgmoat approve: exit %d\n%s%s", code, approveOut, approveErr)
	}
	if _, errOut, code := clients.PgTool(t, nil, "pg_restore", "--clean", "--exit-on-error", "-d", restoredURL, custom); code != 0 {
		t.Fatalf("pre-approved pg_restore --clean: exit %d\n%s", code, errOut)
	}
	wantTable(t, pg, "public.users", 3) // as dumped: row 4 is gone
}

// TestReplicationConnectionRefused checks that a replication connection
// is refused at once with a clear error, never hung: psql with
// replication=database and pg_basebackup.
func TestReplicationConnectionRefused(t *testing.T) {
	c := pgtest.Get(t)
	m := moattest.Start(t, c, moattest.Options{Config: blockPolicy})

	start := time.Now()
	_, errOut, code := clients.Psql(t, m.SuperConnString("postgres", "replication=database"), "", "-c", "IDENTIFY_SYSTEM")
	if code == 0 || !strings.Contains(errOut, "pgmoat does not relay replication connections") {
		t.Errorf("psql replication=database: exit %d\n%s", code, errOut)
	}
	_, bbErr, code := clients.PgTool(t, nil, "pg_basebackup", "-d", m.SuperConnString(""), "-D", filepath.Join(t.TempDir(), "base"), "-X", "none")
	if code == 0 || !strings.Contains(string(bbErr), "pgmoat does not relay replication connections") {
		t.Errorf("pg_basebackup: exit %d\n%s", code, bbErr)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("refusing two replication connections took %s", d)
	}
	// An ordinary session says replication=false, or nothing.
	if _, errOut, code := clients.Psql(t, m.SuperConnString("postgres", "replication=false"), "", "-c", "SELECT 1"); code != 0 {
		t.Errorf("replication=false: exit %d\n%s", code, errOut)
	}
	waitMetric(t, m, "pgmoat_client_connections_rejected_total", map[string]string{"reason": "replication"}, 2)
}
