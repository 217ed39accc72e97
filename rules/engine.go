package rules

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// Engine judges SQL for sessions. It is safe for concurrent use by any
// number of sessions; its policy and catalogs can be swapped at any time
// and apply from the next Judge call on.
type Engine struct {
	pol    atomic.Pointer[Policy]
	cats   atomic.Pointer[map[string]*catalogEntry]
	catMu  sync.Mutex
	cache  *cache
	fast   *cache
	limits atomic.Pointer[Limits]
	verify bool
	clock  func() time.Time
	// catVersions numbers the catalog entries this engine installs: a
	// version names one state of one database's relations in the cache
	// keys of this engine's caches, so it needs to be unique only here.
	catVersions atomic.Uint64
}

// catalogEntry is what pgmoat knows of one database's relations: the
// catalog snapshot (nil when none could be loaded) and what sessions made
// through pgmoat since (see Learn). version changes with either, and is
// part of every cache key.
type catalogEntry struct {
	cat     *Catalog
	shared  *overlay
	version uint64
}

// EngineOptions tune an Engine; the zero value uses the defaults.
type EngineOptions struct {
	// CacheBytes bounds the decision cache (statement texts and results);
	// 0 means 64 MiB, negative disables caching and the fast path.
	CacheBytes int
	// Limits bound what is parsed; zero fields take DefaultLimits.
	Limits Limits
	// Verify says the proxy runs statements under guard: a statement
	// whose harm analysis cannot settle (Effect.Possible) is judged Verify
	// instead of statically. Off (pgmoat check), such statements are
	// judged statically, as settle describes.
	Verify bool
	// Clock tells the time for decisions that depend on it (ALTER ROLE
	// ... VALID UNTIL); nil means time.Now. Such decisions are never
	// cached.
	Clock func() time.Time
}

// NewEngine returns an engine judging with policy p.
func NewEngine(p *Policy, opts EngineOptions) *Engine {
	e := &Engine{verify: opts.Verify, clock: opts.Clock}
	e.SetLimits(opts.Limits)
	if opts.CacheBytes >= 0 {
		size := opts.CacheBytes
		if size == 0 {
			size = 64 << 20
		}
		e.cache = newCache(size * 3 / 4)
		e.fast = newCache(size / 4)
	}
	e.pol.Store(p)
	empty := map[string]*catalogEntry{}
	e.cats.Store(&empty)
	return e
}

// SetPolicy replaces the policy (config reload). Sessions use it from
// their next statement on; cached decisions of the old policy are never
// reused because the policy version is part of every cache key.
func (e *Engine) SetPolicy(p *Policy) { e.pol.Store(p) }

// Policy returns the policy in force.
func (e *Engine) Policy() *Policy { return e.pol.Load() }

// SetLimits replaces the limits (config reload); zero fields take
// DefaultLimits. They apply from the next message on.
func (e *Engine) SetLimits(l Limits) {
	l = l.withDefaults()
	e.limits.Store(&l)
}

// Limits returns the limits in force.
func (e *Engine) Limits() Limits { return *e.limits.Load() }

// SetCatalog installs what pgmoat knows of database's schema (nil removes
// it, and what Learn learnt). See Catalog. What Learn learnt and c does not
// hold is kept: it may have been made in a transaction still open when c
// was read.
func (e *Engine) SetCatalog(database string, c *Catalog) {
	e.catMu.Lock()
	defer e.catMu.Unlock()
	if c == nil {
		e.storeEntry(database, nil)
		return
	}
	var shared *overlay
	if old := e.catalog(database); old != nil {
		shared = old.shared.pruned(c)
		c.reuseParsed(old.cat)
	}
	e.storeEntry(database, &catalogEntry{cat: c, shared: shared, version: e.catVersions.Add(1)})
}

// Learn records the relation changes among changes, which a session of
// database has confirmed (the proxy passes the Changes it applies with
// Session.Apply), for all the database's sessions: the tables, views,
// children, partitions, foreign keys and renames made through pgmoat
// since the catalog snapshot. Another session's view over a protected
// table then counts in every session, whenever it started, and a table a
// migration made is known to sessions opened before it. Temporary
// relations stay their session's, and so do drops (one rolled back would
// hide a table from all). Like a session's own, these relations do not
// shadow others on the search path: they may be uncommitted.
func (e *Engine) Learn(database string, changes ...StateChange) {
	// Only the test runs for most confirmed changes (BEGIN, COMMIT, SET:
	// none of the catalog's), and it is small enough to inline under the
	// profile (cmd/pgmoat/default.pgo).
	for i := range changes {
		if touchesRelations(changes[i].Kind) {
			e.learn(database, changes)
			return
		}
	}
}

func (e *Engine) learn(database string, changes []StateChange) {
	e.catMu.Lock()
	defer e.catMu.Unlock()
	old := e.catalog(database)
	var next catalogEntry
	if old != nil {
		next = *old
	}
	shared := next.shared
	for _, c := range changes {
		next.shared = next.shared.learnt(c)
	}
	if next.shared == shared {
		return
	}
	next.version = e.catVersions.Add(1)
	e.storeEntry(database, &next)
}

// storeEntry replaces database's entry (nil removes it); catMu is held.
func (e *Engine) storeEntry(database string, ce *catalogEntry) {
	old := *e.cats.Load()
	m := make(map[string]*catalogEntry, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	if ce == nil {
		delete(m, database)
	} else {
		m[database] = ce
	}
	e.cats.Store(&m)
}

func (e *Engine) catalog(db string) *catalogEntry { return (*e.cats.Load())[db] }

// sessionCatalog is catalog for s's database, looked up again only when
// the catalogs changed since s last asked: the look-up by name is code
// every judged statement would run otherwise.
func (e *Engine) sessionCatalog(s *Session) *catalogEntry {
	if cats := e.cats.Load(); cats != s.cats {
		s.cats, s.cat = cats, (*cats)[s.id.Database]
	}
	return s.cat
}

// Judge decides on sql, a simple Query message's text or a Parse message's
// text (parameters $n are unknown values), for session s. It does not
// change s: apply each statement's Changes with s.Apply once the server
// has run the statement.
func (e *Engine) Judge(s *Session, sql string) *Result {
	return e.JudgeContext(context.Background(), s, sql)
}

// JudgeContext is Judge for a message whose analysis should stop when ctx
// ends (the session is gone): the result is then an unparseable verdict
// saying so (a *StoppedError), which blocks while anything is protected.
// A message past the analysis budget (Limits.MaxStatements, MaxTime) is
// refused the same way, with a *BudgetError naming the limit.
func (e *Engine) JudgeContext(ctx context.Context, s *Session, sql string) *Result {
	r, _ := e.judge(ctx, s, sql, false)
	return r
}

// JudgeBorrowed is JudgeContext for a text in memory that its caller will
// reuse once the message is handled (the proxy's read buffer), so that the
// commonest messages are judged without copying their text.
//
// A Result from the cache or the fast path may refer to sql (its verdicts'
// Text): a caller that keeps the Result, or anything of it, after sql's
// memory is reused must first give it a copy of sql with Result.Keep. The
// full analysis keeps its text (the cache does), so a text that needs it
// is analysed as a copy, returned as kept ("" otherwise); that Result
// refers to kept only.
func (e *Engine) JudgeBorrowed(ctx context.Context, s *Session, sql string) (r *Result, kept string) {
	return e.judge(ctx, s, sql, true)
}

func (e *Engine) judge(ctx context.Context, s *Session, sql string, borrowed bool) (r *Result, kept string) {
	pol := e.pol.Load()
	ce := e.sessionCatalog(s)
	key := s.stateKey(pol, ce)
	if e.cache != nil {
		if r := e.decided(key, sql); r != nil {
			return r, ""
		}
	}
	if borrowed {
		sql = strings.Clone(sql)
		kept = sql
	}
	r, sens := e.full(ctx, pol, ce, s, sql, true)
	if e.cache != nil && !sens.state && !sens.clock {
		hit := *r
		hit.Path = PathCache
		e.cache.put(key, sql, &hit)
		if !sens.literal {
			e.storeFast(key, sql, r)
		}
	}
	return r, kept
}

type sensitivity struct{ literal, state, clock bool }

// full parses and analyses sql.
//
// strict (the proxy's Judge) makes an operation on every row of a relation
// that neither the catalog nor the session knows count as reaching every
// protected table, when there is a catalog: the relation may have been
// made after the snapshot to reach one. Without a catalog every name is
// unknown, and names are judged by the search path alone.
func (e *Engine) full(ctx context.Context, pol *Policy, ce *catalogEntry, s *Session, sql string, strict bool) (*Result, sensitivity) {
	var cat *Catalog
	env := newEnv(pol, nil, s.id.User, s.tx.clone())
	if ce != nil {
		cat = ce.cat
		env.cat, env.shared = ce.cat, ce.shared
	}
	env.lookupPrepared = s.lookupPrepared
	env.lookupCursor = s.lookupCursor
	env.now = e.clock
	env.ov = s.ov
	env.strict = strict && cat != nil
	r := &Result{Decider: -1}
	lim := e.Limits()
	cuts, err := scanBounds(sql, lim, chunkBytes)
	if err == nil {
		r.Statements = make([]*Verdict, 0, len(cuts)+1)
		pl := newPlacer(sql)
		deadline := time.Now().Add(lim.MaxTime)
		err = parseChunks(ctx, sql, cuts, func(raw *pg_query.RawStmt) error {
			if lim.MaxStatements >= 0 && len(r.Statements) >= lim.MaxStatements {
				return &BudgetError{Key: "limits.analysis_statements", Limit: strconv.Itoa(lim.MaxStatements)}
			}
			if lim.MaxTime >= 0 && time.Now().After(deadline) {
				return &BudgetError{Key: "limits.analysis_time", Limit: lim.MaxTime.String()}
			}
			if err := ctx.Err(); err != nil {
				return &StoppedError{Cause: context.Cause(ctx)}
			}
			text := stmtSlice(sql, raw)
			env.changes = nil
			effects := env.analyzeStmt(stmtText{raw.Stmt, text}, "")
			v := newVerdict(&pl, int(raw.StmtLocation), text)
			v.Effects = settle(effects, e.verify, !unguardable(raw.Stmt), holdableCursor(raw.Stmt))
			v.CopyIn = copyFromClient(raw.Stmt)
			v.DDL = isDDL(raw.Stmt)
			v.Changes = env.changes
			for i := range v.Changes {
				if v.Changes[i].Kind == ChangePrepare {
					v.Changes[i].Text = v.Text
				}
			}
			r.Statements = append(r.Statements, v)
			return nil
		})
	}
	if err != nil {
		r.Statements = []*Verdict{unparseable(sql, err)}
		env.literalSensitive = true
		var be *BudgetError
		var se *StoppedError
		if errors.As(err, &be) || errors.As(err, &se) {
			// Not a property of the text alone: never cached.
			env.stateSensitive = true
		}
	}
	for _, v := range r.Statements {
		decide(pol, s.mask, v)
	}
	r.finish()
	return r, sensitivity{literal: env.literalSensitive, state: env.stateSensitive, clock: env.clockSensitive}
}

func unparseable(sql string, err error) *Verdict {
	pl := newPlacer(sql)
	v := newVerdict(&pl, 0, sql)
	what := "statement pgmoat cannot parse (" + err.Error() + ")"
	var be *BudgetError
	var se *StoppedError
	if errors.As(err, &be) || errors.As(err, &se) {
		what = "message pgmoat did not analyse to its end: " + err.Error()
	}
	v.Effects = []Effect{{Op: OpUnparseable, Object: everything(), What: what}}
	return v
}

// JudgeOpaque decides on something that runs code pgmoat cannot see, such
// as a protocol-level FunctionCall message: what describes it for the
// sentence ("FunctionCall of function OID 1234").
func (e *Engine) JudgeOpaque(s *Session, what string) *Result {
	pol := e.pol.Load()
	s.stateKey(pol, e.sessionCatalog(s))
	v := &Verdict{Text: what, Line: 1, Col: 1, Effects: []Effect{{Op: OpOpaque, Object: everything(), What: what}}}
	decide(pol, s.mask, v)
	r := &Result{Statements: []*Verdict{v}}
	r.finish()
	return r
}

// JudgeMeasured decides on what a statement, run under guard, was
// measured to do: effects are the violations pgmoat found (operations on
// protected tables, certain now), text is the statement. The policy then
// holds or blocks it as it would a statement that said so.
func (e *Engine) JudgeMeasured(s *Session, text string, effects []Effect) *Result {
	pol := e.pol.Load()
	s.stateKey(pol, e.sessionCatalog(s))
	v := &Verdict{Text: text, Line: 1, Col: 1, Effects: effects}
	decide(pol, s.mask, v)
	r := &Result{Statements: []*Verdict{v}}
	r.finish()
	return r
}

// ParseSearchPath reads a search_path value as the server reports it
// (current_setting('search_path')) into its entries.
func ParseSearchPath(value string) ([]string, bool) {
	entries, ok := splitIdentList(value)
	if !ok {
		return nil, false
	}
	for i := range entries {
		entries[i] = truncateIdent(entries[i])
	}
	return entries, true
}

// JudgeWithDoubt is Judge for a statement that also runs code pgmoat
// cannot see (why): every statement of it carries a DoubtCode effect on
// every protected table, so that the proxy verifies it when nothing else
// decides more.
func (e *Engine) JudgeWithDoubt(s *Session, sql, why string) *Result {
	return e.judgeWith(s, sql, why, DoubtCode)
}

// JudgeWithOpaque is Judge for a statement that also reaches outside the
// transaction where its text does not say (why): every statement of it
// carries a certain opaque effect on every protected table.
func (e *Engine) JudgeWithOpaque(s *Session, sql, why string) *Result {
	return e.judgeWith(s, sql, why, DoubtNone)
}

func (e *Engine) judgeWith(s *Session, sql, why string, doubt Doubt) *Result {
	r := e.Judge(s, sql)
	out := &Result{Statements: make([]*Verdict, len(r.Statements)), Path: r.Path}
	pol := e.pol.Load()
	for i, v := range r.Statements {
		nv := &Verdict{Text: v.Text, Offset: v.Offset, Line: v.Line, Col: v.Col, Changes: v.Changes, CopyIn: v.CopyIn, DDL: v.DDL}
		nv.Effects = append(append([]Effect(nil), v.Effects...), Effect{Op: OpOpaque, Object: everything(), What: why, Doubt: doubt})
		nv.Effects = settle(nv.Effects, e.verify, true, false)
		decide(pol, s.mask, nv)
		out.Statements[i] = nv
	}
	out.finish()
	return out
}
