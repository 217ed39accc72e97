package main

import "testing"

// TestPlanAlternates checks what makes the medians comparable: every
// target runs every cell once per round, and no target keeps the same
// position in the order.
func TestPlanAlternates(t *testing.T) {
	ts := []target{{Name: "direct"}, {Name: "pgbouncer"}, {Name: "pgmoat"}}
	cs := cells([]string{"select", "tpcb"}, []string{"simple", "prepared"}, []int{1, 8, 32})
	if len(cs) != 12 {
		t.Fatalf("%d cells, want 12", len(cs))
	}
	const rounds = 3
	p := plan(rounds, cs, ts)
	if len(p) != rounds*len(cs)*len(ts) {
		t.Fatalf("%d runs, want %d", len(p), rounds*len(cs)*len(ts))
	}
	type key struct {
		round  int
		c      cell
		target string
	}
	seen := map[key]int{}
	position := map[string][3]int{} // target → how often first, second, third
	for i, r := range p {
		seen[key{r.Round, r.Cell, r.Target.Name}]++
		pos := position[r.Target.Name]
		pos[i%len(ts)]++
		position[r.Target.Name] = pos
		if i%len(ts) != 0 && p[i-1].Cell != r.Cell {
			t.Fatalf("run %d: a cell's targets are not run back to back", i)
		}
	}
	for _, r := range p {
		if n := seen[key{r.Round, r.Cell, r.Target.Name}]; n != 1 {
			t.Errorf("round %d %v %s runs %d times", r.Round, r.Cell, r.Target.Name, n)
		}
	}
	for name, pos := range position {
		if pos[0] != pos[1] || pos[1] != pos[2] {
			t.Errorf("%s is first/second/third %v times; want equal", name, pos)
		}
	}
}
