package rules

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

func decodePolicy(t *testing.T, path string) (PolicyConfig, error) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cfg PolicyConfig
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	return cfg, dec.Decode(&cfg)
}

// TestPolicyFiles compiles every testdata/policy file: good*.yaml must
// compile, bad-*.yaml must fail with the text in the matching .err file.
func TestPolicyFiles(t *testing.T) {
	files, _ := filepath.Glob("testdata/policy/*.yaml")
	if len(files) < 5 {
		t.Fatalf("policy fixtures missing: %v", files)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			cfg, err := decodePolicy(t, f)
			if err == nil {
				_, err = Compile(cfg)
			}
			if strings.HasPrefix(filepath.Base(f), "good") {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			want, rerr := os.ReadFile(strings.TrimSuffix(f, ".yaml") + ".err")
			if rerr != nil {
				t.Fatal(rerr)
			}
			if err == nil {
				t.Fatalf("no error, want %q", want)
			}
			if !strings.Contains(err.Error(), strings.TrimSpace(string(want))) {
				t.Fatalf("error %q, want %q", err, strings.TrimSpace(string(want)))
			}
		})
	}
}

func TestRuleMatching(t *testing.T) {
	cfg, err := decodePolicy(t, "testdata/policy/good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p, err := Compile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	eng := NewEngine(p, EngineOptions{})
	cases := []struct {
		id         Identity
		sql        string
		want       Action
		rule       string
		inSentence string
	}{
		{Identity{User: "migrator", Application: "goose"}, "DROP TABLE billing.invoices", Hold, "migrations-hold", "table is protected by billing.*"},
		{Identity{User: "deploy_eu", Application: "migrate"}, "TRUNCATE users", Hold, "migrations-hold", ""},
		{Identity{User: "migrator", Application: "psql"}, "DROP TABLE billing.invoices", Block, RuleDefaultDestructive, "DROP TABLE billing.invoices: table is protected by billing.*; rule default-destructive"},
		{Identity{User: "bob", Database: "app1", Client: netip.MustParseAddr("10.1.2.3")}, "TRUNCATE users", Log, "office-log-truncate", ""},
		{Identity{User: "bob", Database: "app1", Client: netip.MustParseAddr("::ffff:10.1.2.3")}, "DELETE FROM users", Log, "office-log-truncate", ""},
		{Identity{User: "bob", Database: "app1", Client: netip.MustParseAddr("192.168.1.1")}, "TRUNCATE users", Block, RuleDefaultDestructive, ""},
		{Identity{User: "bob", Database: "other", Client: netip.MustParseAddr("10.1.2.3")}, "TRUNCATE users", Block, RuleDefaultDestructive, ""},
		{Identity{User: "etl"}, "UPDATE users SET note = ''", Allow, "etl-allow-update", ""},
		{Identity{User: "etl"}, "DELETE FROM users", Block, RuleDefaultDestructive, ""},
		{Identity{User: "etl"}, "DO $$BEGIN EXECUTE x; END$$", Block, RuleDefaultOpaque, ""},
		{Identity{User: "migrator", Application: "goose"}, "SET standard_conforming_strings = off", Hold, "migrations-hold", ""},
		// The strongest action across statements decides, and says which.
		{Identity{User: "etl"}, "UPDATE users SET note = ''; DROP TABLE users; SELECT 1", Block, RuleDefaultDestructive, "DROP TABLE"},
	}
	for _, c := range cases {
		s := NewSession(c.id)
		s.SetSearchPath([]string{"$user", "public"})
		r := eng.Judge(s, c.sql)
		d := r.Decision()
		if r.Action != c.want || d == nil || d.Rule != c.rule || !strings.Contains(d.Sentence, c.inSentence) {
			t.Errorf("%+v %q: got %s rule %q sentence %q; want %s rule %q containing %q", c.id, c.sql, r.Action, d.Rule, d.Sentence, c.want, c.rule, c.inSentence)
		}
	}
}

func TestPolicyReload(t *testing.T) {
	p1, _ := Compile(PolicyConfig{Protect: []string{"public.users"}})
	p2, _ := Compile(PolicyConfig{Protect: []string{"public.orders"}})
	eng := NewEngine(p1, EngineOptions{})
	s := knownSession("app")
	if eng.Judge(s, "DROP TABLE users").Action != Block || eng.Judge(s, "DROP TABLE orders").Action != Allow {
		t.Fatal("policy 1 wrong")
	}
	eng.SetPolicy(p2)
	if eng.Judge(s, "DROP TABLE users").Action != Allow || eng.Judge(s, "DROP TABLE orders").Action != Block {
		t.Fatal("reloaded policy not applied to the next statement (stale cache?)")
	}
}

func TestGlob(t *testing.T) {
	for _, c := range []struct {
		pat, s string
		ok     bool
	}{
		{"*", "", true}, {"*", "abc", true}, {"a*", "abc", true}, {"*c", "abc", true}, {"a*c", "abbbc", true},
		{"a*b*c", "axbyc", true}, {"users", "users", true}, {"users", "users2", false}, {"users", "Users", false},
		{"u*s", "users_archive", false}, {"*_old", "billing_old", true},
	} {
		if glob(c.pat, c.s) != c.ok {
			t.Errorf("glob(%q, %q) != %v", c.pat, c.s, c.ok)
		}
	}
}
