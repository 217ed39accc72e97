package rules

import "testing"

// TestDecisiveOp checks DecisiveOp against the slice it stands for, over
// the corpus's verdicts with and without verification (whose Verify
// verdicts count every effect, the others only the certain ones).
func TestDecisiveOp(t *testing.T) {
	var verify, certain, none int
	for _, opts := range []EngineOptions{{CacheBytes: -1}, {CacheBytes: -1, Verify: true}} {
		eng := NewEngine(corpusPolicy(t), opts)
		eng.SetCatalog("appdb", corpusCatalog(t))
		for _, row := range loadCorpus(t) {
			s := NewSession(Identity{User: "postgres", Database: "appdb"})
			for _, v := range eng.Judge(s, row.sql).Statements {
				want := OpNone
				for _, ef := range v.Decisive() {
					want = max(want, ef.Op)
				}
				if got := v.DecisiveOp(); got != want {
					t.Errorf("%s %q: DecisiveOp %v, the Decisive effects' most severe %v", row.id, v.Text, got, want)
				}
				switch {
				case v.Action == Verify:
					verify++
				case want != OpNone:
					certain++
				default:
					none++
				}
			}
		}
	}
	// Each kind of verdict is among those compared.
	if verify == 0 || certain == 0 || none == 0 {
		t.Fatalf("verdicts compared: %d Verify, %d with a certain effect, %d with none; want some of each", verify, certain, none)
	}
}
