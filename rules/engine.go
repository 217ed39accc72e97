package rules

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// Verdict is the decision on one statement of a message. Verdicts handed
// out by an Engine may be shared with other sessions through the cache:
// treat them as read-only.
type Verdict struct {
	Text      string // the statement as written, trimmed of surrounding space
	Offset    int    // byte offset of Text in the message
	Line, Col int    // 1-based line and column (in bytes) of Text in the message
	Effects   []Effect
	Action    Action
	Rule      string // the policy rule, or a default-* rule; "" when nothing protected is touched
	Sentence  string // for people: what, why, which rule
	Changes   []StateChange

	fpOnce sync.Once
	fp     string
	fpErr  error
}

// Fingerprint returns the statement's pg_query fingerprint, computed on
// first use (the same value rules.Fingerprints returns for it).
func (v *Verdict) Fingerprint() (string, error) {
	v.fpOnce.Do(func() { v.fp, v.fpErr = pg_query.Fingerprint(v.Text) })
	return v.fp, v.fpErr
}

// Path says how a Result was reached, for metrics.
type Path uint8

// Decision paths.
const (
	PathFull  Path = iota // parsed and analysed
	PathCache             // exact text seen before in the same state
	PathFast              // same statement with other literals seen before
)

func (p Path) String() string {
	return [...]string{"full", "cache", "fast"}[p]
}

// Result is the decision on a whole message (a simple Query, a Parse, a
// script). Action is the strongest of the statements' actions and Decider
// the index of the first statement with that action (-1 when there are no
// statements). Results may be shared: treat them as read-only.
type Result struct {
	Statements []*Verdict
	Action     Action
	Decider    int
	Path       Path
}

// Decision returns the deciding verdict, or nil.
func (r *Result) Decision() *Verdict {
	if r.Decider < 0 {
		return nil
	}
	return r.Statements[r.Decider]
}

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

var catalogVersion atomic.Uint64

// EngineOptions tune an Engine; the zero value uses the defaults.
type EngineOptions struct {
	// CacheBytes bounds the decision cache (statement texts and results);
	// 0 means 64 MiB, negative disables caching and the fast path.
	CacheBytes int
	// Limits bound what is parsed; zero fields take DefaultLimits.
	Limits Limits
}

// NewEngine returns an engine judging with policy p.
func NewEngine(p *Policy, opts EngineOptions) *Engine {
	e := &Engine{}
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
	}
	e.storeEntry(database, &catalogEntry{cat: c, shared: shared, version: catalogVersion.Add(1)})
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
	if !slices.ContainsFunc(changes, func(c StateChange) bool { return touchesRelations(c.Kind) }) {
		return
	}
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
	next.version = catalogVersion.Add(1)
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
	pol := e.pol.Load()
	ce := e.catalog(s.id.Database)
	key := s.stateKey(pol, ce)
	if e.cache != nil {
		if r := e.cache.get(key, sql); r != nil {
			return r
		}
		if r := e.judgeFast(s, key, sql); r != nil {
			return r
		}
	}
	r, sens := e.full(ctx, pol, ce, s, sql, true)
	if e.cache != nil && !sens.state {
		hit := *r
		hit.Path = PathCache
		e.cache.put(key, sql, &hit)
		if !sens.literal {
			e.storeFast(key, sql, r)
		}
	}
	return r
}

type sensitivity struct{ literal, state bool }

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
			v.Effects = effects
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
	return r, sensitivity{literal: env.literalSensitive, state: env.stateSensitive}
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

// newVerdict places the statement text (trimmed) within the message.
func newVerdict(pl *placer, start int, text string) *Verdict {
	v := new(Verdict)
	placeVerdict(v, pl, start, text)
	return v
}

func placeVerdict(v *Verdict, pl *placer, start int, text string) {
	lead, end := skipLeadingComments(text), len(text)
	for end > lead && isSpace(text[end-1]) {
		end--
	}
	off := start + lead
	v.Text, v.Offset = text[lead:end], off
	v.Line, v.Col = pl.position(off)
}

// skipLeadingComments returns the offset of text's first token: a
// statement slice starts right after the previous statement's semicolon,
// so it may begin with white space and with comments (PostgreSQL's: -- to
// the end of the line, and nesting /* */) that belong with the previous
// line. Positions and texts shown to people start at the statement itself.
func skipLeadingComments(text string) int {
	i := 0
	for i < len(text) {
		switch {
		case isSpace(text[i]):
			i++
		case strings.HasPrefix(text[i:], "--"):
			nl := strings.IndexByte(text[i:], '\n')
			if nl < 0 {
				return len(text)
			}
			i += nl + 1
		case strings.HasPrefix(text[i:], "/*"):
			depth, j := 0, i
			for j < len(text) {
				if strings.HasPrefix(text[j:], "/*") {
					depth++
					j += 2
				} else if strings.HasPrefix(text[j:], "*/") {
					depth--
					j += 2
					if depth == 0 {
						break
					}
				} else {
					j++
				}
			}
			if depth != 0 {
				return i // unterminated: not ours to judge, keep the text
			}
			i = j
		default:
			return i
		}
	}
	return i
}

// placer finds the line and column of the statements of one message, in
// the order they come: each call scans on from where the last one stopped.
// Scanning from the start of the message for every statement made a
// message of n statements cost n² (100k statements: minutes).
type placer struct {
	msg       string
	off       int // bytes before off are counted
	line      int // line of off, 1-based
	lineStart int // offset of that line's first byte
}

func newPlacer(msg string) placer { return placer{msg: msg, line: 1} }

// position returns the 1-based line and column (in bytes) of offset off.
func (p *placer) position(off int) (line, col int) {
	off = min(max(off, 0), len(p.msg))
	if off < p.off {
		*p = newPlacer(p.msg) // not in order: start again
	}
	seg := p.msg[p.off:off]
	if n := strings.Count(seg, "\n"); n > 0 {
		p.line += n
		p.lineStart = p.off + strings.LastIndexByte(seg, '\n') + 1
	}
	p.off = off
	return p.line, off - p.lineStart + 1
}

func (r *Result) finish() {
	r.Action, r.Decider = Allow, -1
	for i, v := range r.Statements {
		if r.Decider < 0 || v.Action > r.Action {
			r.Action, r.Decider = v.Action, i
		}
	}
}

// decide applies the policy to a verdict's effects.
func decide(pol *Policy, mask uint64, v *Verdict) {
	v.Action, v.Rule, v.Sentence = Allow, "", ""
	for _, ef := range v.Effects {
		reason, ok := pol.protects(ef)
		if !ok {
			continue
		}
		action, rule := pol.ruleFor(mask, ef.Op)
		if v.Rule == "" || action > v.Action {
			v.Action, v.Rule = action, rule
			what := ef.What
			if ef.Where != "" {
				what += " (" + ef.Where + ")"
			}
			v.Sentence = what + ": " + reason + "; rule " + rule
		}
	}
}

// protects says whether an effect touches something protected, and why.
func (p *Policy) protects(ef Effect) (string, bool) {
	o := ef.Object
	if !p.ProtectsAnything() || ef.Op == OpNone {
		return "", false
	}
	switch o.Kind {
	case KindEverything:
		return "may touch every protected table (" + strings.Join(p.Patterns(), ", ") + ")", true
	case KindDatabase:
		return "the database may hold protected tables (" + strings.Join(p.Patterns(), ", ") + ")", true
	case KindSchema:
		if pat := p.schemaProtectedBy(o.Name); pat != "" {
			return "schema holds tables protected by " + pat, true
		}
		return "", false
	}
	if o.Schema != "" {
		if pat := p.protectedBy(o.Schema, o.Name); pat != "" {
			return "table is protected by " + pat, true
		}
		return "", false
	}
	for _, s := range o.Candidates {
		if pat := p.protectedBy(s, o.Name); pat != "" {
			return "may resolve to " + qualified(s, o.Name) + " through search_path, protected by " + pat, true
		}
	}
	if o.AnySchema {
		if pat := p.anySchemaProtectedBy(o.Name); pat != "" {
			return "search_path is unknown, so it may be a table protected by " + pat, true
		}
	}
	return "", false
}

// ruleFor returns the action and rule name for an effect on a protected
// object: the first matching rule that covers op, else the default.
func (p *Policy) ruleFor(mask uint64, op Operation) (Action, string) {
	for i := range p.rules {
		if mask&(1<<i) != 0 && p.rules[i].ops.has(op) {
			return p.rules[i].action, p.rules[i].name
		}
	}
	switch op {
	case OpOpaque, OpLexerState, OpUnparseable:
		return Block, RuleDefaultOpaque
	}
	return Block, RuleDefaultDestructive
}

// Session is one client session's state as the analysis needs it. It is
// not safe for concurrent use: one goroutine (the session's) owns it.
//
// Besides settings and prepared statements, a session keeps an overlay
// on the shared catalog snapshot: the relations it created (temporary
// ones under pg_temp), dropped or renamed, and how operations on them
// reach others (a view's bases, a child or partition, a foreign key, a
// rule), learnt from the Changes of its confirmed statements. A DELETE
// through a view the session made in an earlier message therefore counts
// against the view's protected base, although the catalog snapshot,
// loaded before, does not have the view.
type Session struct {
	id       Identity
	tx       txState
	prepared map[string]string
	ov       *overlay // sealed; nil when the session changed no relation

	// cache key, recomputed when the policy, catalog or state changes
	key       string
	keyPolicy *Policy
	keyCat    *catalogEntry
	keyDirty  bool
	mask      uint64
	// recent keys by state: sessions alternate between a few states
	// (idle, in a transaction), so most recomputations find theirs here.
	recent [4]recentKey
	next   int
}

type recentKey struct {
	tx  txState
	key string
}

// NewSession starts tracking a session. Its search_path is unknown until
// SetSearchPath (from the startup packet's options, or a ParameterStatus)
// or a SET tells.
func NewSession(id Identity) *Session {
	return &Session{id: id, keyDirty: true}
}

// Identity returns who the session is.
func (s *Session) Identity() Identity { return s.id }

// SetSearchPath sets the session's search_path as of session start (what
// RESET returns to), with entries as the server stores them.
func (s *Session) SetSearchPath(entries []string) {
	v := pathVal{known: true, entries: append([]string(nil), entries...)}
	s.tx.initial.path, s.tx.cur.path, s.tx.sess.path = v, v, v
	s.keyDirty = true
}

// SearchPath returns the search_path pgmoat believes is in force; ok is
// false when it is unknown.
func (s *Session) SearchPath() (entries []string, ok bool) {
	return s.tx.cur.path.entries, s.tx.cur.path.known
}

// Apply applies state changes reported in a Verdict, in order, once the
// statement has completed on the server.
func (s *Session) Apply(changes ...StateChange) {
	ov := s.ov
	for _, c := range changes {
		ov = ov.with(c)
		switch c.Kind {
		case ChangeCreateRelation, ChangeEdge, ChangeDropRelation, ChangeRenameRelation, ChangeDropSchema, ChangeDiscardTemp:
		case ChangePrepare:
			s.RegisterPrepared(c.Name, c.Text)
		case ChangeDeallocate:
			if c.Name == "" {
				s.prepared = nil
			} else {
				delete(s.prepared, c.Name)
			}
		case ChangeDiscardAll:
			s.prepared = nil
			s.tx.apply(c)
			s.keyDirty = true
		default:
			s.tx.apply(c)
			s.keyDirty = true
		}
	}
	if ov != s.ov {
		s.ov = ov.seal()
		// The overlay is part of every key: keys computed for the old
		// one must not come back from the recent list.
		s.keyDirty = true
		s.recent = [4]recentKey{}
	}
}

// Unsettled returns a session for judging a message that the client sent
// before the server confirmed earlier ones (pipelining), whose changes,
// pending, may or may not happen. It knows s's relations with pending's
// changes to relations applied (their edges and drops err towards
// reaching more), but not s's settings: its search_path is unknown, as
// after a SET that may or may not have run, and it has no prepared
// statements.
func (s *Session) Unsettled(pending ...StateChange) *Session {
	u := NewSession(s.id)
	ov := s.ov
	for _, c := range pending {
		ov = ov.with(c)
	}
	if ov != s.ov {
		ov = ov.seal()
	}
	u.ov = ov
	return u
}

// Sync reconciles the transaction state with the status byte of the
// server's ReadyForQuery ('I', 'T' or 'E').
func (s *Session) Sync(txStatus byte) {
	if s.tx.sync(txStatus) {
		s.keyDirty = true
	}
}

// RegisterPrepared records a named prepared statement: a protocol-level
// Parse with a name (text is the statement), or SQL PREPARE (Apply does it).
// SQL EXECUTE and Bind can run either, so both are tracked in one
// namespace, as the server does.
func (s *Session) RegisterPrepared(name, text string) {
	if s.prepared == nil {
		s.prepared = map[string]string{}
	}
	s.prepared[name] = text
}

// ClosePrepared forgets a named prepared statement (Close message).
func (s *Session) ClosePrepared(name string) { delete(s.prepared, name) }

// Prepared returns a prepared statement's text.
func (s *Session) Prepared(name string) (string, bool) {
	t, ok := s.prepared[name]
	return t, ok
}

func (s *Session) lookupPrepared(name string) (string, bool) { return s.Prepared(name) }

// stateKey returns the part of the cache key that depends on the session:
// everything a decision can depend on besides the text.
func (s *Session) stateKey(pol *Policy, ce *catalogEntry) string {
	if !s.keyDirty && s.keyPolicy == pol && s.keyCat == ce {
		return s.key
	}
	if s.keyPolicy != pol || s.keyCat != ce {
		if s.keyPolicy != pol {
			s.mask = pol.matchRules(&s.id)
		}
		s.recent = [4]recentKey{}
	} else {
		for i := range s.recent {
			if rk := &s.recent[i]; rk.key != "" && rk.tx.equal(&s.tx) {
				s.key, s.keyDirty = rk.key, false
				return s.key
			}
		}
	}
	var b strings.Builder
	b.WriteString(strconv.FormatUint(pol.version, 36))
	b.WriteByte('|')
	if ce != nil {
		b.WriteString(strconv.FormatUint(ce.version, 36))
	}
	b.WriteByte('|')
	b.WriteString(strconv.FormatUint(s.mask, 36))
	b.WriteByte('|')
	// $user expands to the current role, else the session user.
	b.WriteString(quoteIdent(s.id.User))
	b.WriteByte('|')
	// Statements later in a message can end the transaction or roll back
	// to a savepoint, so everything the transaction state holds matters.
	writeSettings(&b, s.tx.cur)
	if s.tx.inTx {
		b.WriteString("|tx|")
		writeSettings(&b, s.tx.sess)
		writeSettings(&b, s.tx.start)
		for _, sp := range s.tx.saves {
			b.WriteString(quoteIdent(sp.name))
			writeSettings(&b, sp.cur)
			writeSettings(&b, sp.sess)
		}
	} else if !s.tx.sess.path.equal(s.tx.cur.path) || s.tx.sess.role != s.tx.cur.role {
		b.WriteString("|sess|")
		writeSettings(&b, s.tx.sess)
	}
	b.WriteString("|init|")
	writeSettings(&b, s.tx.initial)
	if k := s.ov.fingerprint(); k != "" {
		b.WriteString("|rel|")
		b.WriteString(k)
	}
	s.key, s.keyPolicy, s.keyCat, s.keyDirty = b.String(), pol, ce, false
	s.recent[s.next] = recentKey{tx: s.tx.clone(), key: s.key}
	s.next = (s.next + 1) % len(s.recent)
	return s.key
}

func writeSettings(b *strings.Builder, st settings) {
	b.WriteString(quoteIdent(st.role))
	b.WriteByte(':')
	if st.path.known {
		for _, p := range st.path.entries {
			b.WriteString(quoteIdent(p))
			b.WriteByte(',')
		}
	} else {
		b.WriteByte('?')
	}
	b.WriteByte(';')
}

// JudgeOpaque decides on something that runs code pgmoat cannot see, such
// as a protocol-level FunctionCall message: what describes it for the
// sentence ("FunctionCall of function OID 1234").
func (e *Engine) JudgeOpaque(s *Session, what string) *Result {
	pol := e.pol.Load()
	s.stateKey(pol, e.catalog(s.id.Database))
	v := &Verdict{Text: what, Line: 1, Col: 1, Effects: []Effect{{Op: OpOpaque, Object: everything(), What: what}}}
	decide(pol, s.mask, v)
	r := &Result{Statements: []*Verdict{v}}
	r.finish()
	return r
}
