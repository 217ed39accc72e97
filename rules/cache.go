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
// shard's entries are in a sync.Map, whose Load only reads (11.5 ns
// alone, 5.8 per look-up with two processors, where a read-locked map
// took 15 and 58: bench/README.md, "Nothing shared on a statement's
// path"); the shard's lock is its writers', which keep the CLOCK order
// and the byte count.
//
// A look-up hashes the key once: the hash picks the shard and is the
// shard's map key, and the entry holds the key it was stored under, which
// a hit checks. (Keyed by the strings, the map would hash them again, and
// compare both on a hit.) Two keys with the same hash share a slot: the
// second is not cached.
type cache struct {
	shards   [cacheShards]cacheShard
	maxShard int
}

const cacheShards = 64

type centry struct {
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
	m sync.Map // uint64 hash -> *centry; read without a lock
	_ [64 - unsafe.Sizeof(sync.Map{})%64]byte
	shardWriters
	_ [64 - unsafe.Sizeof(shardWriters{})%64]byte
}

type shardWriters struct {
	mu    sync.Mutex // the writers'
	order []uint64   // insertion order, the CLOCK hand at head
	head  int
	bytes int
}

func newCache(maxBytes int) *cache {
	return &cache{maxShard: maxBytes / cacheShards}
}

// load returns the shard's entry stored under h, or nil.
func (sh *cacheShard) load(h uint64) *centry {
	v, _ := sh.m.Load(h)
	e, _ := v.(*centry)
	return e
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
		sh.m.Delete(victim)
		sh.bytes -= e.size
	}
	if sh.head > 1024 && sh.head > len(sh.order)/2 {
		sh.order = append([]uint64(nil), sh.order[sh.head:]...)
		sh.head = 0
	}
	sh.m.Store(h, &centry{state: state.s, text: text, r: r, size: size})
	sh.order = append(sh.order, h)
	sh.bytes += size
}
