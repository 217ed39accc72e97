package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
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
	// One check run over a file per row: the binary starts once.
	rows := loadCorpus(t)
	files := make([]string, len(rows))
	for i, row := range rows {
		files[i] = filepath.Join(dir, row.id+".sql")
		if err := os.WriteFile(files[i], []byte(row.sql), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, moattest.Binary(t), append([]string{"check", "--config", cfg, "--schema", schema,
		"--user", c.Superuser, "--database", db, "--search-path", "$user,public", "--migration-format", "plain", "--format", "json"}, files...)...)
	out, err := cmd.Output()
	if code := cmd.ProcessState.ExitCode(); code != 0 && code != 1 {
		t.Fatalf("pgmoat check: %v\n%s", err, out)
	}
	var doc struct {
		Findings []struct {
			File, Decision, Reason string
		} `json:"findings"`
		Summary struct{ Files int } `json:"summary"`
	}
	if err := json.Unmarshal(out, &doc); err != nil || doc.Summary.Files != len(rows) {
		t.Fatalf("check's JSON (%v, %d files):\n%s", err, doc.Summary.Files, out)
	}
	blocked := map[string]string{}
	for _, f := range doc.Findings {
		if f.Decision == "block" || f.Decision == "hold" {
			blocked[f.File] = f.Reason
		}
	}
	for i, row := range rows {
		want := row.expected
		if corpusExceptions[row.id] != "" {
			want = "allow" // the proxy forwards it and the server refuses it
		}
		got := "allow"
		if _, ok := blocked[files[i]]; ok {
			got = "block"
		}
		if got != want {
			t.Errorf("%s [%s]: check says %s, the proxy %s\nSQL: %s\n%s", row.id, row.category, got, want, row.sql, blocked[files[i]])
		}
	}
}
