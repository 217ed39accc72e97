package enforce

import (
	"hash/maphash"

	"github.com/pgmoat/pgmoat/rules"
)

// parsedStmt is a statement the client prepared with Parse. A Bind after
// a policy reload judges its text again: clients keep prepared statements
// for the life of a connection, and a tightened policy must reach them.
//
// What a Bind reads (the name, and the judgement it takes) fills the
// first 64 bytes, and the struct is padded to 128, a size class whose
// objects start on a cache line: a Bind reads one line of it.
type parsedStmt struct {
	name string // as the client named it ("" for the unnamed statement)
	// short holds name when it fits, so that a Bind compares names
	// without reading the string's bytes from elsewhere in memory.
	short  [24]byte
	policy uint64        // version of the policy that allowed it
	res    *rules.Result // its judgement, when executing it changes session state
	verify *rules.Result // its judgement, when executing it must be guarded

	text string
	_    [48]byte
}

// set records a Parse of name with text, allowed under policy version pv.
func (ps *parsedStmt) set(name, text string, pv uint64) {
	ps.name, ps.text, ps.policy, ps.res, ps.verify = name, text, pv, nil, nil
	copy(ps.short[:], name) // meaningful only when it fits: named looks at len(name) first
}

// named reports whether the statement is the one a Bind names.
func (ps *parsedStmt) named(name []byte) bool {
	if len(name) != len(ps.name) {
		return false
	}
	if len(name) <= len(ps.short) {
		return string(name) == string(ps.short[:len(name)])
	}
	return string(name) == ps.name
}

// stmtIndex finds the statements a session binds without a map look-up.
// A client of the extended protocol binds the same few prepared statements
// in turn (pgbench's seven, a driver's statement cache), and with hundreds
// of sessions each one's state has left the caches between its messages:
// a look-up in a Go map reads the map, its group of slots and the key's
// bytes before the statement itself, one cache miss after another. Here a
// Bind reads eight hashes, one pointer and the statement, whose name it
// holds. The map (sessionState.stmts) stays the record; every change to it
// updates the index or clears it.
type stmtIndex struct {
	hash [stmtIndexSize]uint32
	ps   [stmtIndexSize]*parsedStmt
	next uint8 // the slot the next statement takes, round robin
}

const stmtIndexSize = 8

// stmtSeed seeds the index's hash: per process, so that no client can
// choose names that collide (a collision would only cost a map look-up;
// names are always compared).
var stmtSeed = maphash.MakeSeed()

func stmtHash(name []byte) uint32 { return uint32(maphash.Bytes(stmtSeed, name)) }

// stmtHashString is stmtHash of a string (maphash hashes a string and its
// bytes alike).
func stmtHashString(name string) uint32 { return uint32(maphash.String(stmtSeed, name)) }

// find returns the indexed statement named name, or nil.
func (ix *stmtIndex) find(name []byte) *parsedStmt {
	h := stmtHash(name)
	for i := range ix.hash {
		if ix.hash[i] == h {
			if ps := ix.ps[i]; ps != nil && ps.named(name) {
				return ps
			}
		}
	}
	return nil
}

// add indexes ps, in place of an earlier statement of the same name.
func (ix *stmtIndex) add(ps *parsedStmt) {
	h := stmtHashString(ps.name)
	for i := range ix.hash {
		if ix.hash[i] == h && ix.ps[i] != nil && ix.ps[i].name == ps.name {
			ix.ps[i] = ps
			return
		}
	}
	i := ix.next % stmtIndexSize
	ix.hash[i], ix.ps[i] = h, ps
	ix.next = i + 1
}

// clear forgets every statement.
func (ix *stmtIndex) clear() { *ix = stmtIndex{} }
