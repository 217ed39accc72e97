package rules

import (
	"os"
	"testing"
)

func TestJudgeScript(t *testing.T) {
	src, err := os.ReadFile("testdata/scripts/migration.sql")
	if err != nil {
		t.Fatal(err)
	}
	eng := testEngine(t, defaultProtect)
	s := NewSession(Identity{User: "migrator", Database: "app"})
	s.SetSearchPath([]string{"$user", "public"})
	r := eng.JudgeScript(s, string(src))
	if r.Action != Block {
		t.Fatalf("script: %s", r.Action)
	}
	var blocked []*Verdict
	for _, v := range r.Statements {
		if v.Action != Allow {
			blocked = append(blocked, v)
		}
	}
	if len(blocked) != 1 {
		t.Fatalf("want one finding, got %d", len(blocked))
	}
	v := blocked[0]
	if v.Line != 6 || v.Col != 3 || v.Text != "ALTER TABLE invoices\n    DROP COLUMN paid" {
		t.Errorf("finding at %d:%d %q", v.Line, v.Col, v.Text)
	}
	want := "ALTER TABLE billing.invoices DROP COLUMN paid: table is protected by billing.*; rule default-destructive"
	if v.Sentence != want {
		t.Errorf("sentence %q, want %q", v.Sentence, want)
	}
	// The session itself is not changed by a script run.
	if p, _ := s.SearchPath(); len(p) != 2 {
		t.Errorf("session path changed: %v", p)
	}
}
