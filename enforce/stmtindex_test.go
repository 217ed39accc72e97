package enforce

import (
	"fmt"
	"strings"
	"testing"
	"unsafe"
)

func TestStmtIndex(t *testing.T) {
	var ix stmtIndex
	mk := func(name string) *parsedStmt {
		ps := new(parsedStmt)
		ps.set(name, "SELECT "+name, 1)
		return ps
	}
	long := strings.Repeat("stmtcache_", 5) // longer than short
	var made []*parsedStmt
	for _, name := range []string{"", "P0_1", "P0_2", long, long + "x", "P0_1x"} {
		ps := mk(name)
		made = append(made, ps)
		ix.add(ps)
	}
	for _, ps := range made {
		if got := ix.find([]byte(ps.name)); got != ps {
			t.Errorf("find(%q) = %v, want the statement added", ps.name, got)
		}
	}
	for _, name := range []string{"P0_", "P0_3", long[:len(long)-1], "p0_1", "P0_1\x00"} {
		if got := ix.find([]byte(name)); got != nil {
			t.Errorf("find(%q) = %q, want nil", name, got.name)
		}
	}

	// A new statement of a name the index holds takes its slot.
	again := mk("P0_2")
	ix.add(again)
	if got := ix.find([]byte("P0_2")); got != again {
		t.Errorf("after a second Parse of P0_2, find returned the first")
	}
	n := 0
	for _, ps := range ix.ps {
		if ps != nil && ps.name == "P0_2" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("P0_2 is in the index %d times, want 1", n)
	}

	// More statements than slots: the oldest go, and the rest are found.
	for i := range 2 * stmtIndexSize {
		ix.add(mk(fmt.Sprintf("S_%d", i)))
	}
	for i := range 2 * stmtIndexSize {
		name := fmt.Sprintf("S_%d", i)
		got := ix.find([]byte(name))
		if i < stmtIndexSize && got != nil {
			t.Errorf("find(%q) found an evicted statement", name)
		}
		if i >= stmtIndexSize && (got == nil || got.name != name) {
			t.Errorf("find(%q) = %v, want it", name, got)
		}
	}

	// Equal hashes are told apart by name.
	a, b := mk("a"), mk("b")
	ix.clear()
	ix.hash[0], ix.ps[0] = stmtHash([]byte("b")), a
	ix.hash[1], ix.ps[1] = stmtHash([]byte("b")), b
	if got := ix.find([]byte("b")); got != b {
		t.Errorf("with a colliding hash, find(b) = %v", got)
	}

	ix.clear()
	if got := ix.find([]byte("b")); got != nil {
		t.Errorf("after clear, find(b) = %v", got)
	}
}

func TestParsedStmtLayout(t *testing.T) {
	// A Bind reads name, short, policy, res and verify: they fill the
	// first cache line of an object that starts on one.
	var ps parsedStmt
	if got := unsafe.Sizeof(ps); got != 128 {
		t.Errorf("parsedStmt is %d bytes, want 128 (a size class aligned to cache lines)", got)
	}
	if got := unsafe.Offsetof(ps.verify); got+8 > 64 {
		t.Errorf("parsedStmt.verify ends at byte %d, past the first cache line", got+8)
	}
}
