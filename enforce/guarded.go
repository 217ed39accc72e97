package enforce

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgmoat/pgmoat/approvals"
	"github.com/pgmoat/pgmoat/guard"
	"github.com/pgmoat/pgmoat/proxy"
	"github.com/pgmoat/pgmoat/rules"
)

// Guarded execution of a simple Query whose analysis says Verify: pgmoat
// runs the message itself, statement run by statement run, through
// proxy.Exchange, and each run that needs it under guard:
//
//	BEGIN                     hidden; opens pgmoat's own transaction when the
//	                          client has none (no warning 25001 comes back)
//	SAVEPOINT pgmoat_guard    hidden; what a violation inside the client's
//	                          transaction rolls back to
//	<snapshot>                collected: the protected relations before
//	<the client's statements> held for the client
//	<snapshot>                collected: after
//
// in one write, then one more round trip to COMMIT (or RELEASE the
// savepoint) when nothing was violated, or to roll back and refuse or hold
// the statements with what they were measured to do. Any failure of
// pgmoat's own requests aborts the transaction before the client's
// statements can commit: fail closed.
//
// A message that holds transaction control statements (BEGIN ... COMMIT in
// a migration file) is run one part at a time, each transaction control
// statement on its own, with PostgreSQL's semantics for a multi-statement
// Query kept: the statements before a COMMIT run in one transaction, an
// error skips the rest, and what ran in the message's implicit transaction
// is rolled back with it.

// savepoint is the name of pgmoat's guard savepoint.
const savepoint = "pgmoat_guard"

// part is a run of a message's statements: one transaction control
// statement, or a run of others.
type part struct {
	text  string
	stmts []*rules.Verdict
	txc   rules.ChangeKind // the transaction control statement's kind; 0 for a run
	guard bool             // a statement of the run is Verify
}

// splitParts cuts a message into parts.
func splitParts(sql string, res *rules.Result) []part {
	var parts []part
	n := len(res.Statements)
	for i := 0; i < n; {
		start := res.Statements[i].Offset
		if i == 0 {
			start = 0
		}
		if k := txControl(res.Statements[i]); k != 0 {
			end := len(sql)
			if i+1 < n {
				end = res.Statements[i+1].Offset
			}
			parts = append(parts, part{text: sql[start:end], stmts: res.Statements[i : i+1], txc: k})
			i++
			continue
		}
		j := i
		g := false
		for j < n && txControl(res.Statements[j]) == 0 {
			g = g || res.Statements[j].Action == rules.Verify
			j++
		}
		end := len(sql)
		if j < n {
			end = res.Statements[j].Offset
		}
		parts = append(parts, part{text: sql[start:end], stmts: res.Statements[i:j], guard: g})
		i = j
	}
	return parts
}

// txControl returns the kind of a transaction control statement, or 0.
func txControl(v *rules.Verdict) rules.ChangeKind {
	for _, c := range v.Changes {
		switch c.Kind {
		case rules.ChangeBegin, rules.ChangeCommit, rules.ChangeRollback, rules.ChangeSavepoint, rules.ChangeRelease, rules.ChangeRollbackTo:
			return c.Kind
		}
	}
	return 0
}

// guardedQuery carries out one Query message under guard.
type guardedQuery struct {
	st       *sessionState
	ctx      context.Context
	res      *rules.Result
	status   byte // the server's transaction status after the last exchange
	implicit bool // pgmoat opened a transaction to stand for the message's implicit one
	failed   bool // a statement failed: the rest of the message is skipped
	multi    bool
}

// guardQuery runs a Query message judged Verify. The message is dropped:
// everything the client sees comes from the exchanges.
func (st *sessionState) guardQuery(ctx context.Context, res *rules.Result, sql string) (proxy.MessageVerdict, error) {
	parts := splitParts(sql, res)
	g := &guardedQuery{st: st, ctx: ctx, res: res, status: st.client.TxStatus(), multi: len(parts) > 1}
	for _, v := range res.Statements {
		if v.CopyIn {
			// COPY FROM STDIN waits for the client's data, which cannot
			// flow while pgmoat runs the message itself: refuse it whole,
			// before anything runs.
			p := part{text: sql, stmts: res.Statements}
			if err := g.refuseUnverified(p, false, "the message also copies data from the client (COPY ... FROM STDIN); send the COPY in a message of its own"); err != nil {
				return proxy.MessageVerdict{}, err
			}
			return g.finish()
		}
	}
	for i, p := range parts {
		if g.failed {
			break
		}
		var err error
		switch {
		case p.txc != 0:
			err = g.txControl(p)
		case p.guard:
			err = g.guarded(p, i < len(parts)-1)
		default:
			err = g.plain(p)
		}
		if err != nil {
			return proxy.MessageVerdict{}, err
		}
	}
	return g.finish()
}

// finish ends the message: pgmoat's stand-in for its implicit transaction
// commits (or rolls back after an error), and the client gets its
// ReadyForQuery.
func (g *guardedQuery) finish() (proxy.MessageVerdict, error) {
	st := g.st
	if g.implicit {
		end := "COMMIT"
		if g.failed {
			end = "ROLLBACK"
		}
		r, err := g.run(hidden(end))
		if err != nil {
			return proxy.MessageVerdict{}, err
		}
		if r[0].Err != nil {
			// A deferred constraint, a serialization failure: the
			// client hears of it as PostgreSQL would tell it.
			if err := st.client.SendToClient(r[0].Err); err != nil {
				return proxy.MessageVerdict{}, err
			}
		}
	}
	if err := st.client.SendToClient(&pgproto3.ReadyForQuery{TxStatus: g.status}); err != nil {
		return proxy.MessageVerdict{}, err
	}
	st.mu.Lock()
	st.analysis.Sync(g.status)
	st.mu.Unlock()
	return proxy.MessageVerdict{Action: proxy.Drop}, nil
}

// request is one exchanged Query.
type request struct {
	sql  string
	mode proxy.ReplyMode
}

func hidden(sql string) request { return request{sql, proxy.ReplyHide} }
func passed(sql string) request { return request{sql, proxy.ReplyPass} }

// run sends requests in one exchange and waits for their replies. An
// error means the session is out of step with its server and must end.
func (g *guardedQuery) run(reqs ...request) ([]*proxy.ExchangeReply, error) {
	x := g.st.client.NewExchange()
	return g.runOn(x, reqs...)
}

func (g *guardedQuery) runOn(x *proxy.Exchange, reqs ...request) ([]*proxy.ExchangeReply, error) {
	out := make([]*proxy.ExchangeReply, len(reqs))
	for i, r := range reqs {
		out[i] = x.Add(&pgproto3.Query{String: r.sql}, r.mode)
	}
	if err := x.Run(g.ctx); err != nil {
		return nil, proxy.Refuse("08006", "pgmoat lost track of the server while verifying a statement: "+err.Error(), "")
	}
	if s := out[len(out)-1].TxStatus; s != 0 {
		g.status = s
	}
	return out, nil
}

// openImplicit stands pgmoat's transaction in for the message's implicit
// one, before the first part that runs statements of a multi-part message
// sent outside a transaction.
func (g *guardedQuery) openImplicit() error {
	if !g.multi || g.implicit || g.status != 'I' {
		return nil
	}
	r, err := g.run(hidden("BEGIN"))
	if err != nil {
		return err
	}
	if r[0].Err != nil {
		return g.unverifiable(r[0].Err.Message)
	}
	// A warning says the client's transaction was open after all (the
	// status pgmoat had was older than a message the client pipelined).
	g.implicit = !hasNotice(r[0], "25001")
	return nil
}

// plain runs a part that needs no guard.
func (g *guardedQuery) plain(p part) error {
	if err := g.openImplicit(); err != nil {
		return err
	}
	x := g.st.client.NewExchange()
	r, err := g.runOn(x, passed(p.text))
	if err != nil {
		return err
	}
	g.settle(p, r[0], true)
	return nil
}

// txControl runs a transaction control statement of a multi-part message.
func (g *guardedQuery) txControl(p part) error {
	if g.implicit && p.txc == rules.ChangeBegin {
		// BEGIN in a multi-statement Query turns its implicit
		// transaction into a transaction block: pgmoat's transaction
		// becomes the client's.
		g.implicit = false
		g.st.applyChanges(p.stmts[0].Changes)
		return g.st.client.SendToClient(&pgproto3.CommandComplete{CommandTag: []byte("BEGIN")})
	}
	if p.stmts[0].Action == rules.Verify && p.stmts[0].PreparesTransaction() && g.status == 'T' {
		ok, err := g.prepareCheck()
		if err != nil || !ok {
			return err
		}
	}
	if p.txc == rules.ChangeCommit && p.stmts[0].Action == rules.Verify && g.status == 'T' {
		// Deferred triggers of the database's own would run at the
		// COMMIT, after anything could be checked: run them first,
		// under guard.
		ok, err := g.deferredCheck(p)
		if err != nil || !ok {
			return err
		}
	}
	x := g.st.client.NewExchange()
	r, err := g.runOn(x, passed(p.text))
	if err != nil {
		return err
	}
	switch p.txc {
	case rules.ChangeCommit, rules.ChangeRollback:
		g.implicit = false
	}
	g.settle(p, r[0], true)
	return nil
}

// settle applies the state changes of the statements of p that
// completed, and notes a failure.
func (g *guardedQuery) settle(p part, r *proxy.ExchangeReply, kept bool) {
	if r.Err != nil {
		g.failed = true
	}
	if kept {
		n := min(len(r.Tags), len(p.stmts))
		var changes []rules.StateChange
		for _, v := range p.stmts[:n] {
			changes = append(changes, v.Changes...)
		}
		if len(changes) > 0 {
			g.st.applyChanges(changes)
		}
	}
}

// guarded runs a part under guard. more says parts follow.
func (g *guardedQuery) guarded(p part, more bool) error {
	st := g.st
	if err := g.openImplicit(); err != nil {
		return err
	}
	t0 := time.Now()
	x := st.client.NewExchange()
	begin := x.Add(&pgproto3.Query{String: "BEGIN"}, proxy.ReplyHide)
	sp := x.Add(&pgproto3.Query{String: "SAVEPOINT " + savepoint}, proxy.ReplyHide)
	beforeRun := st.addSnapshot(x, true)
	stmt := x.Add(&pgproto3.Query{String: p.text}, proxy.ReplyBuffer)
	afterRun := st.addSnapshot(x, true)
	if err := x.Run(g.ctx); err != nil {
		return proxy.Refuse("08006", "pgmoat lost track of the server while verifying a statement: "+err.Error(), "")
	}
	g.status = afterRun.all[len(afterRun.all)-1].TxStatus
	if beforeRun.failed() || afterRun.failed() && stmt.Err == nil {
		st.snapshotFailed()
	}
	before, after := beforeRun.exec, afterRun.exec
	if begin.Err != nil {
		// The client's transaction had failed already: its statements
		// fail as they would have, with nothing to verify.
		g.settle(p, stmt, false)
		return x.Release(stmt)
	}
	own := !hasNotice(begin, "25001") // pgmoat's BEGIN opened a transaction
	inBlock := !own                   // the client's transaction, or the message's implicit one
	switch {
	case sp.Err != nil || beforeRun.failed():
		x.Discard(stmt)
		if sp.Err != nil {
			return g.refuseUnverified(p, own, sp.Err.Message)
		}
		return g.refuseUnverified(p, own, beforeRun.why())
	case stmt.Err != nil && stmt.Err.Code == "2D000":
		// A procedure that ends the transaction cannot run inside
		// pgmoat's guard: refuse it as pgmoat's own decision.
		x.Discard(stmt)
		if err := g.undo(own); err != nil {
			return err
		}
		return g.refuseUnverified(p, false, "it ends the transaction itself (a procedure that commits), which cannot happen inside pgmoat's guard; pre-approve it to run it unguarded")
	case stmt.Err != nil:
		// The statements' own error: the client sees it; nothing
		// committed. pgmoat's transaction goes; the client's stays
		// failed, as without pgmoat.
		st.e.met.Guarded.WithLabelValues("failed").Inc()
		if err := x.Release(stmt); err != nil {
			return err
		}
		if own {
			if _, err := g.run(hidden("ROLLBACK")); err != nil {
				return err
			}
		}
		g.settle(p, stmt, !own)
		return nil
	case afterRun.failed():
		x.Discard(stmt)
		return g.refuseUnverified(p, own, afterRun.why())
	}
	bs, err1 := guard.Parse(before.Rows)
	as, err2 := guard.Parse(after.Rows)
	if err1 != nil || err2 != nil {
		x.Discard(stmt)
		return g.refuseUnverified(p, own, fmt.Sprint(firstNonNil(err1, err2)))
	}
	if why := guard.Blind(bs, as); why != "" {
		x.Discard(stmt)
		return g.refuseUnverified(p, own, why)
	}
	res, blast := st.measured(strings.TrimSpace(p.text), bs, as)
	if res != nil && res.Action == rules.Log {
		// Allowed with log: recorded before it can commit, or not at all.
		if err := st.recordDecision(res, "log", blast); err != nil {
			st.e.log.Error("audit log write failed; refusing the statement", "session", st.auditBase.SessionID, "err", err)
			x.Discard(stmt)
			if err := g.undo(own); err != nil {
				return err
			}
			return g.raise(auditDownRefusal(res))
		}
	}
	if res == nil || passes(res) {
		// Nothing it did is refused: let it commit.
		end := "RELEASE SAVEPOINT " + savepoint
		if own {
			end = "COMMIT"
		}
		rr, err := g.run(hidden(end))
		if err != nil {
			return err
		}
		st.e.met.GuardDuration.Observe(time.Since(t0).Seconds())
		if err := x.Release(stmt); err != nil {
			return err
		}
		if rr[0].Err != nil {
			g.failed = true
			if err := st.client.SendToClient(rr[0].Err); err != nil {
				return err
			}
		} else {
			st.made(guard.New(bs, as))
		}
		st.e.met.Guarded.WithLabelValues("passed").Inc()
		g.settle(p, stmt, true)
		g.readBack(as, inBlock || more)
		if hasDDL(p.stmts) {
			if err := st.reloadCatalog(g.ctx); err != nil {
				return err
			}
		}
		st.allowed(&rules.Result{Statements: p.stmts, Decider: -1}, "verified")
		return nil
	}
	// Violated: undo it before anything else.
	x.Discard(stmt)
	if err := g.undo(own); err != nil {
		return err
	}
	st.e.met.GuardDuration.Observe(time.Since(t0).Seconds())
	if res.Action == rules.Hold && !stmt.Streamed {
		return g.hold(p, res, blast, inBlock)
	}
	return g.refuseMeasured(p, res, blast, "")
}

// undo rolls a guarded part back: pgmoat's transaction, or to its
// savepoint in the client's.
func (g *guardedQuery) undo(own bool) error {
	undo := []request{hidden("ROLLBACK TO SAVEPOINT " + savepoint), hidden("RELEASE SAVEPOINT " + savepoint)}
	if own {
		undo = []request{hidden("ROLLBACK")}
	}
	_, err := g.run(undo...)
	return err
}

// measured compares two snapshots around a guarded statement (text) and
// judges what it did: nil when it did nothing to judge. Relations the
// session created itself under guard (a restore making a protected table,
// then adding its keys) are its own to shape: what it does to them is not
// judged.
func (st *sessionState) measured(text string, before, after *guard.Snapshot) (*rules.Result, string) {
	violations := guard.Compare(before, after, st.e.engine.Policy().Limits)
	st.mu.Lock()
	kept := violations[:0]
	for _, v := range violations {
		if v.OID == "" || !st.madeOIDs[v.OID] {
			kept = append(kept, v)
		}
	}
	st.mu.Unlock()
	if len(kept) == 0 {
		return nil, ""
	}
	effects := make([]rules.Effect, len(kept))
	for i, v := range kept {
		effects[i] = v.Effect()
	}
	return st.judgeMeasured(text, effects), guard.BlastRadius(kept)
}

// made records protected relations the session created under guard.
func (st *sessionState) made(oids []string) {
	if len(oids) == 0 {
		return
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.madeOIDs == nil {
		st.madeOIDs = map[string]bool{}
	}
	for _, o := range oids {
		st.madeOIDs[o] = true
	}
}

// readBack takes the session settings the server reported after a
// statement that ran under guard: code pgmoat does not follow (a DO
// block, a function) may have changed search_path. Inside a transaction a
// later ROLLBACK may undo what the statement set, which pgmoat cannot
// follow from here: the session's search_path is then read again at the
// end of the transaction.
func (g *guardedQuery) readBack(s *guard.Snapshot, inTx bool) {
	st := g.st
	entries, ok := rules.ParseSearchPath(s.Settings.SearchPath)
	st.mu.Lock()
	defer st.mu.Unlock()
	cur, known := st.analysis.SearchPath()
	if ok && known && equalStrings(cur, entries) {
		return
	}
	st.analysis.Apply(rules.StateChange{Kind: rules.ChangeSearchPath, Known: ok, SearchPath: entries})
	if inTx {
		st.rereadAtTxEnd = true
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// refuseMeasured refuses a part whose measured effect the policy blocks:
// the server raises the refusal, in the client's transaction when there is
// one (which it aborts, as any error would), else on its own.
func (g *guardedQuery) refuseMeasured(p part, res *rules.Result, blast, extra string) error {
	st := g.st
	st.e.met.Guarded.WithLabelValues("refused").Inc()
	if err := st.recordDecision(res, "block", blast); err != nil {
		st.e.log.Error("audit log write failed; the statement is blocked anyway", "session", st.auditBase.SessionID, "err", err)
	}
	ref := measuredRefusal(res, blast, len(p.stmts), extra)
	return g.raise(ref)
}

// raise makes the server raise r, as a refusal does.
func (g *guardedQuery) raise(r refusal) error {
	x := g.st.client.NewExchange()
	rr := x.Add(&pgproto3.Query{String: r.doBlock()}, proxy.ReplyPass)
	rr.OwnError = true
	if err := x.Run(g.ctx); err != nil {
		return proxy.Refuse("08006", "pgmoat lost track of the server while refusing a statement: "+err.Error(), "")
	}
	if rr.TxStatus != 0 {
		g.status = rr.TxStatus
	}
	g.failed = true
	return nil
}

// refuseUnverified refuses a part pgmoat could not verify (its own
// snapshot failed): the transaction is rolled back (pgmoat's) or, in the
// client's, aborted by the refusal.
func (g *guardedQuery) refuseUnverified(p part, own bool, why string) error {
	st := g.st
	st.e.met.Guarded.WithLabelValues("unverified").Inc()
	st.e.log.Warn("pgmoat could not verify a statement; refusing it", "session", st.auditBase.SessionID, "err", why)
	if own {
		if _, err := g.run(hidden("ROLLBACK")); err != nil {
			return err
		}
	}
	v := p.stmts[0]
	res := &rules.Result{Statements: p.stmts, Action: rules.Block, Decider: 0}
	if err := st.recordDecision(res, "block", "pgmoat could not verify it: "+why); err != nil {
		st.e.log.Error("audit log write failed", "session", st.auditBase.SessionID, "err", err)
	}
	return g.raise(refusal{
		code:    codeInsufficientPrivilege,
		message: "pgmoat refused " + rules.Shorten(v.Text, 120) + ": it could not verify what the statement does",
		detail:  "The check after the statement failed: " + why,
		hint:    "Nothing was committed. " + preapproveHint,
	})
}

// unverifiable refuses the rest of a message when pgmoat's own request
// fails before any statement ran.
func (g *guardedQuery) unverifiable(why string) error {
	st := g.st
	st.e.met.Guarded.WithLabelValues("unverified").Inc()
	return g.raise(refusal{
		code:    codeInsufficientPrivilege,
		message: "pgmoat could not run this message under guard: " + why,
		hint:    "Nothing was committed. " + preapproveHint,
	})
}

// hold holds a part whose measured effect a rule holds: it was rolled
// back; approval runs it again, unguarded.
func (g *guardedQuery) hold(p part, res *rules.Result, blast string, inBlock bool) error {
	st := g.st
	hc := st.e.hcfg.Load()
	if inBlock && hc.InTransaction == "block" {
		return g.refuseMeasured(p, res, blast, "It would be held for approval, but it runs inside a transaction block, "+
			"where waiting could hold locks for as long as the hold lasts. Run it outside a transaction, or pre-approve it first: "+
			"pgmoat approve --file migration.sql --ttl 1h --reason '…'")
	}
	if err := st.recordDecision(res, "hold", blast); err != nil {
		st.e.log.Error("audit log write failed; refusing the statement", "session", st.auditBase.SessionID, "err", err)
		return g.raise(auditDownRefusal(res))
	}
	st.e.met.Guarded.WithLabelValues("held").Inc()
	approved, ref, err := st.waitHold(g.ctx, res, blast, inBlock)
	if err != nil {
		return err
	}
	if !approved {
		return g.raise(ref)
	}
	st.allowed(&rules.Result{Statements: p.stmts, Decider: -1}, "approved")
	x := st.client.NewExchange()
	r, err := g.runOn(x, passed(p.text))
	if err != nil {
		return err
	}
	g.settle(p, r[0], true)
	return nil
}

func hasNotice(r *proxy.ExchangeReply, code string) bool {
	for _, n := range r.Notices {
		if n == code {
			return true
		}
	}
	return false
}

func firstNonNil(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// judgeMeasured judges what a statement was measured to do.
func (st *sessionState) judgeMeasured(text string, effects []rules.Effect) *rules.Result {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.e.engine.JudgeMeasured(st.analysis, text, effects)
}

// applyChanges applies confirmed state changes.
func (st *sessionState) applyChanges(changes []rules.StateChange) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.applyLocked(changes)
}

// measuredRefusal is the error for a statement refused for what it was
// measured to do.
func measuredRefusal(res *rules.Result, blast string, n int, extra string) refusal {
	r := blockRefusal(res, extra)
	v := res.Decision()
	r.message = "pgmoat refused " + rules.Shorten(v.Text, 120) + ": it " + blast
	r.detail = fmt.Sprintf("pgmoat ran it under guard and rolled it back before it could commit.\nRule: %s", v.Rule)
	if n > 1 {
		r.detail += fmt.Sprintf("\nThe %d statements ran together and were rolled back together.", n)
	}
	return r
}

// auditDownRefusal is the refusal of a statement whose decision could not
// be recorded.
func auditDownRefusal(res *rules.Result) refusal {
	r := blockRefusal(res, "")
	r.message = "pgmoat refused " + strings.TrimPrefix(r.message, "pgmoat blocked ") + " because its audit log cannot be written"
	r.hint = "pgmoat refuses destructive statements while it cannot record them. Ask an operator to check pgmoat's audit log."
	return r
}

// waitHold holds res, measured to do blast, and waits for the hold to
// end: approved, or the refusal the client gets. An error ends the
// session (the client is gone).
func (st *sessionState) waitHold(ctx context.Context, res *rules.Result, blast string, inTx bool) (bool, refusal, error) {
	hc := st.e.hcfg.Load()
	v := res.Decision()
	req := st.holdRequest(res, blast)
	if inTx {
		req.Timeout = hc.InTransactionTimeout.Std()
	}
	w, err := st.startHold(ctx, req, "pgmoat ran it under guard and rolled it back: it "+blast+". "+v.Sentence)
	if err != nil {
		return false, blockRefusal(res, "pgmoat could not hold it for approval: "+err.Error()), nil
	}
	out, err := w.wait()
	if err != nil {
		return false, refusal{}, err
	}
	if out.Status == approvals.StatusApproved {
		return true, refusal{}, nil
	}
	return false, w.refusal(out, v.Sentence), nil
}

// prepareCheck asks the server, before the client's PREPARE TRANSACTION,
// which protected relations the transaction holds locks on: a prepared
// transaction keeps them after the session has gone, until someone
// commits or rolls it back, and a lock on a protected table locks the
// application out of it. ok says the PREPARE may go on; when it may not,
// the client's transaction has been rolled back and the client has the
// refusal.
func (g *guardedQuery) prepareCheck() (bool, error) {
	st := g.st
	x := st.client.NewExchange()
	r := x.Add(&pgproto3.Query{String: guard.LocksQuery(st.e.engine.Policy().Patterns())}, proxy.ReplyCollect)
	if err := x.Run(g.ctx); err != nil {
		return false, proxy.Refuse("08006", "pgmoat lost track of the server while verifying a PREPARE TRANSACTION: "+err.Error(), "")
	}
	var held []string
	for _, row := range r.Rows {
		if len(row) == 3 {
			held = append(held, rules.QuoteIdent(string(row[0]))+"."+rules.QuoteIdent(string(row[1]))+" ("+string(row[2])+")")
		}
	}
	if r.Err == nil && len(held) == 0 {
		return true, nil
	}
	ref := refusal{code: codeInsufficientPrivilege, hint: "Nothing was prepared: the transaction was rolled back."}
	blast := ""
	if r.Err != nil {
		ref.message = "pgmoat refused PREPARE TRANSACTION: it could not read the transaction's locks: " + r.Err.Message
	} else {
		blast = "would keep locks on " + strings.Join(held, ", ") + " after the session ends"
		ref.message = "pgmoat refused PREPARE TRANSACTION: it " + blast
		ref.detail = "A prepared transaction keeps its locks until COMMIT PREPARED or ROLLBACK PREPARED, across disconnects and restarts.\nRule: " + g.res.Decision().Rule
		ref.hint = "Nothing was prepared: the transaction was rolled back. COMMIT instead, or prepare a transaction that touches no protected table."
	}
	st.e.met.Guarded.WithLabelValues("refused").Inc()
	if err := st.recordDecision(g.res, "block", blast); err != nil {
		st.e.log.Error("audit log write failed; the PREPARE TRANSACTION is refused anyway", "session", st.auditBase.SessionID, "err", err)
	}
	if err := g.raise(ref); err != nil {
		return false, err
	}
	if _, err := g.run(hidden("ROLLBACK")); err != nil {
		return false, err
	}
	g.failed = true
	return false, nil
}

// deferredCheck runs, before the client's COMMIT (p), the deferred
// constraint triggers the COMMIT would run, with SET CONSTRAINTS ALL
// IMMEDIATE under guard. ok says the COMMIT may go on; when it may not,
// the client has its error and the transaction is over, as after a
// COMMIT that failed.
func (g *guardedQuery) deferredCheck(p part) (bool, error) {
	st := g.st
	x := st.client.NewExchange()
	sp := x.Add(&pgproto3.Query{String: "SAVEPOINT " + savepoint}, proxy.ReplyHide)
	before := st.addSnapshot(x, true)
	set := x.Add(&pgproto3.Query{String: "SET CONSTRAINTS ALL IMMEDIATE"}, proxy.ReplyHide)
	after := st.addSnapshot(x, true)
	if err := x.Run(g.ctx); err != nil {
		return false, proxy.Refuse("08006", "pgmoat lost track of the server while verifying a COMMIT: "+err.Error(), "")
	}
	end := func(sendErr *pgproto3.ErrorResponse, r refusal) (bool, error) {
		if sendErr != nil {
			if err := st.client.SendToClient(sendErr); err != nil {
				return false, err
			}
		} else if err := g.raise(r); err != nil {
			return false, err
		}
		if _, err := g.run(hidden("ROLLBACK")); err != nil {
			return false, err
		}
		g.failed = true
		return false, nil
	}
	switch {
	case set.Err != nil:
		// A deferred constraint failed: what the COMMIT would have said.
		return end(set.Err, refusal{})
	case sp.Err != nil || before.failed() || after.failed():
		why := before.why() + after.why()
		if sp.Err != nil {
			why = sp.Err.Message
		}
		return end(nil, refusal{code: codeInsufficientPrivilege,
			message: "pgmoat refused COMMIT: it could not verify what the deferred triggers do",
			detail:  "The check around them failed: " + why, hint: "Nothing was committed."})
	}
	bs, err1 := guard.Parse(before.exec.Rows)
	as, err2 := guard.Parse(after.exec.Rows)
	if err := firstNonNil(err1, err2); err != nil {
		return end(nil, refusal{code: codeInsufficientPrivilege, message: "pgmoat refused COMMIT: " + err.Error(), hint: "Nothing was committed."})
	}
	if why := guard.Blind(bs, as); why != "" {
		return end(nil, refusal{code: codeInsufficientPrivilege, message: "pgmoat refused COMMIT: " + why, hint: "Nothing was committed."})
	}
	res, blast := st.measured(strings.TrimSpace(p.text), bs, as)
	if res != nil && !passes(res) {
		st.e.met.Guarded.WithLabelValues("refused").Inc()
		if err := st.recordDecision(res, "block", blast); err != nil {
			st.e.log.Error("audit log write failed; the COMMIT is refused anyway", "session", st.auditBase.SessionID, "err", err)
		}
		return end(nil, measuredRefusal(res, blast, 1, ""))
	}
	if _, err := g.run(hidden("RELEASE SAVEPOINT " + savepoint)); err != nil {
		return false, err
	}
	return true, nil
}
