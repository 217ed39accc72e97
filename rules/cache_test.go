package rules

import (
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"unsafe"
)

// sameDecision compares two results statement by statement on everything
// a decision consists of.
func sameDecision(a, b *Result) string {
	if a.Action != b.Action || a.Decider != b.Decider || len(a.Statements) != len(b.Statements) {
		return fmt.Sprintf("action %s/%s decider %d/%d statements %d/%d", a.Action, b.Action, a.Decider, b.Decider, len(a.Statements), len(b.Statements))
	}
	for i := range a.Statements {
		x, y := a.Statements[i], b.Statements[i]
		if x.Text != y.Text || x.Offset != y.Offset || x.Line != y.Line || x.Col != y.Col || x.Action != y.Action || x.Rule != y.Rule || x.Sentence != y.Sentence {
			return fmt.Sprintf("statement %d: %q@%d %s %q %q vs %q@%d %s %q %q", i, x.Text, x.Offset, x.Action, x.Rule, x.Sentence, y.Text, y.Offset, y.Action, y.Rule, y.Sentence)
		}
		if fmt.Sprint(x.Effects) != fmt.Sprint(y.Effects) || fmt.Sprint(x.Changes) != fmt.Sprint(y.Changes) {
			return fmt.Sprintf("statement %d effects/changes differ: %v %v vs %v %v", i, x.Effects, x.Changes, y.Effects, y.Changes)
		}
	}
	return ""
}

// checkAgainstFull judges sql through the cached engine and compares with
// a fresh full analysis.
func checkAgainstFull(t testing.TB, cached, fresh *Engine, s *Session, sql string) *Result {
	t.Helper()
	got := cached.Judge(s, sql)
	want := fresh.Judge(s, sql)
	if d := sameDecision(got, want); d != "" {
		t.Fatalf("%q (path %s): cached decision differs from full analysis: %s", sql, got.Path, d)
	}
	return got
}

func TestCacheAndFastPath(t *testing.T) {
	p := corpusPolicy(t)
	cached := NewEngine(p, EngineOptions{})
	fresh := NewEngine(p, EngineOptions{CacheBytes: -1})
	s := knownSession("app")
	paths := map[Path]int{}
	for i := 0; i < 50; i++ {
		for _, sql := range []string{
			fmt.Sprintf("SELECT abalance FROM pgbench_accounts WHERE aid = %d;", i*7919),
			fmt.Sprintf("UPDATE pgbench_accounts SET abalance = abalance + %d WHERE aid = %d;", i-25, i),
			fmt.Sprintf("DELETE FROM users WHERE id = %d", i),
			fmt.Sprintf("DELETE FROM users WHERE %d = %d", i%3, 1),            // literal-sensitive
			fmt.Sprintf("SELECT '%d'; DELETE FROM users WHERE id = %d", i, i), // two statements
			fmt.Sprintf("UPDATE users SET note = 'n%d' WHERE email = 'u%d@x.io'", i, i),
			fmt.Sprintf("SET search_path TO s%d", i%2),
			fmt.Sprintf("PREPARE q%d AS SELECT %d", i%2, i),
		} {
			r := checkAgainstFull(t, cached, fresh, s, sql)
			paths[r.Path]++
		}
	}
	if paths[PathFast] == 0 || paths[PathCache] == 0 {
		t.Fatalf("fast path or cache never used: %v", paths)
	}
	// The tautology with literals must never be answered by the fast path
	// from the other literal's decision.
	if r := cached.Judge(s, "DELETE FROM users WHERE 1 = 1"); r.Action != Block {
		t.Fatal("1 = 1 allowed")
	}
	if r := cached.Judge(s, "DELETE FROM users WHERE 1 = 0"); r.Action != Allow || r.Path == PathFast {
		t.Fatalf("1 = 0: %s via %s", r.Action, r.Path)
	}
}

func TestCacheHitAllocatesNothing(t *testing.T) {
	eng := NewEngine(corpusPolicy(t), EngineOptions{})
	s := knownSession("app")
	// A text with literals is looked up on the fast path first (the same
	// literals seldom come twice), which TestRecycleFastPath covers; one
	// without comes from the cache.
	if eng.Judge(s, "SELECT abalance FROM pgbench_accounts WHERE aid = 12345;"); eng.Judge(s, "SELECT abalance FROM pgbench_accounts WHERE aid = 12345;").Path != PathFast {
		t.Fatal("a text with literals, judged again, did not take the fast path")
	}
	sql := "SELECT abalance FROM pgbench_accounts WHERE aid = (SELECT max(aid) FROM pgbench_accounts);"
	eng.Judge(s, sql)
	if r := eng.Judge(s, sql); r.Path != PathCache {
		t.Fatalf("second judge took path %s", r.Path)
	}
	if n := testing.AllocsPerRun(100, func() { eng.Judge(s, sql) }); n != 0 {
		t.Fatalf("cache hit allocates %v times", n)
	}
	// As the proxy drives it: judge, apply (nothing), sync with the
	// ReadyForQuery status, every message.
	if n := testing.AllocsPerRun(100, func() {
		r := eng.Judge(s, sql)
		s.Apply(r.Statements[0].Changes...)
		s.Sync('I')
	}); n != 0 {
		t.Fatalf("cache hit with Apply/Sync allocates %v times", n)
	}
	// pgbench's transaction: BEGIN ... END, all from the cache.
	for i := 0; i < 2; i++ {
		judgeAndApply(eng, s, "BEGIN;", 'T')
		judgeAndApply(eng, s, sql, 'T')
		judgeAndApply(eng, s, "END;", 'I')
	}
	if n := testing.AllocsPerRun(50, func() {
		judgeAndApply(eng, s, "BEGIN;", 'T')
		judgeAndApply(eng, s, sql, 'T')
		judgeAndApply(eng, s, "END;", 'I')
	}); n > 6 {
		t.Fatalf("cached transaction allocates %v times", n)
	}
}

func TestCacheBounded(t *testing.T) {
	eng := NewEngine(corpusPolicy(t), EngineOptions{CacheBytes: 256 << 10})
	s := knownSession("app")
	for i := 0; i < 5000; i++ {
		eng.Judge(s, fmt.Sprintf("SELECT %d AS c%d FROM users", i, i))
	}
	total := 0
	for i := range eng.cache.shards {
		sh := &eng.cache.shards[i]
		total += sh.bytes
		if sh.bytes > eng.cache.maxShard {
			t.Fatalf("shard %d holds %d bytes > %d", i, sh.bytes, eng.cache.maxShard)
		}
	}
	if total == 0 || total > 256<<10 {
		t.Fatalf("cache holds %d bytes", total)
	}
}

// TestConcurrentSessions shares one engine (and cache) between sessions
// with different search_paths and checks every answer against a fresh
// analysis.
func TestConcurrentSessions(t *testing.T) {
	p := corpusPolicy(t)
	cached := NewEngine(p, EngineOptions{CacheBytes: 1 << 20})
	fresh := NewEngine(p, EngineOptions{CacheBytes: -1})
	paths := [][]string{{"$user", "public"}, {"billing", "public"}, {"public"}, nil}
	stmts := []string{"DROP TABLE invoices", "TRUNCATE payments", "DELETE FROM users WHERE id = 1", "UPDATE invoices SET amount = 1", "SELECT * FROM invoices WHERE id = 3", "DROP TABLE scratch"}
	var wg sync.WaitGroup
	errs := make(chan string, 100)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(g)))
			s := NewSession(Identity{User: fmt.Sprintf("u%d", g%2), Database: "app"})
			if p := paths[g%len(paths)]; p != nil {
				s.SetSearchPath(p)
			}
			for i := 0; i < 300; i++ {
				sql := stmts[rng.Intn(len(stmts))]
				got, want := cached.Judge(s, sql), fresh.Judge(s, sql)
				if d := sameDecision(got, want); d != "" {
					errs <- fmt.Sprintf("session %d %q: %s", g, sql, d)
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// TestDeepNestingSurvives feeds input that would overflow libpg_query's
// C stack; it must come back unparseable (blocked) and the process must
// live. It runs in a child process so that a crash fails the test instead
// of killing the test binary.
func TestDeepNestingSurvives(t *testing.T) {
	if os.Getenv("PGMOAT_DEEP_CHILD") == "1" {
		eng := NewEngine(corpusPolicy(t), EngineOptions{})
		for _, sql := range deepInputs() {
			r := eng.Judge(knownSession("app"), sql)
			if r.Action != Block {
				t.Fatalf("%.40q...: got %s", sql, r.Action)
			}
		}
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestDeepNestingSurvives$", "-test.count=1")
	cmd.Env = append(os.Environ(), "PGMOAT_DEEP_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child failed (crash?): %v\n%.2000s", err, out)
	}
}

func deepInputs() []string {
	n := 100000
	return []string{
		"SELECT " + strings.Repeat("(", n) + "1" + strings.Repeat(")", n),
		"SELECT " + strings.Repeat("1+", n) + "1",
		"SELECT 1" + strings.Repeat("::int", n),
		strings.Repeat("SELECT 1 UNION ", n) + "SELECT 1",
		"SELECT " + strings.Repeat("NOT ", n) + "true",
		"SELECT " + strings.Repeat("ARRAY[", n) + "1" + strings.Repeat("]", n),
		"DO $$BEGIN EXECUTE 'SELECT " + strings.Repeat("1+", n) + "1'; END$$",
	}
}

func TestLimitsAllowRealStatements(t *testing.T) {
	eng := testEngine(t, defaultProtect)
	var b strings.Builder
	b.WriteString("INSERT INTO users (id, email) VALUES ")
	for i := 0; i < 5000; i++ {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "(%d, 'user%d@example.com' || 'x')", i, i)
	}
	var w strings.Builder
	w.WriteString("SELECT * FROM users WHERE ")
	for i := 0; i < 2000; i++ {
		if i > 0 {
			w.WriteString(" OR ")
		}
		fmt.Fprintf(&w, "(id = %d AND email = 'x')", i)
	}
	big := "SELECT '" + strings.Repeat("((((+-*/ word ", 20000) + "'"
	for _, sql := range []string{b.String(), w.String(), big} {
		if r := eng.Judge(knownSession("app"), sql); r.Action != Allow {
			t.Errorf("%.60q...: %s %s", sql, r.Action, r.Decision().Sentence)
		}
	}
}

// TestCacheHashCollision stores an entry under the hash of a key it is not
// for, as a collision would: a look-up of that key must miss, not take the
// other key's decision, and storing the key must leave the slot alone.
func TestCacheHashCollision(t *testing.T) {
	c := newCache(1 << 20)
	st := internState("state")
	other := &Result{Action: Block}
	h, sh := c.hash(st, "SELECT 1")
	sh.mu.Lock()
	sh.store(&centry{hash: h, state: "state", text: "DROP TABLE users", r: other})
	sh.mu.Unlock()
	if r := c.get(st, "SELECT 1"); r != nil {
		t.Fatalf("a key whose hash another key's entry holds got %v", r.Action)
	}
	sh.mu.Lock()
	sh.remove(h)
	sh.store(&centry{hash: h, state: "other state", text: "SELECT 1", r: other})
	sh.mu.Unlock()
	if r := c.get(st, "SELECT 1"); r != nil {
		t.Fatalf("a key whose hash another state's entry holds got %v", r.Action)
	}
	c.put(st, "SELECT 1", &Result{Action: Allow})
	if e := sh.load(h); e.r != other {
		t.Fatal("put replaced another key's entry")
	}
	if r := c.get(st, "SELECT 1"); r != nil {
		t.Fatalf("after put, a key whose hash another key's entry holds got %v", r.Action)
	}
}

// TestCacheTableProbes checks a shard's table against a map: entries
// whose hashes pick the same slot, one of them evicted between the
// others, and then a long run of stores and evictions at random.
func TestCacheTableProbes(t *testing.T) {
	var sh cacheShard
	sh.mu.Lock()
	defer sh.mu.Unlock()
	ref := map[uint64]*centry{}
	check := func(step string) {
		t.Helper()
		for h, e := range ref {
			if got := sh.load(h); got != e {
				t.Fatalf("%s: load(%#x) = %p, stored %p", step, h, got, e)
			}
		}
		tab := sh.t.Load()
		if sh.live != len(ref) || 2*sh.used > len(tab.slots) {
			t.Fatalf("%s: %d live (%d stored), %d slots in use of %d", step, sh.live, len(ref), sh.used, len(tab.slots))
		}
	}
	add := func(h uint64) {
		e := &centry{hash: h}
		sh.store(e)
		ref[h] = e
	}
	del := func(h uint64) {
		sh.remove(h)
		delete(ref, h)
	}
	// Three hashes whose probes start from slot 3 of the first table,
	// and a fourth whose would, never stored.
	a, b, c, d := uint64(3<<32), uint64(3<<32+1), uint64(3<<32+2), uint64(3<<32+3)
	add(a)
	add(b)
	add(c)
	del(b)
	check("after evicting the middle of a probe")
	if sh.load(b) != nil || sh.load(d) != nil {
		t.Fatal("a hash not stored was found")
	}
	rng := rand.New(rand.NewSource(1))
	for i := 0; i < 20000; i++ {
		h := uint64(rng.Intn(64)) | uint64(rng.Intn(8))<<32 // few first slots: long probes
		if ref[h] != nil {
			del(h)
		} else {
			add(h)
		}
		if i%97 == 0 {
			check(fmt.Sprintf("step %d", i))
		}
	}
	check("at the end")
	for h := range ref {
		del(h)
	}
	check("emptied")
	if sh.load(a) != nil {
		t.Fatal("an emptied table found an entry")
	}
}

// TestCacheTableSpread: the entries of one shard, whose hashes share
// their low bits, are spread over the table, so that a look-up probes a
// slot or two, not a pile of them.
func TestCacheTableSpread(t *testing.T) {
	c := newCache(64 << 20)
	st := internState("spread")
	for i := 0; i < 20000; i++ {
		c.put(st, fmt.Sprintf("SELECT %d", i), &Result{})
	}
	sh := &c.shards[0]
	tab := sh.t.Load()
	probes := 0
	for j := range tab.slots {
		e := tab.slots[j].Load()
		if e == nil || e == tombstone {
			continue
		}
		for i := tab.first(e.hash); tab.slots[i].Load() != e; i = (i + 1) & tab.mask {
			probes++
		}
		probes++
	}
	if sh.live < 100 {
		t.Fatalf("shard 0 holds %d entries", sh.live)
	}
	if mean := float64(probes) / float64(sh.live); mean > 2.5 {
		t.Fatalf("a look-up of one of shard 0's %d entries probes %.1f slots on average", sh.live, mean)
	}
}

// TestCacheTableChurn evicts and stores entries while readers look them
// up (run with -race): a reader gets the entry of its key or nothing,
// every entry the writers keep is found, and tombstones do not make a
// shard's table grow without bound.
func TestCacheTableChurn(t *testing.T) {
	c := newCache(64 << 10)
	st := internState("churn")
	results := make([]*Result, 4000)
	text := func(i int) string { return fmt.Sprintf("SELECT %d FROM t%d", i, i) }
	for i := range results {
		results[i] = &Result{Action: Action(i)}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan string, 4)
	for g := 0; g < 2; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(g)))
			for {
				select {
				case <-stop:
					return
				default:
				}
				i := rng.Intn(len(results))
				if r := c.get(st, text(i)); r != nil && r != results[i] {
					errs <- fmt.Sprintf("key %d got key %d's result", i, r.Action)
					return
				}
			}
		}(g)
	}
	for i := range results {
		c.put(st, text(i), results[i])
	}
	close(stop)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
	live := 0
	for i := range c.shards {
		sh := &c.shards[i]
		tab := sh.t.Load()
		n := 0
		for j := range tab.slots {
			e := tab.slots[j].Load()
			if e == nil || e == tombstone {
				continue
			}
			n++
			if r := c.get(st, e.text); r != e.r {
				t.Fatalf("shard %d: stored %q is not found", i, e.text)
			}
		}
		if n != sh.live {
			t.Fatalf("shard %d: %d entries in the table, %d counted", i, n, sh.live)
		}
		live += n
		if 2*sh.used > len(tab.slots) {
			t.Fatalf("shard %d: %d slots in use of %d", i, sh.used, len(tab.slots))
		}
		if len(tab.slots) > 8*(sh.live+1) && len(tab.slots) > minTableSlots {
			t.Fatalf("shard %d: %d slots for %d entries", i, len(tab.slots), sh.live)
		}
	}
	if live == 0 || live == len(results) {
		t.Fatalf("%d of %d entries live: the test evicts nothing or everything", live, len(results))
	}
}

// TestStateKeyInterned: sessions in the same state share one key string
// and its hash, and a key equal in value but not shared still finds the
// entries stored under the other (interning saves work, it decides
// nothing).
func TestStateKeyInterned(t *testing.T) {
	a := internState(strings.Repeat("x", 3) + "|state")
	b := internState(strings.Repeat("x", 3) + "|state")
	if unsafe.StringData(a.s) != unsafe.StringData(b.s) || a.h != b.h {
		t.Fatal("two equal state keys were not interned to one")
	}
	c := newCache(1 << 20)
	c.put(a, "SELECT 1", &Result{Action: Allow})
	own := stateKey{s: strings.Clone(a.s), h: a.h}
	if r := c.get(own, "SELECT 1"); r == nil || r.Action != Allow {
		t.Fatal("an equal key held in another string missed the cache")
	}
	if r := c.get(internState("xxx|other"), "SELECT 1"); r != nil {
		t.Fatal("another state's key hit the entry")
	}
}
