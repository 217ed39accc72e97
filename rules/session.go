package rules

import (
	"strconv"
	"strings"
	"sync"
)

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
	// idle: the last Sync reported an idle session ('I') and nothing
	// changed the settings since, so another 'I' changes nothing. It is
	// first in the struct: most transactions end with that 'I', and
	// Sync then reads this one cache line of the session.
	idle bool

	id       Identity
	tx       txState
	prepared map[string]string
	// unsure counts, per name, the Parses and Closes of it that the
	// server has not answered: until it does, which statement the name
	// stands for is not known (Unsure).
	unsure  map[string]int
	cursors map[string]string // cursor name → its DECLARE statement
	ov      *overlay          // sealed; nil when the session changed no relation

	// cache key, recomputed when the policy, catalog or state changes
	key       stateKey
	keyPolicy *Policy
	keyCat    *catalogEntry
	keyDirty  bool
	mask      uint64
	// the catalog of the session's database, as of the engine's
	// catalogs cats (Engine.sessionCatalog)
	cats *map[string]*catalogEntry
	cat  *catalogEntry
	// recent keys by state: sessions alternate between a few states
	// (idle, in a transaction), so most recomputations find theirs here.
	recent [4]recentKey
	next   int
}

type recentKey struct {
	tx  txState
	key stateKey
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
	s.keyDirty, s.idle = true, false
}

// ReadBack records the session's settings as the proxy read them from the
// server, after a statement that may have changed them where pgmoat cannot
// see (its Verdict's Changes hold a ChangeStaleSettings) or whenever
// SearchPath reports it unknown: searchPath as current_setting returns it,
// and role the current role, "" when it is the session user. Inside a
// transaction block only the values in force are known: what survives the
// transaction's end stays unknown if it was, to be read again then.
func (s *Session) ReadBack(searchPath, role string) {
	st := settings{role: role}
	st.path.entries, st.path.known = splitIdentList(searchPath)
	if !st.path.known {
		st.path.entries = nil
	}
	s.tx.readBack(st)
	s.keyDirty, s.idle = true, false
}

// SearchPath returns the search_path pgmoat believes is in force; ok is
// false when it is unknown.
func (s *Session) SearchPath() (entries []string, ok bool) {
	return s.tx.cur.path.entries, s.tx.cur.path.known
}

// Savepoints returns how many savepoints the transaction holds now: the
// depth of the subtransaction its statements run in.
func (s *Session) Savepoints() int { return len(s.tx.saves) }

// Savepoint returns the place of the innermost savepoint named name (0
// for the outermost), the one RELEASE and ROLLBACK TO name, or -1 when
// the transaction holds none by that name.
func (s *Session) Savepoint(name string) int {
	for i := len(s.tx.saves) - 1; i >= 0; i-- {
		if s.tx.saves[i].name == name {
			return i
		}
	}
	return -1
}

// Apply applies state changes reported in a Verdict, in order, once the
// statement has completed on the server.
func (s *Session) Apply(changes ...StateChange) {
	ov := s.ov
	for _, c := range changes {
		if touchesRelations(c.Kind) {
			ov = ov.with(c)
		}
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
		case ChangeDeclareCursor:
			if s.cursors == nil {
				s.cursors = map[string]string{}
			}
			s.cursors[c.Name] = c.Text
		case ChangeCloseCursor:
			if c.Name == "" {
				s.cursors = nil
			} else {
				delete(s.cursors, c.Name)
			}
		case ChangeDiscardAll:
			s.prepared, s.cursors = nil, nil
			s.tx.apply(c)
			s.keyDirty, s.idle = true, false
		default:
			s.tx.apply(c)
			s.keyDirty, s.idle = true, false
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

// Recycle gives back r, a result judged for this session, for the memory
// of a later fast-path result, of this session or another: the caller must
// be done with r and keep no reference to it or to its verdicts (their
// strings may be kept: they do not change). Judging a statement that takes
// the fast path then allocates nothing, which on the simple protocol,
// where every statement is judged, is most of what the garbage collector
// would have to follow. Only a single-statement fast-path result is kept
// (in fastResults); others are left to the collector. Recycling r again
// does nothing.
func (s *Session) Recycle(r *Result) {
	if r != nil && r.mem != nil && r.Path == PathFast {
		m := r.mem
		r.mem = nil
		fastResults.Put(m)
	}
}

// fastResults are the fast-path results given back with Recycle. One pool
// for all sessions rather than one result each: an event loop judges the
// statements of many sessions in turn, and handing it the few results it
// just gave back keeps their memory in the processor's cache, where each
// session's own would have gone cold by its next statement.
var fastResults sync.Pool

// Sync reconciles the transaction state with the status byte of the
// server's ReadyForQuery ('I', 'T' or 'E').
//
// It reports whether the state may have moved: false when the session was
// idle at the last Sync and is again, with nothing applied in between.
func (s *Session) Sync(txStatus byte) (moved bool) {
	if txStatus == 'I' && s.idle {
		return false
	}
	if s.tx.sync(txStatus) {
		s.keyDirty = true
	}
	s.idle = txStatus == 'I'
	return true
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

func (s *Session) lookupPrepared(name string) (string, bool) {
	if s.unsure[name] > 0 {
		return "", false // judged as a statement pgmoat does not know
	}
	return s.Prepared(name)
}

// Unsure marks name as one whose prepared statement a message the server
// has not answered yet may replace or remove (a protocol-level Parse or
// Close of it, which may fail). Until as many calls of Sure, SQL EXECUTE
// of it is judged as of a statement pgmoat does not know: the strictest
// judgement, since the server may run either.
func (s *Session) Unsure(name string) {
	if s.unsure == nil {
		s.unsure = map[string]int{}
	}
	s.unsure[name]++
}

// Sure undoes one Unsure of name, once the server has answered.
func (s *Session) Sure(name string) {
	if n := s.unsure[name]; n > 1 {
		s.unsure[name] = n - 1
	} else {
		delete(s.unsure, name)
	}
}

// lookupCursor returns the DECLARE statement of a cursor the session
// declared (one whose transaction ended may still be listed: FETCH of it
// then fails on the server).
func (s *Session) lookupCursor(name string) (string, bool) {
	t, ok := s.cursors[name]
	return t, ok
}

// stateKey returns the part of the cache key that depends on the session:
// everything a decision can depend on besides the text.
func (s *Session) stateKey(pol *Policy, ce *catalogEntry) stateKey {
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
			if rk := &s.recent[i]; rk.key.s != "" && rk.tx.equal(&s.tx) {
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
	b.WriteString(QuoteIdent(s.id.User))
	b.WriteByte('|')
	// Statements later in a message can end the transaction or roll back
	// to a savepoint, so everything the transaction state holds matters.
	writeSettings(&b, s.tx.cur)
	if s.tx.inTx {
		b.WriteString("|tx|")
		if s.tx.failed {
			b.WriteString("failed|")
		}
		writeSettings(&b, s.tx.sess)
		writeSettings(&b, s.tx.start)
		for _, sp := range s.tx.saves {
			b.WriteString(QuoteIdent(sp.name))
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
	s.key, s.keyPolicy, s.keyCat, s.keyDirty = internState(b.String()), pol, ce, false
	s.recent[s.next] = recentKey{tx: s.tx.clone(), key: s.key}
	s.next = (s.next + 1) % len(s.recent)
	return s.key
}

func writeSettings(b *strings.Builder, st settings) {
	b.WriteString(QuoteIdent(st.role))
	b.WriteByte(':')
	if st.path.known {
		for _, p := range st.path.entries {
			b.WriteString(QuoteIdent(p))
			b.WriteByte(',')
		}
	} else {
		b.WriteByte('?')
	}
	b.WriteByte(';')
}
