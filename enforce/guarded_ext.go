package enforce

import (
	"context"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgmoat/pgmoat/guard"
	"github.com/pgmoat/pgmoat/proxy"
	"github.com/pgmoat/pgmoat/rules"
)

// Guarded execution in the extended protocol: a statement judged Verify
// is prepared (Parse) and bound (Bind) as the client sends them; its
// Execute runs under guard. pgmoat's own requests go through named
// statements and portals of its own, closed at once, so the client's
// unnamed statement and portal stay the client's:
//
//	BEGIN, SAVEPOINT pgmoat_guard, <snapshot>, the client's Execute, <snapshot>, Flush
//
// A violation rolls back to the savepoint and makes the server raise the
// refusal, which skips the client's messages up to its Sync, as any
// error would. When pgmoat's BEGIN opened the transaction (the client had
// none), it stays open until the client's Sync, so that a batch of
// several Executes commits together as it would have; at the Sync pgmoat
// commits it (or rolls it back after an error) and gives the client the
// ReadyForQuery the server would have.

// guardedPortal is a portal bound from a statement judged Verify.
type guardedPortal struct {
	res  *rules.Result
	bind []byte // the client's Bind, whole, to bind again for an approved re-run
}

// extRun is a statement pgmoat runs in the extended protocol on its own
// account: Close (of what an earlier run skipped after an error may have
// left), Parse, Bind, Execute and Close of a statement and portal of its
// own. The replies of all but Execute are hidden; Execute's follow mode.
type extRun struct {
	exec *proxy.ExchangeReply
	all  []*proxy.ExchangeReply
}

func addExtRun(x *proxy.Exchange, n int, sql string, mode proxy.ReplyMode) *extRun {
	name := "pgmoat_guard_" + strconv.Itoa(n)
	r := &extRun{}
	r.all = append(r.all,
		x.Add(&pgproto3.Close{ObjectType: 'S', Name: name}, proxy.ReplyHide),
		x.Add(&pgproto3.Parse{Name: name, Query: sql}, proxy.ReplyHide),
		x.Add(&pgproto3.Bind{DestinationPortal: name, PreparedStatement: name}, proxy.ReplyHide))
	r.exec = x.Add(&pgproto3.Execute{Portal: name}, mode)
	r.all = append(r.all, r.exec,
		x.Add(&pgproto3.Close{ObjectType: 'P', Name: name}, proxy.ReplyHide),
		x.Add(&pgproto3.Close{ObjectType: 'S', Name: name}, proxy.ReplyHide))
	return r
}

// err returns the first error of the run's requests.
func (r *extRun) err() *pgproto3.ErrorResponse {
	for _, x := range r.all {
		if x.Err != nil {
			return x.Err
		}
	}
	return nil
}

// failed reports whether the run failed or was skipped after an error.
func (r *extRun) failed() bool { return r.err() != nil || r.exec.Skipped }

// why says why a run failed.
func (r *extRun) why() string {
	if e := r.err(); e != nil {
		return e.Message
	}
	if r.exec.Skipped {
		return "skipped by the server after an earlier error"
	}
	return ""
}

// extGuard is a guard opened at a Bind and closed at the portal's Execute
// (or at the client's next other message): the Bind's parameter input
// (a domain's check) runs code too, so it runs inside the guard.
type extGuard struct {
	portal  string
	maxRows uint32
	gp      *guardedPortal
	before  *guard.Snapshot
	t0      time.Time
}

// openGuard sends, in one exchange, BEGIN, SAVEPOINT and the snapshot
// before, then then's requests (added by then, which returns the reply
// whose failure is the client's own). It returns the snapshot, or a
// verdict that ends the guard (the client has been told why).
func (st *sessionState) openGuard(ctx context.Context, gp *guardedPortal, then func(*proxy.Exchange) *proxy.ExchangeReply) (*guard.Snapshot, *proxy.Exchange, *proxy.ExchangeReply, *proxy.MessageVerdict, error) {
	x := st.client.NewExchange()
	begin := addExtRun(x, 0, "BEGIN", proxy.ReplyHide)
	sp := addExtRun(x, 1, "SAVEPOINT "+savepoint, proxy.ReplyHide)
	before := st.addSnapshot(x, false)
	client := then(x)
	x.Add(&pgproto3.Flush{}, proxy.ReplyHide)
	if err := x.Run(ctx); err != nil {
		return nil, nil, nil, nil, proxy.Refuse("08006", "pgmoat lost track of the server while verifying a statement: "+err.Error(), "")
	}
	if before.err() != nil {
		st.snapshotFailed()
	}
	// pgmoat's BEGIN opened a transaction: it is closed at the Sync.
	if !begin.failed() && !hasNotice(begin.exec, "25001") {
		st.ownBlock.Store(true)
	}
	end := func(v proxy.MessageVerdict, err error) (*guard.Snapshot, *proxy.Exchange, *proxy.ExchangeReply, *proxy.MessageVerdict, error) {
		return nil, x, client, &v, err
	}
	switch {
	case begin.failed():
		// The transaction had failed already (or pgmoat's own request
		// did): the client's message was skipped; the client hears why.
		x.Discard(client)
		if e := begin.err(); e != nil && e.Code == "25P02" {
			return end(refusedDrop(), st.client.SendToClient(e))
		}
		return end(st.extUnverified(ctx, gp.res, begin.why(), false))
	case sp.failed() || before.failed():
		x.Discard(client)
		why := before.why()
		if sp.failed() {
			why = sp.why()
		}
		return end(st.extUnverified(ctx, gp.res, why, false))
	case client.Err != nil || client.Skipped:
		st.e.met.Guarded.WithLabelValues("failed").Inc()
		return end(refusedDrop(), x.Release(client))
	}
	bs, err := guard.Parse(before.exec.Rows)
	if err != nil {
		x.Discard(client)
		return end(st.extUnverified(ctx, gp.res, err.Error(), true))
	}
	return bs, x, client, nil, nil
}

// guardBind opens the guard of a portal at its Bind (raw, the client's
// message): the Bind runs inside it, its reply goes to the client, and the
// portal's Execute closes it.
func (st *sessionState) guardBind(ctx context.Context, portal string, raw []byte, gp *guardedPortal) (proxy.MessageVerdict, error) {
	var b pgproto3.Bind
	if b.Decode(raw[5:]) != nil {
		return proxy.MessageVerdict{}, proxy.Malformed("malformed Bind message")
	}
	t0 := time.Now()
	bs, x, bind, v, err := st.openGuard(ctx, gp, func(x *proxy.Exchange) *proxy.ExchangeReply {
		return x.Add(&b, proxy.ReplyBuffer)
	})
	if v != nil || err != nil {
		return derefVerdict(v), err
	}
	if err := x.Release(bind); err != nil {
		return proxy.MessageVerdict{}, err
	}
	st.pending.Store(&extGuard{portal: portal, gp: gp, before: bs, t0: t0})
	return proxy.MessageVerdict{Action: proxy.Drop}, nil
}

func derefVerdict(v *proxy.MessageVerdict) proxy.MessageVerdict {
	if v == nil {
		return proxy.MessageVerdict{}
	}
	return *v
}

// pendingGuard returns the guard a Bind opened, or nil.
func (st *sessionState) pendingGuard() *extGuard { return st.pending.Load() }

func (st *sessionState) clearPending() { st.pending.Store(nil) }

// guardExecute runs the client's Execute of portal under guard: it closes
// the guard the portal's Bind opened, or opens and closes one of its own
// (a portal bound before the guard was needed, after a reload). The
// Execute is dropped: pgmoat sent it in the exchange.
func (st *sessionState) guardExecute(ctx context.Context, portal string, maxRows uint32, gp *guardedPortal) (proxy.MessageVerdict, error) {
	exec := &pgproto3.Execute{Portal: portal, MaxRows: maxRows}
	if pg := st.pendingGuard(); pg != nil && pg.portal == portal {
		st.clearPending()
		x := st.client.NewExchange()
		stmt := x.Add(exec, proxy.ReplyBuffer)
		after := st.addSnapshot(x, false)
		x.Add(&pgproto3.Flush{}, proxy.ReplyHide)
		if err := x.Run(ctx); err != nil {
			return proxy.MessageVerdict{}, proxy.Refuse("08006", "pgmoat lost track of the server while verifying a statement: "+err.Error(), "")
		}
		if stmt.Err != nil || stmt.Skipped {
			st.e.met.Guarded.WithLabelValues("failed").Inc()
			return refusedDrop(), x.Release(stmt)
		}
		pg.maxRows = maxRows
		return st.closeGuard(ctx, x, stmt, after, pg)
	}
	t0 := time.Now()
	bs, x, stmt, v, err := st.openGuard(ctx, gp, func(x *proxy.Exchange) *proxy.ExchangeReply {
		return x.Add(exec, proxy.ReplyBuffer)
	})
	if v != nil || err != nil {
		return derefVerdict(v), err
	}
	// The after snapshot in an exchange of its own: the statement's reply
	// is still held back, and nothing can commit meanwhile.
	y := st.client.NewExchange()
	after := st.addSnapshot(y, false)
	y.Add(&pgproto3.Flush{}, proxy.ReplyHide)
	if err := y.Run(ctx); err != nil {
		return proxy.MessageVerdict{}, proxy.Refuse("08006", "pgmoat lost track of the server while verifying a statement: "+err.Error(), "")
	}
	return st.closeGuard(ctx, x, stmt, after, &extGuard{portal: portal, maxRows: maxRows, gp: gp, before: bs, t0: t0})
}

// finishPending closes a guard a Bind opened whose portal the client did
// not execute before sending something else: what the Bind did is
// verified all the same. A verdict that is not nil refuses (the client's
// message is then discarded, unless it is the Sync that ends the batch).
func (st *sessionState) finishPending(ctx context.Context) (*proxy.MessageVerdict, error) {
	pg := st.pendingGuard()
	if pg == nil {
		return nil, nil
	}
	st.clearPending()
	x := st.client.NewExchange()
	after := st.addSnapshot(x, false)
	x.Add(&pgproto3.Flush{}, proxy.ReplyHide)
	if err := x.Run(ctx); err != nil {
		return nil, proxy.Refuse("08006", "pgmoat lost track of the server while verifying a statement: "+err.Error(), "")
	}
	v, err := st.closeGuard(ctx, x, nil, after, pg)
	if err != nil || v.Action == proxy.Drop && v.DiscardsUntilSync() {
		return &v, err
	}
	return nil, nil
}

// closeGuard decides on a guarded statement from the snapshot after it:
// it releases the savepoint and the reply held back (stmt, nil when the
// Bind alone ran), or rolls back and refuses or holds it.
func (st *sessionState) closeGuard(ctx context.Context, x *proxy.Exchange, stmt *proxy.ExchangeReply, after *snapshotRun, pg *extGuard) (proxy.MessageVerdict, error) {
	gp := pg.gp
	discard := func() {
		if stmt != nil {
			x.Discard(stmt)
		}
	}
	if after.err() != nil {
		st.snapshotFailed()
	}
	if after.failed() {
		discard()
		return st.extUnverified(ctx, gp.res, after.why(), true)
	}
	as, err := guard.Parse(after.exec.Rows)
	if err != nil {
		discard()
		return st.extUnverified(ctx, gp.res, err.Error(), true)
	}
	bs := pg.before
	if why := guard.Blind(bs, as); why != "" {
		discard()
		return st.extUnverified(ctx, gp.res, why, true)
	}
	res, blast := st.measured(joinTexts(gp.res), bs, as)
	if res != nil && res.Action == rules.Log {
		if err := st.recordDecision(res, "log", blast); err != nil {
			st.e.log.Error("audit log write failed; refusing the statement", "session", st.auditBase.SessionID, "err", err)
			discard()
			if err := st.extRunOwn(ctx, "ROLLBACK TO SAVEPOINT "+savepoint, "RELEASE SAVEPOINT "+savepoint); err != nil {
				return proxy.MessageVerdict{}, err
			}
			return st.extRaise(ctx, auditDownRefusal(res))
		}
	}
	if res == nil || passes(res) {
		if err := st.extRunOwn(ctx, "RELEASE SAVEPOINT "+savepoint); err != nil {
			return proxy.MessageVerdict{}, err
		}
		st.e.met.GuardDuration.Observe(time.Since(pg.t0).Seconds())
		st.e.met.Guarded.WithLabelValues("passed").Inc()
		st.made(guard.New(bs, as))
		st.allowed(gp.res, "verified")
		if hasDDL(gp.res.Statements) {
			if err := st.reloadCatalog(ctx); err != nil {
				return proxy.MessageVerdict{}, err
			}
		}
		if stmt == nil {
			return proxy.MessageVerdict{}, nil
		}
		return proxy.MessageVerdict{Action: proxy.Drop}, x.Release(stmt)
	}
	discard()
	if err := st.extRunOwn(ctx, "ROLLBACK TO SAVEPOINT "+savepoint, "RELEASE SAVEPOINT "+savepoint); err != nil {
		return proxy.MessageVerdict{}, err
	}
	st.e.met.GuardDuration.Observe(time.Since(pg.t0).Seconds())
	if res.Action == rules.Hold && stmt != nil && !stmt.Streamed {
		return st.extHold(ctx, res, blast, !st.ownBlock.Load(), gp, pg.portal, pg.maxRows)
	}
	return st.extRefuseMeasured(ctx, res, blast, "")
}

// extRunOwn runs statements of pgmoat's own, hidden, in the extended
// protocol.
func (st *sessionState) extRunOwn(ctx context.Context, sqls ...string) error {
	x := st.client.NewExchange()
	var rs []*extRun
	for i, sql := range sqls {
		rs = append(rs, addExtRun(x, 10+i, sql, proxy.ReplyHide))
	}
	x.Add(&pgproto3.Flush{}, proxy.ReplyHide)
	if err := x.Run(ctx); err != nil {
		return proxy.Refuse("08006", "pgmoat lost track of the server while verifying a statement: "+err.Error(), "")
	}
	for _, r := range rs {
		if r.failed() {
			return proxy.Refuse("08006", "pgmoat could not undo or finish a guarded statement: "+r.why(), "")
		}
	}
	return nil
}

// extRaise makes the server raise r in the extended protocol: the
// transaction (when there is one) is aborted and the server skips the
// client's messages up to its Sync, which the session discards too.
func (st *sessionState) extRaise(ctx context.Context, r refusal) (proxy.MessageVerdict, error) {
	x := st.client.NewExchange()
	addExtRun(x, 20, r.doBlock(), proxy.ReplyPass).exec.OwnError = true
	x.Add(&pgproto3.Flush{}, proxy.ReplyHide)
	if err := x.Run(ctx); err != nil {
		return proxy.MessageVerdict{}, proxy.Refuse("08006", "pgmoat lost track of the server while refusing a statement: "+err.Error(), "")
	}
	return refusedDrop(), nil
}

// refusedDrop drops the message and what the client sends up to its Sync,
// which the server skips after an error anyway.
func refusedDrop() proxy.MessageVerdict {
	return proxy.MessageVerdict{Action: proxy.Drop, Rewrite: &proxy.Rewrite{DiscardUntilSync: true}}
}

func (st *sessionState) extRefuseMeasured(ctx context.Context, res *rules.Result, blast, extra string) (proxy.MessageVerdict, error) {
	st.e.met.Guarded.WithLabelValues("refused").Inc()
	if err := st.recordDecision(res, "block", blast); err != nil {
		st.e.log.Error("audit log write failed; the statement is blocked anyway", "session", st.auditBase.SessionID, "err", err)
	}
	return st.extRaise(ctx, measuredRefusal(res, blast, 1, extra))
}

// extUnverified refuses an Execute pgmoat could not verify. ran says the
// statement ran (and must be rolled back to the savepoint).
func (st *sessionState) extUnverified(ctx context.Context, res *rules.Result, why string, ran bool) (proxy.MessageVerdict, error) {
	st.e.met.Guarded.WithLabelValues("unverified").Inc()
	st.e.log.Warn("pgmoat could not verify a statement; refusing it", "session", st.auditBase.SessionID, "err", why)
	if ran {
		if err := st.extRunOwn(ctx, "ROLLBACK TO SAVEPOINT "+savepoint, "RELEASE SAVEPOINT "+savepoint); err != nil {
			return proxy.MessageVerdict{}, err
		}
	}
	if err := st.recordDecision(res, "block", "pgmoat could not verify it: "+why); err != nil {
		st.e.log.Error("audit log write failed", "session", st.auditBase.SessionID, "err", err)
	}
	return st.extRaise(ctx, refusal{
		code:    codeInsufficientPrivilege,
		message: "pgmoat refused " + rules.Shorten(joinTexts(res), 120) + ": it could not verify what the statement does",
		detail:  "The check around the statement failed: " + why,
		hint:    "Nothing was committed. " + preapproveHint,
	})
}

// extHold holds an Execute whose measured effect a rule holds; approval
// binds the portal again and runs it, unguarded.
func (st *sessionState) extHold(ctx context.Context, res *rules.Result, blast string, inTx bool, gp *guardedPortal, portal string, maxRows uint32) (proxy.MessageVerdict, error) {
	hc := st.e.hcfg.Load()
	if inTx && hc.InTransaction == "block" {
		return st.extRefuseMeasured(ctx, res, blast, "It would be held for approval, but it runs inside a transaction block, "+
			"where waiting could hold locks for as long as the hold lasts. Run it outside a transaction, or pre-approve it first: "+
			"pgmoat approve --file migration.sql --ttl 1h --reason '…'")
	}
	if err := st.recordDecision(res, "hold", blast); err != nil {
		return st.extRaise(ctx, auditDownRefusal(res))
	}
	st.e.met.Guarded.WithLabelValues("held").Inc()
	approved, ref, err := st.waitHold(ctx, res, blast, inTx)
	if err != nil {
		return proxy.MessageVerdict{}, err
	}
	if !approved {
		return st.extRaise(ctx, ref)
	}
	st.allowed(gp.res, "approved")
	var b pgproto3.Bind
	if len(gp.bind) < 5 || b.Decode(gp.bind[5:]) != nil {
		return proxy.MessageVerdict{}, proxy.Refuse("08006", "pgmoat could not bind the approved statement again", "")
	}
	x := st.client.NewExchange()
	x.Add(&b, proxy.ReplyHide)
	x.Add(&pgproto3.Execute{Portal: portal, MaxRows: maxRows}, proxy.ReplyPass)
	x.Add(&pgproto3.Flush{}, proxy.ReplyHide)
	if err := x.Run(ctx); err != nil {
		return proxy.MessageVerdict{}, proxy.Refuse("08006", "pgmoat lost track of the server while running an approved statement: "+err.Error(), "")
	}
	return proxy.MessageVerdict{Action: proxy.Drop}, nil
}

// closeOwnBlock ends, at the client's Sync (or a Query that ends its
// batch), the transaction pgmoat's guard opened: the Sync goes first (the
// server ends the batch and says whether the transaction failed), then a
// COMMIT or a ROLLBACK, and the client gets the ReadyForQuery it would
// have got without pgmoat. sync says the client's message was a Sync,
// which this replaces.
func (st *sessionState) closeOwnBlock(ctx context.Context, sync bool) (proxy.MessageVerdict, error) {
	st.ownBlock.Store(false)
	x := st.client.NewExchange()
	s := x.Add(&pgproto3.Sync{}, proxy.ReplyHide)
	if err := x.Run(ctx); err != nil {
		return proxy.MessageVerdict{}, proxy.Refuse("08006", "pgmoat lost track of the server while ending a guarded transaction: "+err.Error(), "")
	}
	end := "COMMIT"
	if s.TxStatus == 'E' {
		end = "ROLLBACK"
	}
	var final byte = s.TxStatus
	if s.TxStatus != 'I' {
		x = st.client.NewExchange()
		r := x.Add(&pgproto3.Query{String: end}, proxy.ReplyHide)
		if err := x.Run(ctx); err != nil {
			return proxy.MessageVerdict{}, proxy.Refuse("08006", "pgmoat lost track of the server while ending a guarded transaction: "+err.Error(), "")
		}
		if r.Err != nil && end == "COMMIT" {
			// A deferred constraint or a serialization failure: the
			// batch failed at its end, as PostgreSQL would say.
			if err := st.client.SendToClient(r.Err); err != nil {
				return proxy.MessageVerdict{}, err
			}
		}
		final = r.TxStatus
	}
	st.mu.Lock()
	st.analysis.Sync(final)
	st.mu.Unlock()
	if !sync {
		return proxy.MessageVerdict{}, nil
	}
	if err := st.client.SendToClient(&pgproto3.ReadyForQuery{TxStatus: final}); err != nil {
		return proxy.MessageVerdict{}, err
	}
	return proxy.MessageVerdict{Action: proxy.Drop}, nil
}

// ownBlockOpen reports whether pgmoat's guard left a transaction open
// for the client's Sync to end.
func (st *sessionState) ownBlockOpen() bool { return st.ownBlock.Load() }
