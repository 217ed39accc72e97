package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/pgmoat/pgmoat/config"
)

// TestLongStatementIsCut records a refused 8 MiB statement, as a hostile
// client would send to fill the audit disk: its line stays within
// audit.max_statement_bytes (plus the other fields), and records the whole
// text's length and SHA-256, so an auditor can still match it. Before the
// bound, the line carried the whole statement.
func TestLongStatementIsCut(t *testing.T) {
	cfg := testConfig(t)
	l, _ := openTest(t, cfg, Options{})
	// "é" is two bytes: the cut falls inside one unless it is careful.
	stmt := "DROP TABLE users; -- " + strings.Repeat("é", 4<<20)
	objects := make([]string, 20000)
	for i := range objects {
		objects[i] = fmt.Sprintf("billing.invoices_%05d", i)
	}
	record(t, l, Event{Kind: Decision, Statement: stmt, Decision: "block", Objects: objects,
		Reason: "syntax error at or near " + strings.Repeat("x", 1<<20)})
	record(t, l, Event{Kind: Decision, Statement: "DROP TABLE users", Decision: "block", Objects: objects[:2]})
	l.Close()

	lines := readLines(t, cfg.Path)
	if n := len(lines[0]); n > 16<<10+16<<10+4<<10+1024 {
		t.Fatalf("the line of an %d-byte statement is %d bytes", len(stmt), n)
	}
	evs, err := ReadFile(cfg.Path)
	if err != nil {
		t.Fatal(err)
	}
	ev := evs[0]
	sum := sha256.Sum256([]byte(stmt))
	switch {
	case ev.StatementBytes != len(stmt) || ev.StatementSHA256 != hex.EncodeToString(sum[:]):
		t.Errorf("statement_bytes %d, statement_sha256 %s; want %d and the text's SHA-256", ev.StatementBytes, ev.StatementSHA256, len(stmt))
	case !strings.HasPrefix(stmt, ev.Statement) || len(ev.Statement) > 16<<10 || len(ev.Statement) < 16<<10-4:
		t.Errorf("statement is not the text's first 16 KiB: %d bytes", len(ev.Statement))
	case !utf8.ValidString(ev.Statement):
		t.Error("the cut statement ends inside a UTF-8 sequence")
	case ev.ObjectsTotal != len(objects) || len(ev.Objects) == 0 || len(ev.Objects) >= len(objects):
		t.Errorf("objects: %d kept, objects_total %d; want some of %d and the total", len(ev.Objects), ev.ObjectsTotal, len(objects))
	case len(ev.Reason) > 4<<10 || !strings.HasSuffix(ev.Reason, "…"):
		t.Errorf("reason of %d bytes, want at most 4 KiB ending with …", len(ev.Reason))
	}
	// A short statement is recorded whole, without length or hash.
	if short := evs[1]; short.Statement != "DROP TABLE users" || short.StatementBytes != 0 || short.StatementSHA256 != "" || short.ObjectsTotal != 0 || len(short.Objects) != 2 {
		t.Errorf("short statement recorded as %+v", short)
	}
	if line := lines[1]; strings.Contains(line, "statement_bytes") || strings.Contains(line, "statement_sha256") {
		t.Errorf("short statement's line has length or hash fields: %s", line)
	}
	mustVerify(t, cfg.Path)
}

// TestMaxStatementBytesReloads: the bound follows audit.max_statement_bytes
// and a reload; with audit.redact, the cut applies to the normalized text,
// and the hash is that text's (a hash of the raw text could give away a
// short literal).
func TestMaxStatementBytesReloads(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxStatementBytes = 1 << 10
	l, _ := openTest(t, cfg, Options{})
	stmt := "SELECT '" + strings.Repeat("s3cret", 1000) + "', " + strings.Repeat("1, ", 1000) + "2"
	record(t, l, Event{Kind: Decision, Statement: stmt})
	cfg.MaxStatementBytes = 64 << 10
	if err := l.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	record(t, l, Event{Kind: Decision, Statement: stmt})
	cfg.MaxStatementBytes = 256
	cfg.Redact = true
	if err := l.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	record(t, l, Event{Kind: Decision, Statement: stmt})
	huge := "SELECT '" + strings.Repeat("x", 2<<20) + "'"
	record(t, l, Event{Kind: Decision, Statement: huge})
	l.Close()
	evs, err := ReadFile(cfg.Path)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs[0].Statement) != 1<<10 || evs[0].StatementBytes != len(stmt) {
		t.Errorf("1 KiB bound: statement %d bytes, statement_bytes %d", len(evs[0].Statement), evs[0].StatementBytes)
	}
	if evs[1].Statement != stmt || evs[1].StatementBytes != 0 {
		t.Errorf("64 KiB bound: statement %d bytes, statement_bytes %d; want it whole", len(evs[1].Statement), evs[1].StatementBytes)
	}
	normalized := redact(stmt)
	sum := sha256.Sum256([]byte(normalized))
	if r := evs[2]; strings.Contains(r.Statement, "s3cret") || !strings.HasPrefix(normalized, r.Statement) ||
		r.StatementBytes != len(normalized) || r.StatementSHA256 != hex.EncodeToString(sum[:]) {
		t.Errorf("redacted and cut: %+v, want the normalized text's prefix, length and hash", r)
	}
	if r := evs[3]; strings.Contains(r.Statement, "xxx") || !strings.Contains(r.Statement, fmt.Sprint(len(huge))) {
		t.Errorf("a statement too long to normalize is recorded as %q", r.Statement)
	}
}

func TestMaxStatementBytesValidated(t *testing.T) {
	_, err := config.Load("pgmoat.yaml", []byte("audit: {max_statement_bytes: 100}\n"))
	if err == nil || !strings.Contains(err.Error(), "audit.max_statement_bytes") {
		t.Errorf("err = %v, want one naming audit.max_statement_bytes", err)
	}
	cfg, err := config.Load("pgmoat.yaml", []byte("{}\n"))
	if err != nil || cfg.Audit.MaxStatementBytes != 16<<10 {
		t.Errorf("default audit.max_statement_bytes = %v (%v), want 16 KiB", cfg.Audit.MaxStatementBytes, err)
	}
}
