package enforce

import (
	"context"
	"slices"

	"github.com/jackc/pgx/v5/pgproto3"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgmoat/pgmoat/approvals"
	"github.com/pgmoat/pgmoat/audit"
	"github.com/pgmoat/pgmoat/proxy"
	"github.com/pgmoat/pgmoat/rules"
)

// sessionState is what enforcement keeps of one client session. The
// session's client→server side (Intercept, TryIntercept) and its
// server→client side (ServerMessage) both use it, so mu guards everything
// below it but the last three fields, which do not change.
//
// What every message reads comes first, so that it sits on the struct's
// first two cache lines; the session's identity for the audit log, a few
// hundred bytes used only when something is recorded, comes last.
type sessionState struct {
	e *Enforcer

	// Checked before every client message, so read without mu: reread
	// says the session's settings must be read back from the server
	// before the next statement is judged (ServerMessage sets it, under
	// mu); ownBlock says a guard opened the transaction that the client's
	// Sync must end (closeOwnBlock); pending is a guard a Bind opened,
	// which the portal's Execute closes. The last two belong to the
	// client→server side alone.
	reread   atomic.Bool
	ownBlock atomic.Bool
	pending  atomic.Pointer[extGuard]

	mu       sync.Mutex
	analysis *rules.Session // the session's state as confirmed by the server
	// unconfirmed holds the tags (*queryTag, *executeTag) of forwarded
	// messages whose state changes the server has not confirmed yet.
	unconfirmed []any
	// spareTag is the last queryTag settled, for the next Query that
	// needs one: a session's BEGIN and COMMIT are tagged in every
	// transaction. The proxy keeps no tag past its request's reply.
	spareTag *queryTag
	// sqlPrepared names the statements prepared with SQL PREPARE, which
	// Bind can run without new text; stmts keeps every protocol-level
	// statement (Parse) the server confirmed, with the policy that judged
	// it, and portals the judgement of portals whose execution changes
	// session state.
	sqlPrepared map[string]bool
	stmts       map[string]*parsedStmt // named; the unnamed one is unnamedStmt
	// binds finds the statements in stmts that Binds name, without a map
	// look-up.
	binds stmtIndex
	// unnamedStmt is the unnamed statement the server confirmed. changes
	// are the tags of the Parses, statement Closes and Binds of named
	// portals the server has not answered, oldest first (statements.go);
	// spareChanges are answered ones for reuse, spareUnnamed an unnamed
	// statement's record that a later one replaced. answered, when not
	// nil, is closed at the next answer: a Bind or Execute waits on it
	// (awaitAnswers).
	unnamedStmt  *parsedStmt
	changes      []*stmtChange
	spareChanges []*stmtChange
	spareUnnamed *parsedStmt
	answered     chan struct{}
	// syncs counts the client's Syncs; the client→server side alone
	// reads and writes it.
	syncs uint64
	// portalNames are the named portals the server confirmed bound in
	// the current transaction, each with the savepoints the transaction
	// held when it was bound (statements.go).
	portalNames map[string]int
	portals     map[string]*rules.Result // named portals
	// unnamedPortal is portals' entry for the unnamed portal, which
	// nearly every Bind uses: kept apart, it costs no map operation.
	unnamedPortal *rules.Result
	// rereadAtTxEnd: a statement run under guard inside a transaction
	// changed settings, which a ROLLBACK may undo; at the end of the
	// transaction they are read again from the server (reread).
	rereadAtTxEnd bool
	// guarded are the portals bound from statements judged Verify, whose
	// Executes run under guard.
	guarded map[string]*guardedPortal
	// madeOIDs are the protected relations the session created under
	// guard (see measured).
	madeOIDs map[string]bool
	// snapName is the session's prepared snapshot (see addSnapshot),
	// prepared for the policy of version snapPolicy.
	snapName   string
	snapPolicy uint64

	client    *proxy.ClientSession
	started   time.Time
	auditBase audit.Event
}

// queryTag follows a forwarded simple Query whose statements change
// session state: the i-th CommandComplete confirms the i-th statement.
type queryTag struct {
	res      *rules.Result
	next     int
	failed   bool
	pathMove bool // a search_path or role change was applied
	wasInTx  bool
}

// executeTag follows a forwarded Execute of a portal whose statement
// changes session state: it is that statement's judgement (which nothing
// changes once a portal holds it), so tagging an Execute allocates
// nothing. Two Executes of one portal in flight have equal tags; the
// server answers in order, and settling the first equal tag settles the
// older one.
type executeTag rules.Result

func (t *executeTag) changes() []rules.StateChange { return allChanges((*rules.Result)(t)) }

func (st *sessionState) event(kind audit.Kind) audit.Event {
	ev := st.auditBase
	ev.Kind = kind
	return ev
}

// inTransaction reports whether the session is inside a transaction
// block (or a failed one), as of the server's last ReadyForQuery.
func (st *sessionState) inTransaction() bool {
	status := st.client.TxStatus()
	return status == 'T' || status == 'E'
}

// judge runs f against the session's analysis state, or, while a state
// change the client pipelined is unconfirmed, against a session whose
// search_path is unknown (the strictest assumption) that knows the
// relations the session made and those the unconfirmed messages make.
func (st *sessionState) judge(f func(*rules.Session) *rules.Result) *rules.Result {
	res, d := st.analyse(f)
	st.judged(res, d)
	return res
}

// analyse is judge without the metrics: the event loop may give a message
// up to Intercept, which then counts it.
func (st *sessionState) analyse(f func(*rules.Session) *rules.Result) (*rules.Result, time.Duration) {
	t0 := sinceStart()
	st.mu.Lock()
	rs := st.analysis
	if len(st.unconfirmed) > 0 {
		rs = st.analysis.Unsettled(st.pendingLocked()...)
	}
	res := f(rs)
	st.mu.Unlock()
	return res, sinceStart() - t0
}

// clockStart anchors sinceStart.
var clockStart = time.Now()

// sinceStart reads the monotonic clock alone: time.Since of a time that
// carries a monotonic reading is one clock read, where time.Now is two
// (the wall clock too), and analyse times every statement.
func sinceStart() time.Duration { return time.Since(clockStart) }

// judged counts a judged message in the metrics.
func (st *sessionState) judged(res *rules.Result, d time.Duration) {
	shard := st.client.MetricShard()
	st.e.met.AnalysisDuration.Observe(shard, d)
	if res.Path == rules.PathFull {
		st.e.met.AnalysisCache.Add(shard, st.e.cacheMis, 1)
	} else {
		st.e.met.AnalysisCache.Add(shard, st.e.cacheHit, 1)
	}
	if res.Action != rules.Hold {
		st.count(res, res.Action)
	}
}

// count adds the message's statements to pgmoat_statements_total, under
// decision and each statement's most severe operation. A message the
// policy would hold is counted once it is clear what happened to it
// (hold, or block inside a transaction block), as the audit log records
// it.
func (st *sessionState) count(res *rules.Result, decision rules.Action) {
	shard := st.client.MetricShard()
	for _, v := range res.Statements {
		st.e.met.Statements.Add(shard, st.e.counters[decision][v.DecisiveOp()], 1)
	}
}

// allowed records the statements of a message that is let through, when
// audit.statements is all. why says what let a held or blocked statement
// through ("pre-approved", "approved"); the recorded decision is what
// happened to the statement (allow, or log), not what the policy alone
// would have done.
//
// allowed itself is only the test, the records in a function of their
// own: most deployments record decisions only, and every statement let
// through passes here.
func (st *sessionState) allowed(res *rules.Result, why string) {
	if st.e.audit.AllStatements() {
		st.recordAllowed(res, why)
	}
}

func (st *sessionState) recordAllowed(res *rules.Result, why string) {
	for _, v := range res.Statements {
		ev := st.event(audit.Statement)
		ev.Statement = v.Text
		ev.Fingerprint, _ = v.Fingerprint()
		ev.Decision = "allow"
		if v.Action == rules.Log && why == "" {
			ev.Decision = "log"
		}
		ev.Reason = why
		ev.Rule = v.Rule
		st.e.audit.RecordAsync(ev)
	}
}

// recordDecision writes a non-allow decision to the audit log, durably;
// blast is what the statement was measured to do under guard, "" when it
// did not run.
func (st *sessionState) recordDecision(res *rules.Result, decision, blast string) error {
	v := res.Decision()
	ev := st.event(audit.Decision)
	ev.Statement = joinTexts(res)
	if v != nil {
		ev.Fingerprint, _ = v.Fingerprint()
		ev.Rule = v.Rule
		ev.Reason = v.Sentence
	}
	ev.BlastRadius = blast
	ev.Decision = decision
	ev.Operations, ev.Objects = effectsOf(res)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return st.e.audit.Record(ctx, ev)
}

// serverMessage applies confirmed state changes and watches settings the
// server reports.
func (st *sessionState) serverMessage(tag any, typ byte, body []byte) error {
	if typ == 'S' {
		name, value, err := proxy.DecodeParameterStatus(body)
		if err != nil {
			return nil // relayed as it is; the client will judge it
		}
		if err := rules.CheckParameter(name, value); err != nil && st.e.engine.Policy().ProtectsAnything() {
			st.e.log.Warn("session changed a setting that makes lexing unsafe; closing it", "session", st.auditBase.SessionID, "err", err)
			ev := st.event(audit.SessionEnd)
			ev.EndReason = "lexer_state"
			ev.Error = err.Error()
			st.e.audit.RecordAsync(ev)
			return proxy.Refuse("42501", "pgmoat closed this session: "+err.Error(),
				"After this setting, PostgreSQL would split statements differently from pgmoat's parser.")
		}
		return nil
	}
	st.mu.Lock() // released by hand at the end, as in forwarded
	switch t := tag.(type) {
	case *stmtChange:
		switch typ {
		case '1', '3':
			st.answeredLocked(t, true)
		case '2':
			if t.portal {
				st.answeredLocked(t, true)
			}
		case 'E', 0:
			st.answeredLocked(t, false)
		}
	case *queryTag:
		switch typ {
		case 'C':
			if t.next < len(t.res.Statements) {
				ch := t.res.Statements[t.next].Changes
				st.applyLocked(ch)
				if movesPath(ch) {
					t.pathMove = true
				}
			}
			t.next++
		case 'E':
			t.failed = true
		case 'Z':
			if t.failed && t.pathMove && !t.wasInTx && body[0] == 'I' {
				// The implicit transaction of the message rolled back
				// the SETs that ran before the error; pgmoat cannot tell
				// exactly what remains, so it assumes nothing.
				st.analysis.Apply(rules.StateChange{Kind: rules.ChangeSearchPath})
			}
			st.settledLocked(t)
		case 0:
			st.settledLocked(t)
		}
	case *executeTag:
		switch typ {
		case 'C':
			st.applyLocked(t.changes())
			st.settledLocked(t)
		case 'E', 0:
			st.settledLocked(t)
		}
	}
	if typ == 'Z' {
		if body[0] == 'I' && len(st.portalNames) > 0 {
			clear(st.portalNames) // a transaction's end closes its portals
		}
		moved := st.analysis.Sync(body[0])
		if body[0] == 'I' && st.rereadAtTxEnd {
			st.rereadAtTxEnd = false
			st.reread.Store(true)
			st.analysis.Apply(rules.StateChange{Kind: rules.ChangeSearchPath})
		}
		// Code pgmoat cannot follow (a DO block, a function, a reload of
		// the server's configuration) left the search_path unknown: read
		// it back before the next statement is judged. An aborted
		// transaction cannot answer; its end can. (A session idle again
		// with nothing applied was checked at its last ReadyForQuery.)
		if moved {
			if _, known := st.analysis.SearchPath(); !known && body[0] != 'E' {
				st.reread.Store(true)
			}
		}
	}
	st.mu.Unlock()
	return nil
}

// needsReread reports whether the session's settings must be read from
// the server before the next statement is judged.
func (st *sessionState) needsReread() bool { return st.reread.Load() }

// rereadSettings reads the session's search_path from the server, on the
// session's own connection, invisibly to the client. Until it is read,
// the search_path is unknown: the strictest assumption.
func (st *sessionState) rereadSettings(ctx context.Context) error {
	x := st.client.NewExchange()
	r := x.Add(&pgproto3.Query{String: "SELECT pg_catalog.current_setting('search_path'), " +
		"CASE WHEN current_user = session_user THEN '' ELSE current_user::text END"}, proxy.ReplyCollect)
	if err := x.Run(ctx); err != nil {
		return proxy.Refuse("08006", "pgmoat lost track of the server while reading the session's settings: "+err.Error(), "")
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	st.reread.Store(false)
	clear(st.portalNames) // what made the settings unknown may have opened or closed portals
	if r.Err != nil || len(r.Rows) != 1 || len(r.Rows[0]) != 2 {
		// An aborted transaction: it stays unknown until the next end
		// of a transaction.
		st.rereadAtTxEnd = true
		return nil
	}
	st.analysis.ReadBack(string(r.Rows[0][0]), string(r.Rows[0][1]))
	return nil
}

// settledLocked forgets the tag of a message the server has finished.
func (st *sessionState) settledLocked(tag any) {
	if i := slices.Index(st.unconfirmed, tag); i >= 0 {
		st.unconfirmed = slices.Delete(st.unconfirmed, i, i+1)
		if qt, ok := tag.(*queryTag); ok {
			*qt = queryTag{}
			st.spareTag = qt
		}
	}
}

// pendingLocked returns the state changes of forwarded messages the
// server has not confirmed yet: they may or may not happen.
func (st *sessionState) pendingLocked() []rules.StateChange {
	var out []rules.StateChange
	for _, tag := range st.unconfirmed {
		switch t := tag.(type) {
		case *queryTag:
			for _, v := range t.res.Statements[min(t.next, len(t.res.Statements)):] {
				out = append(out, v.Changes...)
			}
		case *executeTag:
			out = append(out, t.changes()...)
		}
	}
	return out
}

func (st *sessionState) applyLocked(changes []rules.StateChange) {
	stale := false
	applied := 0 // changes[:applied] are in st.analysis already
	for i, ch := range changes {
		switch ch.Kind {
		case rules.ChangeCreateRelation, rules.ChangeEdge, rules.ChangeRenameRelation, rules.ChangeDropRelation, rules.ChangeDropSchema:
			// The catalog snapshot no longer says what the database
			// holds: the next session reloads it (what this one made
			// reaches the others at once through Learn, below; the reload
			// also brings what was made outside pgmoat).
			stale = stale || ch.Relation.Schema != "pg_temp"
		case rules.ChangePrepare:
			if st.sqlPrepared == nil {
				st.sqlPrepared = map[string]bool{}
			}
			st.sqlPrepared[ch.Name] = true
		case rules.ChangeDeallocate:
			if ch.Name == "" || ch.Name == st.snapName {
				st.snapName = "" // DEALLOCATE ALL takes pgmoat's too
			}
			// Statements prepared with Parse go too; the unnamed one
			// is not in the server's namespace of names.
			if ch.Name == "" {
				st.sqlPrepared = nil
				st.dropNamedStmtsLocked()
			} else {
				delete(st.sqlPrepared, ch.Name)
				delete(st.stmts, ch.Name)
				st.binds.clear()
			}
		case rules.ChangeDeclareCursor, rules.ChangeCloseCursor:
			// A cursor took the name, or the portal closed (CLOSE ALL:
			// every one).
			if ch.Name == "" {
				clear(st.portalNames)
			} else {
				delete(st.portalNames, ch.Name)
			}
		case rules.ChangeRelease, rules.ChangeRollbackTo:
			// Which portals the savepoint's end concerns depends on the
			// savepoints before it, changes[:i] included.
			st.analysis.Apply(changes[applied:i]...)
			applied = i
			st.savepointEndLocked(ch)
		case rules.ChangeRollback, rules.ChangeCommit, rules.ChangeStaleSettings:
			// The portals closed, or code pgmoat cannot read may have
			// closed and opened some: an Execute of a named portal is
			// judged until a Bind makes it again.
			clear(st.portalNames)
		case rules.ChangeDiscardAll:
			clear(st.portalNames)
			st.sqlPrepared, st.portals, st.guarded = nil, nil, nil
			st.dropNamedStmtsLocked() // the unnamed statement stays, as on the server
			st.unnamedPortal = nil
			st.snapName = ""
		}
	}
	if stale {
		st.e.cats.release(st.auditBase.Database)
	}
	st.analysis.Apply(changes[applied:]...)
	// The database's other sessions count what this one made too.
	st.e.engine.Learn(st.auditBase.Database, changes...)
}

func movesPath(changes []rules.StateChange) bool {
	for _, ch := range changes {
		switch ch.Kind {
		case rules.ChangeSearchPath, rules.ChangeResetSearchPath, rules.ChangeRole, rules.ChangeResetAll, rules.ChangeDiscardAll:
			return true
		}
	}
	return false
}

func hasChanges(res *rules.Result) bool {
	for _, v := range res.Statements {
		if len(v.Changes) > 0 {
			return true
		}
	}
	return false
}

func allChanges(res *rules.Result) []rules.StateChange {
	if len(res.Statements) == 1 {
		return res.Statements[0].Changes // read only, by every caller
	}
	var out []rules.StateChange
	for _, v := range res.Statements {
		out = append(out, v.Changes...)
	}
	return out
}

// holdRequest describes res to the approvals store: the statement, who
// sent it, the rule that holds it, and blast, what it was measured to do
// under guard ("" when it did not run).
func (st *sessionState) holdRequest(res *rules.Result, blast string) approvals.Request {
	v := res.Decision()
	var fps []string
	for _, s := range res.Statements {
		if fp, err := s.Fingerprint(); err == nil {
			fps = append(fps, fp)
		}
	}
	return approvals.Request{
		Statement:    joinTexts(res),
		Fingerprints: fps,
		User:         st.auditBase.User,
		Database:     st.auditBase.Database,
		Application:  st.auditBase.Application,
		Client:       st.auditBase.Client,
		SessionID:    st.auditBase.SessionID,
		Rule:         v.Rule,
		Reason:       v.Sentence,
		BlastRadius:  blast,
	}
}
