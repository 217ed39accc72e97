package rules

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
	"unsafe"
)

// cache maps (session state key, text) to a Result. It is bounded in
// bytes and evicts with the CLOCK (second chance) policy, so that a hit
// only sets a flag, and that only when it is clear.
//
// A look-up writes no memory that other look-ups share: every statement
// of every event loop looks up here, most of them the same few keys, and
// a shared write (a read lock's reader count, a hit counter) would move
// that cache line between the processors at every statement. So each
// shard's entries are in a table its readers read without a lock (see
// table; a read-locked map took 15 ns per look-up alone and 58 with two
// processors: bench/README.md, "Nothing shared on a statement's path");
// the shard's lock is its writers', which keep the table, the CLOCK order
// and the byte count.
//
// A look-up hashes the key once: the hash picks the shard and the slot,
// and the entry holds the hash and the key it was stored under, which a
// hit checks. Two keys with the same hash share an entry: the second is
// not cached.
type cache struct {
	shards   [cacheShards]cacheShard
	maxShard int
}

const cacheShards = 64

type centry struct {
	hash        uint64
	state, text string // state is interned (internState)
	r           *Result
	ref         atomic.Bool
	size        int
}

// cacheShard keeps what its readers read and what its writers write on
// cache lines of their own, and apart from the next shard's: a put must not
// take from the processors the line that every look-up in its neighbour
// reads.
type cacheShard struct {
	t atomic.Pointer[table] // read without a lock
	_ [64 - unsafe.Sizeof(atomic.Pointer[table]{})%64]byte
	shardWriters
	_ [64 - unsafe.Sizeof(shardWriters{})%64]byte
}

type shardWriters struct {
	mu    sync.Mutex // the writers'
	order []uint64   // insertion order, the CLOCK hand at head
	head  int
	bytes int
	live  int // entries in the table
	used  int // its slots that are not empty: entries and tombstones
}

// table is a shard's entries as its readers see them: slots probed in
// turn from the one the hash picks, until the entry with the hash or an
// empty slot. It was a sync.Map, whose look-up boxes the hash in an
// interface and hashes and compares it through the interface's type:
// a third of what a cache hit cost (bench/README.md, "Optimisations").
//
// Writers, holding the shard's lock, fill an empty slot or empty a full
// one by storing a tombstone in it (an empty slot would end the probes
// of the entries stored past it). Half the slots or more stay empty, so
// a probe ends; when the slots in use would pass half, the writer builds
// a new table of the live entries and publishes it. A reader of the old
// table, or one that loaded an entry just evicted, gets an entry that is
// still right for its key: entries never change but for their flag, and
// the keys hold every version the decision depends on.
type table struct {
	mask  uint64
	slots []atomic.Pointer[centry]
}

// first is the slot h's probe starts from. It is taken from the hash's
// high half: the low bits pick the shard (cache.hash), so within a shard
// they are all alike, and starting from them would pile every entry of
// the shard onto the same few slots.
func (t *table) first(h uint64) uint64 { return h >> 32 & t.mask }

// tombstone fills the slot of an evicted entry.
var tombstone = new(centry)

const minTableSlots = 16

func newTable(slots int) *table {
	n := minTableSlots
	for n < slots {
		n *= 2
	}
	return &table{mask: uint64(n - 1), slots: make([]atomic.Pointer[centry], n)}
}

func newCache(maxBytes int) *cache {
	return &cache{maxShard: maxBytes / cacheShards}
}

// load returns the shard's entry stored under h, or nil.
func (sh *cacheShard) load(h uint64) *centry {
	t := sh.t.Load()
	if t == nil {
		return nil
	}
	for i := t.first(h); ; i = (i + 1) & t.mask {
		e := t.slots[i].Load()
		if e == nil {
			return nil
		}
		if e.hash == h && e != tombstone {
			return e
		}
	}
}

// store adds e to the shard, which holds no entry under e.hash. The
// caller holds sh.mu.
func (sh *cacheShard) store(e *centry) {
	t := sh.t.Load()
	if t == nil || 2*(sh.used+1) > len(t.slots) {
		// Room for the live entries twice over before the next rebuild.
		nt := newTable(4 * (sh.live + 1))
		if t != nil {
			for i := range t.slots {
				if old := t.slots[i].Load(); old != nil && old != tombstone {
					nt.slots[nt.free(old.hash)].Store(old)
				}
			}
		}
		sh.t.Store(nt)
		t, sh.used = nt, sh.live
	}
	t.slots[t.free(e.hash)].Store(e)
	sh.live++
	sh.used++
}

// free returns the first empty slot of h's probe.
func (t *table) free(h uint64) uint64 {
	i := t.first(h)
	for t.slots[i].Load() != nil {
		i = (i + 1) & t.mask
	}
	return i
}

// remove evicts the entry stored under h. The caller holds sh.mu.
func (sh *cacheShard) remove(h uint64) {
	t := sh.t.Load()
	for i := t.first(h); ; i = (i + 1) & t.mask {
		e := t.slots[i].Load()
		if e == nil {
			return
		}
		if e.hash == h && e != tombstone {
			t.slots[i].Store(tombstone)
			sh.live--
			return
		}
	}
}

// hashSeed seeds the hashes of the caches and of state keys.
var hashSeed = maphash.MakeSeed()

// stateKey is the part of a cache key that depends on the session
// (Session.stateKey), with its hash. A session's key changes only when its
// state does, so its hash is computed then rather than at every look-up;
// and it is interned, so that sessions in the same state hold the same
// string, which a hit then compares by its pointer.
type stateKey struct {
	s string
	h uint64
}

// states interns state keys; see internState.
var states struct {
	sync.Mutex
	m map[string]stateKey
}

// maxStates bounds the interned state keys. Sessions seldom differ in
// more than their user and search_path; when they do, the table starts
// again (interning only saves work: keys compare by value all the same).
const maxStates = 4096

// internState returns the stateKey of k, sharing its string with every
// other session whose key is k.
func internState(k string) stateKey {
	states.Lock()
	defer states.Unlock()
	if sk, ok := states.m[k]; ok {
		return sk
	}
	if states.m == nil || len(states.m) >= maxStates {
		states.m = make(map[string]stateKey)
	}
	sk := stateKey{s: k, h: maphash.String(hashSeed, k)}
	states.m[k] = sk
	return sk
}

// hash is the key's hash, and sh its shard.
func (c *cache) hash(state stateKey, text string) (h uint64, sh *cacheShard) {
	h = maphash.String(hashSeed, text) ^ state.h*0x9e3779b97f4a7c15
	return h, &c.shards[h%cacheShards]
}

func (c *cache) get(state stateKey, text string) *Result {
	h, sh := c.hash(state, text)
	e := sh.load(h)
	// An entry is never changed once stored, but for its flag.
	if e == nil || e.text != text || e.state != state.s {
		return nil
	}
	if !e.ref.Load() {
		e.ref.Store(true)
	}
	return e.r
}

// getBytes is get for a text the caller holds as bytes (the fast path's
// normalized key). get keeps nothing of the text, so the bytes need not be
// copied into a string.
func (c *cache) getBytes(state stateKey, text []byte) *Result {
	return c.get(state, unsafe.String(unsafe.SliceData(text), len(text)))
}

// resultSize estimates the memory a cached result holds.
func resultSize(r *Result) int {
	n := 64
	for _, v := range r.Statements {
		n += 200 + len(v.Text) + len(v.Sentence) + len(v.Rule)
		for _, ef := range v.Effects {
			n += 96 + len(ef.What) + len(ef.Where) + len(ef.Object.Name) + len(ef.Object.Schema)
		}
		for _, ch := range v.Changes {
			n += 96 + len(ch.Text) + len(ch.Relation.Name) + len(ch.Relation.Schema)
			for _, p := range ch.SearchPath {
				n += 16 + len(p)
			}
			for _, o := range ch.Objects {
				n += 64 + len(o.Name) + len(o.Schema)
			}
		}
	}
	return n
}

func (c *cache) put(state stateKey, text string, r *Result) {
	size := 64 + len(state.s) + len(text) + resultSize(r)
	if size > c.maxShard/4 {
		return // too big to be worth a slot
	}
	h, sh := c.hash(state, text)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.load(h) != nil {
		return // this key, or another with its hash
	}
	for sh.bytes+size > c.maxShard && sh.head < len(sh.order) {
		victim := sh.order[sh.head]
		sh.head++
		e := sh.load(victim)
		if e == nil {
			continue
		}
		if e.ref.Load() {
			e.ref.Store(false)
			sh.order = append(sh.order, victim)
			continue
		}
		sh.remove(victim)
		sh.bytes -= e.size
	}
	if sh.head > 1024 && sh.head > len(sh.order)/2 {
		sh.order = append([]uint64(nil), sh.order[sh.head:]...)
		sh.head = 0
	}
	sh.store(&centry{hash: h, state: state.s, text: text, r: r, size: size})
	sh.order = append(sh.order, h)
	sh.bytes += size
}
