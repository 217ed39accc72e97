package e2e

import (
	"context"
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

// TestCheckAgreesWithProxyOnCorpus runs every row of the evasion corpus
// through `pgmoat check --schema` with the schema pg_dump writes for the
// corpus database, in the session the live proxy has in
// TestEvasionCorpus (the superuser, search_path "$user", public), and
// requires check's verdict to be the proxy's: the row's expectation, or
// for the rows in corpusExceptions, what the proxy does there (it lets
// the server refuse them).
func TestCheckAgreesWithProxyOnCorpus(t *testing.T) {
	c := pgtest.Get(t)
	schemaSQL, err := os.ReadFile(filepath.Join(corpusDir, "schema.sql"))
	if err != nil {
		t.Fatal(err)
	}
	db := c.NewDatabase(t)
	cdb := newCorpusDB(t, c, db, string(schemaSQL))
	cdb.rebuild(t)
	dump, errOut, code := clients.PgTool(t, nil, "pg_dump", "--schema-only", "-d", c.SuperConnString(db))
	if code != 0 {
		t.Fatalf("pg_dump --schema-only: exit %d\n%s", code, errOut)
	}
	dir := t.TempDir()
	schema := filepath.Join(dir, "schema.sql")
	cfg := filepath.Join(dir, "pgmoat.yaml")
	if err := os.WriteFile(schema, dump, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, []byte(corpusPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	bin := moattest.Binary(t)
	for _, row := range loadCorpus(t) {
		want := row.expected
		if corpusExceptions[row.id] != "" {
			want = "allow" // the proxy forwards it and the server refuses it
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		cmd := exec.CommandContext(ctx, bin, "check", "--config", cfg, "--schema", schema,
			"--user", c.Superuser, "--database", db, "--search-path", "$user,public", "-")
		cmd.Stdin = strings.NewReader(row.sql)
		out, _ := cmd.CombinedOutput()
		cancel()
		got := "?"
		switch cmd.ProcessState.ExitCode() {
		case 0:
			got = "allow"
		case 1:
			got = "block"
		}
		if got != want {
			t.Errorf("%s [%s]: check says %s, the proxy %s\nSQL: %s\n%s", row.id, row.category, got, want, row.sql, out)
		}
	}
}
