package enforce

import (
	"context"
	"slices"
	"time"

	"github.com/pgmoat/pgmoat/proxy"
	"github.com/pgmoat/pgmoat/rules"
)

// What a session's prepared statements are follows the server's answers,
// not the client's requests. A Parse or a Close of a statement can fail
// (a Parse of a name the server already holds fails with 42P05 and leaves
// the old statement in place), and after any error in the extended
// protocol the server skips every message up to the next Sync: a Parse or
// Close among them never happens. Had pgmoat taken a Parse at its word, a
// client could Parse a statement pgmoat guards, Parse a harmless text
// under the same name (which the server refuses), and Bind the name: the
// server would run the first statement, judged as the second.
//
// So a forwarded Parse, or Close of a statement, is tagged (stmtChange),
// and stmts changes when the server answers ParseComplete or
// CloseComplete; an error, or a skip, leaves it as it was. Until then the
// name's statement is one of two, and a Bind of it is judged by the one
// it will meet:
//   - after a Parse or Close of the name in the same batch (no Sync in
//     between), by that message's: if it fails, the server skips the Bind
//     too;
//   - after one in an earlier batch, not yet answered, by neither: the
//     Bind waits for the answer (the batch ended with a Sync, so the
//     server answers without the client), on the blocking path;
//   - otherwise by stmts.
//
// SQL EXECUTE of a name with a change unanswered is judged as of a
// statement pgmoat does not know (rules.Session.Unsure).

// stmtChange is the tag of a forwarded Parse (ps, the statement it
// prepares) or Close of a prepared statement (ps nil), or of a Bind of a
// named portal (portal true).
type stmtChange struct {
	name   string
	ps     *parsedStmt
	portal bool
	batch  uint64 // the client's Syncs before the message (sessionState.syncs)
}

// stmtAnswerWait is how long a Bind waits for the server to answer an
// earlier batch's Parse or Close of its statement before it is refused.
const stmtAnswerWait = 30 * time.Second

// newStmtChangeLocked tags a Parse (ps) or Close (ps nil) of name, or a
// Bind of the named portal name (portal), that is being forwarded.
func (st *sessionState) newStmtChangeLocked(name string, ps *parsedStmt, portal bool) *stmtChange {
	var t *stmtChange
	if n := len(st.spareChanges); n > 0 {
		t = st.spareChanges[n-1]
		st.spareChanges = st.spareChanges[:n-1]
	} else {
		t = new(stmtChange)
	}
	*t = stmtChange{name: name, ps: ps, portal: portal, batch: st.syncs}
	st.changes = append(st.changes, t)
	if name != "" && !portal {
		st.analysis.Unsure(name) // the unnamed statement has no SQL name
	}
	return t
}

// parsedLocked records a Parse of name being forwarded: text is the
// statement, res its judgement when executing it changes session state.
// It returns the Parse's tag, whose statement the caller may still mark
// for guarding (verify) before it unlocks.
func (st *sessionState) parsedLocked(name, text string, res *rules.Result) *stmtChange {
	var ps *parsedStmt
	if name == "" && st.spareUnnamed != nil {
		// A client of the extended protocol Parses the unnamed statement
		// before every statement: its records take turns.
		ps, st.spareUnnamed = st.spareUnnamed, nil
	} else {
		ps = new(parsedStmt)
	}
	ps.set(name, text, st.e.engine.Policy().Version())
	ps.res = res
	return st.newStmtChangeLocked(name, ps, false)
}

// answeredLocked applies the server's answer to t: done is true for
// ParseComplete or CloseComplete, false for an error or a skip.
func (st *sessionState) answeredLocked(t *stmtChange, done bool) {
	// The server answers in order: t is the oldest, but for a tag
	// answered before (a tag has one answer; this is defence).
	if len(st.changes) == 0 || st.changes[0] != t {
		i := slices.Index(st.changes, t)
		if i < 0 {
			return
		}
		st.changes = slices.Delete(st.changes, i, i+1)
	} else {
		n := copy(st.changes, st.changes[1:])
		st.changes[n] = nil
		st.changes = st.changes[:n]
	}
	switch {
	case t.portal:
		if done {
			st.portalBoundLocked(t.name)
		}
	default:
		if t.name != "" {
			st.analysis.Sure(t.name)
		}
		if done {
			st.applyStmtLocked(t.name, t.ps)
		}
	}
	if st.answered != nil {
		close(st.answered)
		st.answered = nil
	}
	*t = stmtChange{}
	st.spareChanges = append(st.spareChanges, t)
}

// applyStmtLocked makes ps the statement named name (nil: none), as the
// server confirmed.
func (st *sessionState) applyStmtLocked(name string, ps *parsedStmt) {
	if name == "" {
		// Kept apart from the map: a client of the extended protocol
		// Parses it before every statement.
		if old := st.unnamedStmt; old != nil && old != ps {
			st.spareUnnamed = old // nothing else refers to it
		}
		st.unnamedStmt = ps
		return
	}
	if ps == nil {
		delete(st.stmts, name)
		st.binds.clear()
	} else {
		if st.stmts == nil {
			st.stmts = map[string]*parsedStmt{}
		}
		st.stmts[name] = ps
		st.binds.add(ps)
	}
	// One namespace on the server: a statement prepared either way
	// replaces, or closes, the other's.
	delete(st.sqlPrepared, name)
	if ps == nil {
		st.analysis.ClosePrepared(name)
	} else {
		st.analysis.RegisterPrepared(name, ps.text)
	}
}

// dropNamedStmtsLocked forgets the named statements (DEALLOCATE ALL,
// DISCARD ALL), keeping the unnamed one.
func (st *sessionState) dropNamedStmtsLocked() {
	st.stmts = nil
	st.binds.clear()
}

// stmtLocked returns the statement a Bind of name, sent now, will bind:
// nil for one the server does not hold. sure is false while an earlier
// batch's Parse or Close of the name is unanswered (awaitStmt).
func (st *sessionState) stmtLocked(name []byte) (ps *parsedStmt, sure bool) {
	for i := len(st.changes) - 1; i >= 0; i-- {
		t := st.changes[i]
		if t.portal || t.name != string(name) {
			continue
		}
		if t.batch == st.syncs {
			return t.ps, true
		}
		return nil, false
	}
	if len(name) == 0 {
		return st.unnamedStmt, true
	}
	if ps = st.binds.find(name); ps == nil {
		if ps = st.stmts[string(name)]; ps != nil {
			st.binds.add(ps)
		}
	}
	return ps, true
}

// awaitStmt returns the statement a Bind of name will bind, waiting for
// the server's answers to earlier batches' Parses and Closes of it.
func (st *sessionState) awaitStmt(ctx context.Context, name []byte) (ps *parsedStmt, err error) {
	err = st.awaitAnswers(ctx, "a Parse or Close of prepared statement "+rules.QuoteIdent(string(name))+", which the Bind depends on",
		func() (sure bool) {
			ps, sure = st.stmtLocked(name)
			return sure
		})
	return ps, err
}

// awaitAnswers calls sure, under mu, until it reports true, waiting for
// the server's next answer to a tagged change between calls. The first
// wait sends the server what the relay still buffers, which the answer
// may follow; what says what is waited for, in the refusal when the
// answer does not come in time.
func (st *sessionState) awaitAnswers(ctx context.Context, what string, sure func() bool) error {
	var deadline *time.Timer
	for {
		st.mu.Lock()
		if sure() {
			st.mu.Unlock()
			return nil
		}
		if st.answered == nil {
			st.answered = make(chan struct{})
		}
		answered := st.answered
		st.mu.Unlock()
		if deadline == nil {
			if err := st.client.FlushServer(); err != nil {
				return err
			}
			deadline = time.NewTimer(stmtAnswerWait)
			defer deadline.Stop()
		}
		select {
		case <-answered:
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-deadline.C:
			return proxy.Refuse("08006", "pgmoat stopped waiting for the server to answer "+what, "")
		}
	}
}

// synced notes a Sync from the client: the messages after it are a new
// batch, which the server runs even when one before it failed.
func (st *sessionState) synced() { st.syncs++ }

// Portals, too, are the server's: a cursor declared in SQL, or opened by a
// function, is a portal that an Execute message runs as FETCH would, so an
// Execute of a portal pgmoat did not see bound would run a query it never
// judged. The session keeps the names of the portals the server confirmed
// bound (BindComplete) and forgets each at its end: a Close, the end of
// the transaction, a ROLLBACK TO a savepoint set before its Bind, or code
// pgmoat cannot read (which may close and open any). An Execute of
// another named portal is judged as opaque (refused, or held, while
// tables are protected). The unnamed portal is only ever bound by a
// Bind, or by a simple Query, which runs it at once.

// portalBindLocked tags a Bind of the named portal name being forwarded.
func (st *sessionState) portalBindLocked(name string) *stmtChange {
	return st.newStmtChangeLocked(name, nil, true)
}

// portalBoundLocked records that the server bound the named portal name.
func (st *sessionState) portalBoundLocked(name string) {
	if st.portalNames == nil {
		st.portalNames = map[string]int{}
	}
	st.portalNames[name] = st.analysis.Savepoints()
}

// savepointEndLocked follows the named portals through the RELEASE or
// ROLLBACK TO ch, which st.analysis has not applied yet, as the server
// does: the portals bound since the savepoint was set pass to the
// subtransaction around it at RELEASE, and close at ROLLBACK TO; those
// bound before it stay open either way. (A portal that failed in the
// rolled-back part stays open too, only to refuse to run.)
func (st *sessionState) savepointEndLocked(ch rules.StateChange) {
	at := st.analysis.Savepoint(ch.Name)
	if at < 0 {
		// The server knew a savepoint pgmoat did not: it no longer
		// knows which portals are open.
		clear(st.portalNames)
		return
	}
	for name, depth := range st.portalNames {
		switch {
		case depth <= at:
		case ch.Kind == rules.ChangeRollbackTo:
			delete(st.portalNames, name)
		default:
			st.portalNames[name] = at
		}
	}
}

// portalKnownLocked reports whether an Execute of the named portal name,
// sent now, runs a portal that a Bind pgmoat judged made: one the server
// confirmed bound, or one bound earlier in the same batch (if that Bind
// fails, the server skips the Execute). sure is false while an earlier
// batch's Bind of it is unanswered.
func (st *sessionState) portalKnownLocked(name []byte) (known, sure bool) {
	for i := len(st.changes) - 1; i >= 0; i-- {
		t := st.changes[i]
		if !t.portal || t.name != string(name) {
			continue
		}
		if t.batch == st.syncs {
			return true, true
		}
		return false, false
	}
	_, known = st.portalNames[string(name)]
	return known, true
}

// awaitPortal is portalKnownLocked, waiting for the server's answers to
// earlier batches' Binds of the portal.
func (st *sessionState) awaitPortal(ctx context.Context, name []byte) (known bool, err error) {
	err = st.awaitAnswers(ctx, "a Bind of portal "+rules.QuoteIdent(string(name))+", which the Execute depends on",
		func() (sure bool) {
			known, sure = st.portalKnownLocked(name)
			return sure
		})
	return known, err
}

// executeNamed settles what an Execute of the named portal portal needs
// before the usual: when no Bind pgmoat saw made the portal (decided), v
// and err are the verdict; on the event loop (mayBlock false) that is
// errWouldBlock, and Intercept decides.
func (st *sessionState) executeNamed(ctx context.Context, portal []byte, mayBlock bool) (v proxy.MessageVerdict, decided bool, err error) {
	st.mu.Lock()
	known, sure := st.portalKnownLocked(portal)
	known = known || st.guarded[string(portal)] != nil // run under guard whatever it is
	st.mu.Unlock()
	if known {
		return v, false, nil
	}
	if !mayBlock {
		return v, true, errWouldBlock
	}
	if !sure {
		if known, err = st.awaitPortal(ctx, portal); err != nil || known {
			return v, err != nil, err
		}
	}
	v, err = st.unboundPortal(ctx, portal)
	return v, true, err
}

// unboundPortal judges an Execute of a named portal no Bind that pgmoat
// saw made: a cursor, whose query pgmoat did not judge as it runs.
func (st *sessionState) unboundPortal(ctx context.Context, portal []byte) (proxy.MessageVerdict, error) {
	res := st.judge(func(rs *rules.Session) *rules.Result {
		return st.e.engine.JudgeOpaque(rs, "Execute of portal "+rules.QuoteIdent(string(portal))+
			", which no Bind pgmoat saw made (a cursor's query runs unseen; FETCH from it is judged)")
	})
	if !passes(res) {
		return st.enforce(ctx, 'E', res, "")
	}
	if v, ok := st.logged('E', res); !ok {
		return v, nil
	}
	st.allowed(res, "")
	return proxy.MessageVerdict{}, nil
}
