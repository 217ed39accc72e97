package rules

import (
	"bufio"
	"os"
	"strings"
	"testing"
)

type corpusRow struct {
	id, expected, category, sql string
}

// unescapeCorpus undoes the corpus's escapes: only \n \t \r \f.
func unescapeCorpus(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			switch s[i+1] {
			case 'n':
				b.WriteByte('\n')
				i++
				continue
			case 't':
				b.WriteByte('\t')
				i++
				continue
			case 'r':
				b.WriteByte('\r')
				i++
				continue
			case 'f':
				b.WriteByte('\f')
				i++
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func loadCorpus(t testing.TB) []corpusRow {
	t.Helper()
	f, err := os.Open("../testdata/corpus/evasion.tsv")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var rows []corpusRow
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	first := true
	for sc.Scan() {
		if first {
			first = false
			continue
		}
		parts := strings.SplitN(sc.Text(), "\t", 4)
		if len(parts) != 4 {
			t.Fatalf("bad corpus line %q", sc.Text())
		}
		rows = append(rows, corpusRow{parts[0], parts[1], parts[2], unescapeCorpus(parts[3])})
	}
	if len(rows) == 0 {
		t.Fatal("empty corpus")
	}
	return rows
}

func corpusPolicy(t testing.TB) *Policy {
	t.Helper()
	p, err := Compile(PolicyConfig{Protect: []string{"public.users", "billing.*"}})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func corpusCatalog(t testing.TB) *Catalog {
	t.Helper()
	ddl, err := os.ReadFile("../testdata/corpus/schema.sql")
	if err != nil {
		t.Fatal(err)
	}
	c, err := CatalogFromSQL(string(ddl))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestCorpus runs the public evasion corpus through analysis and the
// default policy protecting public.users and billing.*, with the catalog
// of the corpus database and a search_path pgmoat does not know (the
// proxy's state at session start), and requires every expected outcome.
func TestCorpus(t *testing.T) {
	eng := NewEngine(corpusPolicy(t), EngineOptions{CacheBytes: -1})
	eng.SetCatalog("appdb", corpusCatalog(t))
	for _, row := range loadCorpus(t) {
		t.Run(row.id, func(t *testing.T) {
			s := NewSession(Identity{User: "postgres", Database: "appdb"})
			r := eng.Judge(s, row.sql)
			got := "allow"
			if r.Action == Block || r.Action == Hold {
				got = "block"
			}
			if got != row.expected {
				t.Errorf("%s [%s] %q: got %s, want %s", row.id, row.category, row.sql, r.Action, row.expected)
				for _, v := range r.Statements {
					t.Logf("  %q → %s %s effects=%+v", v.Text, v.Action, v.Sentence, v.Effects)
				}
			}
			if got == "block" && (r.Decision() == nil || r.Decision().Sentence == "" || r.Decision().Rule == "") {
				t.Errorf("%s: block without rule or sentence", row.id)
			}
		})
	}
}

// TestCorpusWithoutCatalog checks that without a catalog pgmoat only gets
// stricter: every block row still blocks.
func TestCorpusWithoutCatalog(t *testing.T) {
	eng := NewEngine(corpusPolicy(t), EngineOptions{CacheBytes: -1})
	for _, row := range loadCorpus(t) {
		if row.expected != "block" {
			continue
		}
		s := NewSession(Identity{User: "postgres", Database: "appdb"})
		if r := eng.Judge(s, row.sql); r.Action != Block {
			t.Errorf("%s %q: got %s without a catalog, want block", row.id, row.sql, r.Action)
		}
	}
}

// TestCorpusNothingProtected: a policy that protects nothing allows all.
func TestCorpusNothingProtected(t *testing.T) {
	p, err := Compile(PolicyConfig{})
	if err != nil {
		t.Fatal(err)
	}
	eng := NewEngine(p, EngineOptions{})
	for _, row := range loadCorpus(t) {
		s := NewSession(Identity{User: "postgres", Database: "appdb"})
		if r := eng.Judge(s, row.sql); r.Action != Allow {
			t.Errorf("%s: got %s with nothing protected", row.id, r.Action)
		}
	}
}
