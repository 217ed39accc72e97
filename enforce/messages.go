package enforce

import (
	"context"
	"errors"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgmoat/pgmoat/approvals"
	"github.com/pgmoat/pgmoat/proxy"
	"github.com/pgmoat/pgmoat/rules"
)

// errWouldBlock is handle's answer, on the event loop, for a message that
// needs more than the loop may do.
var errWouldBlock = errors.New("enforce: the message needs the blocking path")

// handle decides on one client message: the one place where each message
// type is handled, for both of the proxy's paths.
//
// Intercept calls it with mayBlock true, on the session's own goroutine.
// TryIntercept calls it with mayBlock false, on the proxy's event loop,
// where it must not block: there it returns errWouldBlock, having changed
// nothing (metrics included), as soon as the message needs more than the
// analysis, that is a durable write or a wait (a statement to block, hold
// or log, a Bind to judge again, a FunctionCall); a malformed message
// returns its error there too. Intercept then handles the message from the
// start.
func (st *sessionState) handle(ctx context.Context, m *proxy.ClientMessage, mayBlock bool) (proxy.MessageVerdict, error) {
	if pg := st.pendingGuard(); pg != nil && !continuesGuard(m, pg.portal) {
		// A Bind opened a guard whose portal is not executed next: what
		// the Bind did is verified before anything else happens.
		if !mayBlock {
			return proxy.MessageVerdict{}, errWouldBlock
		}
		v, err := st.finishPending(ctx)
		if err != nil {
			return proxy.MessageVerdict{}, err
		}
		if v != nil && m.Type != 'S' {
			return *v, nil
		}
	}
	switch m.Type {
	case 'Q':
		sql, err := m.QueryText()
		if err != nil {
			return proxy.MessageVerdict{}, err
		}
		if st.ownBlockOpen() {
			if !mayBlock {
				return proxy.MessageVerdict{}, errWouldBlock
			}
			if _, err := st.closeOwnBlock(ctx, false); err != nil {
				return proxy.MessageVerdict{}, err
			}
		}
		text, borrowed := m.Borrow(sql)
		return st.statement(ctx, m.Type, text, borrowed, nil, mayBlock)
	case 'P':
		name, sql, err := m.ParseStatement()
		if err != nil {
			return proxy.MessageVerdict{}, err
		}
		if own, err := m.DeclaredTypesFrom(firstNormalOID); err != nil {
			return proxy.MessageVerdict{}, err
		} else if len(own) > 0 && st.e.engine.Policy().ProtectsAnything() {
			// A parameter of a type of the database's own: its input (a
			// domain's check) runs code at Bind, which the guard covers.
			if !mayBlock {
				return proxy.MessageVerdict{}, errWouldBlock
			}
			return st.verifyOwnTypes(ctx, m.Text(sql), name, own)
		}
		text, borrowed := m.Borrow(sql)
		return st.statement(ctx, m.Type, text, borrowed, name, mayBlock)
	case 'B':
		portal, stmt, err := m.BindNames()
		if err != nil {
			return proxy.MessageVerdict{}, err
		}
		ps, settled := st.bindSettled(portal, stmt)
		switch {
		case settled && ps != nil && ps.verify != nil:
			// Judged Verify: the Bind opens the guard.
			if !mayBlock {
				return proxy.MessageVerdict{}, errWouldBlock
			}
			gp := st.bindPortal(string(portal), ps.res, ps.verify, m.Raw)
			return st.guardBind(ctx, string(portal), m.Raw, gp)
		case settled:
			if len(portal) == 0 {
				return proxy.MessageVerdict{}, nil // recorded by bindSettled
			}
			return st.portalBind(portal, proxy.MessageVerdict{}), nil
		}
		if !mayBlock {
			return proxy.MessageVerdict{}, errWouldBlock // judged again: it may block
		}
		v, err := st.bind(ctx, portal, stmt, m.Raw)
		return st.portalBind(portal, v), err
	case 'E':
		portal, err := m.ExecutePortal()
		if err != nil {
			return proxy.MessageVerdict{}, err
		}
		if len(portal) > 0 {
			if v, decided, err := st.executeNamed(ctx, portal, mayBlock); decided {
				return v, err
			}
		}
		gp, v := st.execute(portal)
		if gp == nil {
			return v, nil
		}
		if !mayBlock {
			return proxy.MessageVerdict{}, errWouldBlock
		}
		dec, err := m.Decode()
		if err != nil {
			return proxy.MessageVerdict{}, err
		}
		return st.guardExecute(ctx, string(portal), dec.(*pgproto3.Execute).MaxRows, gp)
	case 'S':
		if st.ownBlockOpen() {
			if !mayBlock {
				return proxy.MessageVerdict{}, errWouldBlock
			}
			st.synced()
			return st.closeOwnBlock(ctx, true)
		}
		st.synced()
		return proxy.MessageVerdict{}, nil
	case 'C':
		// A malformed Close is forwarded for the server to refuse.
		if kind, name, err := m.CloseTarget(); err == nil {
			return st.close(kind, name), nil
		}
		return proxy.MessageVerdict{}, nil
	case 'F':
		if !mayBlock {
			return proxy.MessageVerdict{}, errWouldBlock
		}
		return st.functionCall(ctx)
	}
	// Describe, Sync, Flush, CopyDone, CopyFail: nothing to judge.
	return proxy.MessageVerdict{}, nil
}

// passes reports whether a decision lets the message through.
func passes(res *rules.Result) bool { return res.Action == rules.Allow || res.Action == rules.Log }

// watchBytes is the length from which a message may take long enough to
// analyse (a millisecond and more) that pgmoat watches the client
// meanwhile, and stops the analysis when the client goes. (Such a message
// is always on the blocking path: the event loop hands over messages
// larger than its 16 KiB buffer.)
const watchBytes = 64 << 10

// statement judges the SQL of a Query ('Q'), or of a Parse ('P') that
// prepares statement name, and carries out the decision.
//
// A borrowed text is the message's, in the read buffer, valid only until
// statement returns (proxy.ClientMessage.Borrow). The commonest message,
// a statement let through as it is with nothing to record, is judged and
// forwarded without a copy of it; everything that keeps the text (the
// full analysis, an audit record, a hold, a guard, a tag) gets a copy,
// or the cache's own (a decision found in the exact-text cache: BEGIN,
// COMMIT, any statement without literals seen before).
func (st *sessionState) statement(ctx context.Context, typ byte, text string, borrowed bool, name []byte, mayBlock bool) (proxy.MessageVerdict, error) {
	// With nothing protected, no name needs resolving, so nothing is
	// read back (a session would leave the event loop for it); a reload
	// that protects something makes the next statement read it.
	if st.needsReread() && st.e.engine.Policy().ProtectsAnything() {
		if !mayBlock {
			return proxy.MessageVerdict{}, errWouldBlock
		}
		if err := st.rereadSettings(ctx); err != nil {
			return proxy.MessageVerdict{}, err
		}
	}
	actx, stop := ctx, func() {} // actx ends with the session
	if mayBlock && len(text) >= watchBytes {
		var cancel context.CancelCauseFunc
		actx, cancel = context.WithCancelCause(ctx)
		defer cancel(nil)
		stop = st.client.WatchClient(func() { cancel(approvals.ErrClientDisconnect) })
	}
	res, d := st.analyse(func(rs *rules.Session) *rules.Result {
		if !borrowed {
			return st.e.engine.JudgeContext(actx, rs, text)
		}
		r, kept := st.e.engine.JudgeBorrowed(actx, rs, text)
		if kept != "" {
			text, borrowed = kept, false
		}
		return r
	})
	stop() // before a hold watches the client in its turn
	if actx.Err() != nil {
		// The analysis may have stopped short: nothing of the message is
		// forwarded, and the session ends (the client is gone, or pgmoat
		// is shutting down).
		st.judged(res, d)
		return proxy.MessageVerdict{}, proxy.Refuse("08006", "pgmoat stopped analysing the message: "+context.Cause(actx).Error(), "")
	}
	if res.Action != rules.Allow && !mayBlock {
		return proxy.MessageVerdict{}, errWouldBlock
	}
	// A cached decision's texts are the cache's own: only a fast-path
	// result refers to the borrowed text, and only verify keeps text.
	if borrowed && (res.Action == rules.Verify || res.Borrows() && st.keeps(typ, res)) {
		text = strings.Clone(text)
		res.Keep(text)
	}
	st.judged(res, d)
	if res.Action == rules.Verify {
		return st.verify(ctx, typ, res, text, string(name))
	}
	if !passes(res) {
		return st.enforce(ctx, typ, res, string(name))
	}
	if v, ok := st.logged(typ, res); !ok {
		return v, nil
	}
	st.allowed(res, "")
	return st.forwardPlain(typ, res, string(name)), nil
}

// keeps reports whether carrying out the decision keeps the statement's
// text past the message: a Parse's always (the prepared statement is
// judged again after a reload), a Query's unless it is let through,
// unrecorded, changing no session state.
func (st *sessionState) keeps(typ byte, res *rules.Result) bool {
	return typ == 'P' || res.Action != rules.Allow || hasChanges(res) || st.e.audit.AllStatements()
}

// logged writes a log decision to the audit log before the message goes
// on. When it cannot be written, ok is false and v refuses the message:
// fail closed. The test is all that runs for most statements, and
// inlines; recordLogged does the rest.
func (st *sessionState) logged(typ byte, res *rules.Result) (v proxy.MessageVerdict, ok bool) {
	if res.Action != rules.Log {
		return proxy.MessageVerdict{}, true
	}
	return st.recordLogged(typ, res)
}

func (st *sessionState) recordLogged(typ byte, res *rules.Result) (v proxy.MessageVerdict, ok bool) {
	if err := st.recordDecision(res, "log", ""); err != nil {
		return st.refuseAuditDown(typ, res, err), false
	}
	return proxy.MessageVerdict{}, true
}

// forward lets a judged message through, tagging it when its statements
// change session state so the change is applied once confirmed.
func (st *sessionState) forward(typ byte, res *rules.Result, stmt string) proxy.MessageVerdict {
	return st.forwarded(typ, res, stmt, false)
}

// forwardPlain is forward for a statement the policy let through as it
// is, whose result nothing else has kept (no hold, approval or guard saw
// it): a Query's that changes no session state is given back to the
// session for its next one (rules.Session.Recycle).
func (st *sessionState) forwardPlain(typ byte, res *rules.Result, stmt string) proxy.MessageVerdict {
	return st.forwarded(typ, res, stmt, true)
}

// forwarded is forward and forwardPlain: a Query that changes session
// state is tagged, a Parse remembered. The lock is released by hand, not
// deferred: the deferred call is code of its own, which every statement
// let through ran.
func (st *sessionState) forwarded(typ byte, res *rules.Result, stmt string, recycle bool) proxy.MessageVerdict {
	changes := hasChanges(res)
	st.mu.Lock()
	switch typ {
	case 'Q':
		if !changes {
			if recycle {
				st.analysis.Recycle(res)
			}
			st.mu.Unlock()
			return proxy.MessageVerdict{}
		}
		tag := st.spareTag
		if tag != nil {
			st.spareTag = nil
		} else {
			tag = new(queryTag)
		}
		tag.res, tag.wasInTx = res, st.inTransaction()
		st.unconfirmed = append(st.unconfirmed, tag)
		st.mu.Unlock()
		return proxy.MessageVerdict{Tag: tag}
	case 'P':
		var r *rules.Result
		if changes {
			r = res
		}
		t := st.parsedLocked(stmt, joinTexts(res), r)
		st.mu.Unlock()
		return proxy.MessageVerdict{Tag: t}
	}
	st.mu.Unlock()
	return proxy.MessageVerdict{}
}

// bindSettled reports whether a Bind of stmt to portal is settled without
// judging it: a statement pgmoat did not see prepared (ps nil), or one
// Parse'd and judged under the policy in force, whose judgement the portal
// takes. It is not for a statement prepared with SQL PREPARE, or judged
// under an older policy: bind judges those. A settled Bind whose
// statement needs no guard is recorded here, under the same lock as the
// look-up (the common case: one lock per Bind); a guarded one is left to
// bindPortal.
//
// The lock is released by hand and the maps are tested for being empty
// before they are read, as in execute: every Bind runs this, and the
// deferred call and the map look-ups are code of their own.
func (st *sessionState) bindSettled(portal, stmt []byte) (ps *parsedStmt, ok bool) {
	pv := st.e.engine.Policy().Version()
	st.mu.Lock()
	ps, sure := st.stmtLocked(stmt)
	if !sure || len(st.sqlPrepared) > 0 && st.sqlPrepared[string(stmt)] || ps != nil && ps.policy != pv {
		st.mu.Unlock()
		return ps, false
	}
	if ps == nil || ps.verify == nil {
		switch {
		case ps != nil && ps.res != nil:
			st.setPortalLocked(string(portal), ps.res)
		default:
			st.dropPortalLocked(portal)
		}
		if len(st.guarded) > 0 {
			delete(st.guarded, string(portal))
		}
	}
	st.mu.Unlock()
	return ps, true
}

// bindPortal records what a Bind made of portal: r, the statement's
// judgement when executing it changes session state, and verify, its
// Verify judgement when its Executes run under guard, with a copy of the
// Bind (raw), which it returns. Either may be nil; a portal's earlier
// record goes.
func (st *sessionState) bindPortal(portal string, r, verify *rules.Result, raw []byte) *guardedPortal {
	var gp *guardedPortal
	if verify != nil {
		gp = &guardedPortal{res: verify, bind: append([]byte(nil), raw...)}
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	st.setPortalLocked(portal, r)
	if gp == nil {
		delete(st.guarded, portal)
		return nil
	}
	if st.guarded == nil {
		st.guarded = map[string]*guardedPortal{}
	}
	st.guarded[portal] = gp
	return gp
}

// bind judges a Bind that settled could not settle: a statement
// prepared with SQL PREPARE runs here without new text, so it is judged
// (as EXECUTE of it) under the policy in force now; a statement prepared
// with Parse is judged again when the policy changed since its Parse.
func (st *sessionState) bind(ctx context.Context, portal, stmt, raw []byte) (proxy.MessageVerdict, error) {
	// The state is read again: the server→client side may have changed
	// it (DISCARD ALL, PREPARE) since settled looked. A Parse or Close of
	// the statement in an earlier batch is waited for.
	ps, err := st.awaitStmt(ctx, stmt)
	if err != nil {
		return proxy.MessageVerdict{}, err
	}
	st.mu.Lock()
	sqlPrep := st.sqlPrepared[string(stmt)]
	st.mu.Unlock()
	if !sqlPrep {
		if ps == nil {
			st.bindPortal(string(portal), nil, nil, nil)
			return proxy.MessageVerdict{}, nil
		}
		if pv := st.e.engine.Policy().Version(); ps.policy != pv {
			res := st.judge(func(rs *rules.Session) *rules.Result { return st.e.engine.Judge(rs, ps.text) })
			verify := (*rules.Result)(nil)
			if res.Action == rules.Verify {
				verify = res
			} else if !passes(res) {
				return st.enforce(ctx, 'B', res, "")
			}
			if v, ok := st.logged('B', res); !ok {
				return v, nil
			}
			st.mu.Lock()
			ps.policy, ps.verify = pv, verify
			st.mu.Unlock()
		}
		st.bindPortal(string(portal), ps.res, ps.verify, raw)
		return proxy.MessageVerdict{}, nil
	}
	text := "EXECUTE " + rules.QuoteIdent(string(stmt))
	res := st.judge(func(rs *rules.Session) *rules.Result { return st.e.engine.Judge(rs, text) })
	if res.Action == rules.Verify {
		st.bindPortal(string(portal), nil, res, raw)
		return proxy.MessageVerdict{}, nil
	}
	if !passes(res) {
		return st.enforce(ctx, 'B', res, "")
	}
	if v, ok := st.logged('B', res); !ok {
		return v, nil
	}
	st.allowed(res, "")
	st.bindPortal(string(portal), nil, nil, nil)
	return proxy.MessageVerdict{}, nil
}

// setPortalLocked records r, the judgement of portal's statement when
// executing it changes session state, or nil.
func (st *sessionState) setPortalLocked(portal string, r *rules.Result) {
	if portal == "" {
		st.unnamedPortal = r
		return
	}
	if r == nil {
		if st.portals != nil {
			delete(st.portals, portal)
		}
		return
	}
	if st.portals == nil {
		st.portals = map[string]*rules.Result{}
	}
	st.portals[portal] = r
}

// portalLocked returns the judgement setPortalLocked recorded for portal.
func (st *sessionState) portalLocked(portal []byte) *rules.Result {
	if len(portal) == 0 {
		return st.unnamedPortal
	}
	return st.portals[string(portal)]
}

// dropPortalLocked forgets the judgement recorded for portal.
func (st *sessionState) dropPortalLocked(portal []byte) {
	if len(portal) == 0 {
		st.unnamedPortal = nil
	} else if st.portals != nil {
		delete(st.portals, string(portal))
	}
}

// execute returns the guard of portal, changing nothing, when its
// Executes run under guard. Otherwise it tags an Execute of a portal whose
// statement changes session state, so that the change is applied when the
// server confirms it, and returns the verdict that forwards it.
func (st *sessionState) execute(portal []byte) (*guardedPortal, proxy.MessageVerdict) {
	st.mu.Lock()
	if len(st.guarded) > 0 {
		if gp := st.guarded[string(portal)]; gp != nil {
			st.mu.Unlock()
			return gp, proxy.MessageVerdict{}
		}
	}
	r := st.portalLocked(portal)
	if r == nil {
		st.mu.Unlock()
		return nil, proxy.MessageVerdict{}
	}
	tag := (*executeTag)(r)
	st.unconfirmed = append(st.unconfirmed, tag)
	st.mu.Unlock()
	return nil, proxy.MessageVerdict{Tag: tag}
}

// close handles a Close of a prepared statement ('S') or portal ('P'):
// a statement's is tagged, and applied when the server confirms it
// (statements.go); a portal's judgement is forgotten now.
func (st *sessionState) close(kind byte, name []byte) proxy.MessageVerdict {
	st.mu.Lock()
	defer st.mu.Unlock()
	switch kind {
	case 'S':
		return proxy.MessageVerdict{Tag: st.newStmtChangeLocked(string(name), nil, false)}
	case 'P':
		st.dropPortalLocked(name)
		delete(st.guarded, string(name))
		delete(st.portalNames, string(name))
	}
	return proxy.MessageVerdict{}
}

// portalBind tags v, the verdict on a Bind of portal, when it forwards the
// Bind of a named portal: the portal is known once the server binds it
// (statements.go).
func (st *sessionState) portalBind(portal []byte, v proxy.MessageVerdict) proxy.MessageVerdict {
	if len(portal) == 0 || v.Action != proxy.Forward || v.Tag != nil {
		return v
	}
	st.mu.Lock()
	v.Tag = st.portalBindLocked(string(portal))
	st.mu.Unlock()
	return v
}

// functionCall judges a FunctionCall message: pgmoat cannot see what the
// function does, so it is opaque.
func (st *sessionState) functionCall(ctx context.Context) (proxy.MessageVerdict, error) {
	res := st.judge(func(rs *rules.Session) *rules.Result {
		return st.e.engine.JudgeOpaque(rs, "FunctionCall message (fast-path function call)")
	})
	if !passes(res) {
		return st.enforce(ctx, 'F', res, "")
	}
	v, _ := st.logged('F', res) // the refusal when the log cannot be written
	return v, nil
}

// verify carries out a Verify decision: a pre-approved statement passes
// as it is; a Query runs under guard; a Parse is forwarded (preparing
// runs nothing) and its executions are guarded.
func (st *sessionState) verify(ctx context.Context, typ byte, res *rules.Result, text, name string) (proxy.MessageVerdict, error) {
	if ok, err := st.preApproved(res); ok {
		st.allowed(res, "pre-approved")
		return st.forward(typ, res, name), nil
	} else if err != nil {
		st.e.log.Warn("pre-approval could not be used", "session", st.auditBase.SessionID, "err", err)
	}
	switch typ {
	case 'Q':
		return st.guardQuery(ctx, res, text)
	case 'P':
		if len(res.Statements) == 1 && res.Statements[0].PreparesTransaction() {
			// Which locks the transaction holds is asked in a
			// simple Query; a prepared PREPARE TRANSACTION stays
			// judged as it says.
			return refuse(typ, blockRefusal(res, "send PREPARE TRANSACTION as a simple query, so that pgmoat can check the locks it keeps")), nil
		}
		v := st.forward(typ, res, name)
		if len(res.Statements) == 1 && txControl(res.Statements[0]) != 0 {
			// Transaction control cannot run inside the guard's
			// savepoint (a COMMIT whose deferred triggers made it Verify):
			// in the extended protocol it runs as it is.
			return v, nil
		}
		if t, ok := v.Tag.(*stmtChange); ok {
			st.mu.Lock()
			t.ps.verify = res // the server has not answered the Parse yet: nothing else has it
			st.mu.Unlock()
		}
		return v, nil
	}
	// A Bind judged again after a reload: its Execute is guarded.
	return proxy.MessageVerdict{}, nil
}

// continuesGuard reports whether m belongs to the guard a Bind opened for
// portal: its Execute, a Describe, a Flush.
func continuesGuard(m *proxy.ClientMessage, portal string) bool {
	switch m.Type {
	case 'D', 'H':
		return true
	case 'E':
		p, err := m.ExecutePortal()
		return err == nil && string(p) == portal
	}
	return false
}

// firstNormalOID is PostgreSQL's FirstNormalObjectId: objects with lower
// OIDs are built in.
const firstNormalOID = 16384

// typeInputEscapes asks the server the names of the types oids and
// returns why the input of one reaches outside the transaction, or "".
// A type it cannot name counts as one that does.
func (st *sessionState) typeInputEscapes(ctx context.Context, oids []uint32) (string, error) {
	list := make([]string, len(oids))
	for i, o := range oids {
		list[i] = strconv.FormatUint(uint64(o), 10)
	}
	x := st.client.NewExchange()
	r := x.Add(&pgproto3.Query{String: "SELECT n.nspname, t.typname FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) t.typnamespace" +
		" WHERE t.oid OPERATOR(pg_catalog.=) ANY ('{" + strings.Join(list, ",") + "}'::pg_catalog.oid[])"}, proxy.ReplyCollect)
	if err := x.Run(ctx); err != nil {
		return "", proxy.Refuse("08006", "pgmoat lost track of the server while reading parameter types: "+err.Error(), "")
	}
	if r.Err != nil || len(r.Rows) < len(oids) {
		return "a parameter of a type pgmoat cannot name, whose input runs when the statement is bound", nil
	}
	for _, row := range r.Rows {
		if len(row) != 2 {
			continue
		}
		if why := st.e.engine.TypeInputEscapes(st.auditBase.Database, string(row[0]), string(row[1])); why != "" {
			return "a parameter of type " + rules.QuoteIdent(string(row[0])) + "." + rules.QuoteIdent(string(row[1])) + ": " + why, nil
		}
	}
	return "", nil
}

// verifyOwnTypes handles a Parse that declares a parameter of a type of
// the database's own: judged as usual, but when the analysis would let it
// run unguarded, it is guarded anyway (the Bind runs the type's input).
//
// A type whose input reaches outside the transaction (a domain whose check
// calls dblink) cannot be verified: the statement is refused, as a cast
// to the type in its text would be.
func (st *sessionState) verifyOwnTypes(ctx context.Context, text string, name []byte, oids []uint32) (proxy.MessageVerdict, error) {
	why, err := st.typeInputEscapes(ctx, oids)
	if err != nil {
		return proxy.MessageVerdict{}, err
	}
	res := st.judge(func(rs *rules.Session) *rules.Result {
		if why != "" {
			return st.e.engine.JudgeWithOpaque(rs, text, why)
		}
		return st.e.engine.JudgeWithDoubt(rs, text, "a parameter of a type of the database's own, whose input runs when the statement is bound")
	})
	if res.Action == rules.Verify {
		return st.verify(ctx, 'P', res, text, string(name))
	}
	if !passes(res) {
		return st.enforce(ctx, 'P', res, string(name))
	}
	if v, ok := st.logged('P', res); !ok {
		return v, nil
	}
	st.allowed(res, "")
	return st.forward('P', res, string(name)), nil
}
