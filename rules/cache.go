package rules

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
	"unsafe"
)

// cache maps (session state key, text) to a Result. It is sharded to keep
// lock contention low under many sessions, bounded in bytes, and evicts
// with the CLOCK (second chance) policy so that a hit only sets a flag:
// lookups take a read lock and allocate nothing.
type cache struct {
	seed     maphash.Seed
	shards   [cacheShards]cacheShard
	maxShard int
	hits     atomic.Uint64
	misses   atomic.Uint64
}

const cacheShards = 64

type ckey struct{ state, text string }

type centry struct {
	r    *Result
	ref  atomic.Bool
	size int
}

type cacheShard struct {
	mu    sync.RWMutex
	m     map[ckey]*centry
	order []ckey // insertion order, the CLOCK hand at head
	head  int
	bytes int
	_     [40]byte // keep shards on separate cache lines
}

func newCache(maxBytes int) *cache {
	c := &cache{seed: maphash.MakeSeed(), maxShard: maxBytes / cacheShards}
	for i := range c.shards {
		c.shards[i].m = map[ckey]*centry{}
	}
	return c
}

func (c *cache) shard(text string) *cacheShard {
	return &c.shards[maphash.String(c.seed, text)%cacheShards]
}

func (c *cache) get(state, text string) *Result {
	sh := c.shard(text)
	sh.mu.RLock()
	e := sh.m[ckey{state, text}]
	sh.mu.RUnlock()
	if e == nil {
		c.misses.Add(1)
		return nil
	}
	if !e.ref.Load() {
		e.ref.Store(true)
	}
	c.hits.Add(1)
	return e.r
}

// getBytes is get for a text the caller holds as bytes (the fast path's
// normalized key). get keeps nothing of the text, so the bytes need not be
// copied into a string.
func (c *cache) getBytes(state string, text []byte) *Result {
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

func (c *cache) put(state, text string, r *Result) {
	size := 64 + len(state) + len(text) + resultSize(r)
	if size > c.maxShard/4 {
		return // too big to be worth a slot
	}
	sh := c.shard(text)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	k := ckey{state, text}
	if _, ok := sh.m[k]; ok {
		return
	}
	for sh.bytes+size > c.maxShard && sh.head < len(sh.order) {
		victim := sh.order[sh.head]
		sh.head++
		e := sh.m[victim]
		if e == nil {
			continue
		}
		if e.ref.Load() {
			e.ref.Store(false)
			sh.order = append(sh.order, victim)
			continue
		}
		delete(sh.m, victim)
		sh.bytes -= e.size
	}
	if sh.head > 1024 && sh.head > len(sh.order)/2 {
		sh.order = append([]ckey(nil), sh.order[sh.head:]...)
		sh.head = 0
	}
	sh.m[k] = &centry{r: r, size: size}
	sh.order = append(sh.order, k)
	sh.bytes += size
}

// CacheStats reports decision cache hits and misses since the engine
// started (fast-path hits count as hits of the fast cache).
type CacheStats struct {
	Hits, Misses, FastHits, FastMisses uint64
}

// CacheStats returns cache counters for metrics.
func (e *Engine) CacheStats() CacheStats {
	if e.cache == nil {
		return CacheStats{}
	}
	return CacheStats{Hits: e.cache.hits.Load(), Misses: e.cache.misses.Load(), FastHits: e.fast.hits.Load(), FastMisses: e.fast.misses.Load()}
}
