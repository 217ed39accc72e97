package enforce

import (
	"context"
	"fmt"
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

// guardExecute runs the client's Execute of portal under guard. The
// Execute is dropped: pgmoat sent it in the exchange.
func (st *sessionState) guardExecute(ctx context.Context, portal string, maxRows uint32, gp *guardedPortal) (proxy.MessageVerdict, error) {
	t0 := time.Now()
	x := st.client.NewExchange()
	begin := addExtRun(x, 0, "BEGIN", proxy.ReplyHide)
	sp := addExtRun(x, 1, "SAVEPOINT "+savepoint, proxy.ReplyHide)
	before := st.addSnapshot(x, false)
	stmt := x.Add(&pgproto3.Execute{Portal: portal, MaxRows: maxRows}, proxy.ReplyBuffer)
	after := st.addSnapshot(x, false)
	x.Add(&pgproto3.Flush{}, proxy.ReplyHide)
	if err := x.Run(ctx); err != nil {
		return proxy.MessageVerdict{}, proxy.Refuse("08006", "pgmoat lost track of the server while verifying a statement: "+err.Error(), "")
	}
	if before.err() != nil || after.err() != nil {
		st.snapshotFailed()
	}
	// pgmoat's BEGIN opened a transaction: it is closed at the Sync.
	if !begin.failed() && !hasNotice(begin.exec, "25001") {
		st.mu.Lock()
		st.ownBlock = true
		st.mu.Unlock()
	}
	drop := proxy.MessageVerdict{Action: proxy.Drop}
	switch {
	case begin.failed():
		// The transaction had failed already (or pgmoat's own request
		// did): the client's Execute was skipped; the client hears why.
		x.Discard(stmt)
		if e := begin.err(); e != nil && e.Code == "25P02" {
			return refusedDrop(), st.client.SendToClient(e)
		}
		return st.extUnverified(ctx, gp.res, begin.why(), false)
	case sp.failed() || before.failed():
		x.Discard(stmt)
		if sp.failed() {
			return st.extUnverified(ctx, gp.res, sp.why(), false)
		}
		return st.extUnverified(ctx, gp.res, before.why(), false)
	case stmt.Err != nil || stmt.Skipped:
		st.e.met.Guarded.WithLabelValues("failed").Inc()
		return refusedDrop(), x.Release(stmt)
	case after.failed():
		x.Discard(stmt)
		return st.extUnverified(ctx, gp.res, after.why(), true)
	}
	bs, err1 := guard.Parse(before.exec.Rows)
	as, err2 := guard.Parse(after.exec.Rows)
	if err1 != nil || err2 != nil {
		x.Discard(stmt)
		return st.extUnverified(ctx, gp.res, fmt.Sprint(firstNonNil(err1, err2)), true)
	}
	res, blast := st.measured(joinTexts(gp.res), bs, as)
	if res != nil && res.Action == rules.Log {
		if err := st.recordMeasured(res, "log", blast); err != nil {
			st.e.log.Error("audit log write failed; refusing the statement", "session", st.auditBase.SessionID, "err", err)
			x.Discard(stmt)
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
		st.e.met.GuardDuration.Observe(time.Since(t0).Seconds())
		st.e.met.Guarded.WithLabelValues("passed").Inc()
		st.made(guard.New(bs, as))
		st.allowed(gp.res, "verified")
		return drop, x.Release(stmt)
	}
	x.Discard(stmt)
	if err := st.extRunOwn(ctx, "ROLLBACK TO SAVEPOINT "+savepoint, "RELEASE SAVEPOINT "+savepoint); err != nil {
		return proxy.MessageVerdict{}, err
	}
	st.e.met.GuardDuration.Observe(time.Since(t0).Seconds())
	if res.Action == rules.Hold && !stmt.Streamed {
		st.mu.Lock()
		own := st.ownBlock
		st.mu.Unlock()
		return st.extHold(ctx, res, blast, !own, gp, portal, maxRows)
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
	return proxy.MessageVerdict{Action: proxy.Drop, DiscardUntilSync: true}
}

func (st *sessionState) extRefuseMeasured(ctx context.Context, res *rules.Result, blast, extra string) (proxy.MessageVerdict, error) {
	st.e.met.Guarded.WithLabelValues("refused").Inc()
	if err := st.recordMeasured(res, "block", blast); err != nil {
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
	if err := st.recordMeasured(res, "block", "pgmoat could not verify it: "+why); err != nil {
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
	if err := st.recordMeasured(res, "hold", blast); err != nil {
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
	st.mu.Lock()
	st.ownBlock = false
	st.mu.Unlock()
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

// guardedPortalOf returns the guard of portal, or nil.
func (st *sessionState) guardedPortalOf(portal string) *guardedPortal {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.guarded[portal]
}

// setGuardedPortal records (or, gp nil, forgets) that portal is guarded.
func (st *sessionState) setGuardedPortal(portal string, gp *guardedPortal) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if gp == nil {
		delete(st.guarded, portal)
		return
	}
	if st.guarded == nil {
		st.guarded = map[string]*guardedPortal{}
	}
	st.guarded[portal] = gp
}

// ownBlockOpen reports whether pgmoat's guard left a transaction open
// for the client's Sync to end.
func (st *sessionState) ownBlockOpen() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.ownBlock
}
