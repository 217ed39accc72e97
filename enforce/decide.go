package enforce

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgmoat/pgmoat/approvals"
	"github.com/pgmoat/pgmoat/proxy"
	"github.com/pgmoat/pgmoat/rules"
)

// SQLSTATEs pgmoat raises.
const (
	codeInsufficientPrivilege = "42501"
	codeQueryCanceled         = "57014"
)

// refusal is the error a refused message gets, raised by the server.
type refusal struct {
	code, message, detail, hint string
}

// enforce carries out a block or hold decision on message typ ('Q', 'P',
// 'B' or 'F').
func (st *sessionState) enforce(ctx context.Context, typ byte, res *rules.Result, stmt string) (proxy.MessageVerdict, error) {
	if ok, err := st.preApproved(res); ok {
		if res.Action == rules.Hold {
			st.count(res, rules.Hold)
		}
		st.allowed(res, "pre-approved")
		return st.forward(typ, res, stmt), nil
	} else if err != nil {
		st.e.log.Warn("pre-approval could not be used", "session", st.auditBase.SessionID, "err", err)
	}
	if res.Action == rules.Hold {
		return st.hold(ctx, typ, res, stmt)
	}
	if err := st.recordDecision(res, "block", ""); err != nil {
		st.e.log.Error("audit log write failed; the statement is blocked anyway", "session", st.auditBase.SessionID, "err", err)
	}
	return refuse(typ, st.blockRefusal(res, "")), nil
}

// preApproved reports whether every statement of res that is not allowed
// matches an active pre-approval, and if so records their use (before the
// message is forwarded; a use that cannot be recorded does not pass).
func (st *sessionState) preApproved(res *rules.Result) (bool, error) {
	id := st.analysis.Identity()
	type use struct {
		p  *approvals.PreApproval
		v  *rules.Verdict
		fp string
	}
	// Every statement that would be held, blocked or verified must be
	// pre-approved; a use is counted for each held or blocked one, or,
	// when the message has none, for each verified one (it passes
	// unverified thanks to the pre-approval).
	var uses, verified []use
	for _, v := range res.Statements {
		if v.Action == rules.Allow || v.Action == rules.Log {
			continue
		}
		fp, err := v.Fingerprint()
		if err != nil {
			return false, nil
		}
		p, ok := st.e.holds.Match(fp, id.User, id.Database)
		if !ok {
			return false, nil
		}
		if v.Action == rules.Verify {
			verified = append(verified, use{p, v, fp})
		} else {
			uses = append(uses, use{p, v, fp})
		}
	}
	if len(uses) == 0 {
		uses = verified
	}
	if len(uses) == 0 {
		return false, nil
	}
	for _, u := range uses {
		err := st.e.holds.MarkUsed(u.p.ID, approvals.Usage{
			Fingerprint: u.fp, Statement: u.v.Text, User: id.User, Database: id.Database,
			Application: id.Application, Client: st.auditBase.Client, SessionID: st.auditBase.SessionID, Rule: u.v.Rule,
		})
		if err != nil {
			return false, err
		}
	}
	return true, nil
}

// hold holds the message for approval.
func (st *sessionState) hold(ctx context.Context, typ byte, res *rules.Result, stmt string) (proxy.MessageVerdict, error) {
	hc := st.e.hcfg.Load()
	inTx := st.inTransaction()
	if inTx && hc.InTransaction == "block" {
		st.count(res, rules.Block)
		if err := st.recordDecision(res, "block", ""); err != nil {
			st.e.log.Error("audit log write failed; the statement is blocked anyway", "session", st.auditBase.SessionID, "err", err)
		}
		r := st.blockRefusal(res, "It would be held for approval, but the session is inside a transaction block, "+
			"where waiting could hold locks for as long as the hold lasts. Run it outside a transaction, or pre-approve it first: "+
			"pgmoat approve --file migration.sql --ttl 1h --reason '…'")
		// Migration tools print the message alone (goose, golang-migrate):
		// it says what to do too.
		r.message += " (held statements cannot wait inside a transaction: pre-approve it with pgmoat approve --file)"
		return refuse(typ, r), nil
	}
	st.count(res, rules.Hold)
	if err := st.recordDecision(res, "hold", ""); err != nil {
		return st.refuseAuditDown(typ, res, err), nil
	}
	v := res.Decision()
	req := st.holdRequest(res, "")
	if inTx {
		req.Timeout = hc.InTransactionTimeout.Std()
	}
	w, err := st.startHold(ctx, req, v.Sentence)
	if err != nil {
		return refuse(typ, blockRefusal(res, "pgmoat could not hold it for approval: "+err.Error())), nil
	}
	out, err := w.wait()
	if err != nil {
		return proxy.MessageVerdict{}, err
	}
	if out.Status == approvals.StatusApproved {
		// The store recorded the approval before releasing us.
		st.allowed(res, "approved")
		return st.forward(typ, res, stmt), nil
	}
	return refuse(typ, w.refusal(out, v.Sentence)), nil
}

// holdWait is a hold a session waits on, with the hooks that withdraw it
// when the client cancels or goes.
type holdWait struct {
	st     *sessionState
	h      *approvals.Hold
	ctx    context.Context
	cancel context.CancelCauseFunc
	stop   func()
}

// startHold creates a hold for req and tells the client (detail: why it is
// held).
func (st *sessionState) startHold(ctx context.Context, req approvals.Request, detail string) (*holdWait, error) {
	// Watch for a cancel and a disconnect before the hold exists: a
	// client that cancels as soon as it learns of the hold (from the
	// notice, or an operator from the API) must find the hook in place,
	// or its CancelRequest goes to the idle server and is lost, and the
	// client waits for a hold it asked to withdraw. A cancel that comes
	// before Create withdraws the hold as soon as Wait starts.
	hctx, cancel := context.WithCancelCause(ctx)
	st.client.SetCancelHook(func() bool {
		cancel(approvals.ErrClientCancel)
		return true
	})
	stop := st.client.WatchClient(func() { cancel(approvals.ErrClientDisconnect) })
	h, err := st.e.holds.Create(req)
	if err != nil {
		stop()
		st.client.SetCancelHook(nil)
		cancel(nil)
		return nil, err
	}
	notice := &pgproto3.NoticeResponse{
		Severity:            "NOTICE",
		SeverityUnlocalized: "NOTICE",
		Code:                "01000",
		Message:             fmt.Sprintf("pgmoat is holding this statement for approval (hold %s, expires %s)", h.ID(), h.ExpiresAt().UTC().Format(time.RFC3339)),
		Detail:              detail,
		Hint:                h.HowToApprove(),
	}
	if err := st.client.SendToClient(notice); err != nil {
		// The client is gone: Wait withdraws the hold at once.
		st.e.log.Debug("hold notice not delivered", "err", err)
	}
	return &holdWait{st: st, h: h, ctx: hctx, cancel: cancel, stop: stop}, nil
}

// wait waits for the hold to end. When the client is gone (or said
// Terminate), or pgmoat is shutting down, it returns the error that ends
// the session here, so that nothing the client pipelined behind the held
// statement runs either.
func (w *holdWait) wait() (approvals.Outcome, error) {
	defer w.cancel(nil)
	out := w.st.e.holds.Wait(w.ctx, w.h)
	w.stop()
	w.st.client.SetCancelHook(nil)
	if out.Status == approvals.StatusWithdrawn && !errors.Is(context.Cause(w.ctx), approvals.ErrClientCancel) {
		return out, proxy.Refuse("08006", fmt.Sprintf("pgmoat withdrew hold %s: %s", w.h.ID(), context.Cause(w.ctx)), "")
	}
	return out, nil
}

// refusal is the error for a hold that ended without approval.
func (w *holdWait) refusal(out approvals.Outcome, sentence string) refusal {
	switch out.Status {
	case approvals.StatusDenied:
		return refusal{
			code:    codeInsufficientPrivilege,
			message: fmt.Sprintf("pgmoat: hold %s was denied by %s: %s", w.h.ID(), out.By, out.Reason),
			detail:  sentence,
			hint:    preapproveHint,
		}
	case approvals.StatusTimedOut:
		return refusal{
			code:    codeInsufficientPrivilege,
			message: fmt.Sprintf("pgmoat: hold %s ended without approval: %s", w.h.ID(), out.Reason),
			detail:  sentence,
			hint:    preapproveHint,
		}
	}
	// Withdrawn by the client's cancel.
	return refusal{code: codeQueryCanceled, message: "canceling statement due to user request",
		detail: fmt.Sprintf("pgmoat withdrew hold %s: the client cancelled it.", w.h.ID())}
}

const preapproveHint = "A reviewed migration can be pre-approved: pgmoat approve --file migration.sql --ttl 1h --reason '…'"

// blockRefusal is blockRefusal for this session: a pg_restore (its
// application_name) also learns how to pre-approve the restore script.
func (st *sessionState) blockRefusal(res *rules.Result, extra string) refusal {
	r := blockRefusal(res, extra)
	if st.auditBase.Application == "pg_restore" {
		r.hint += " To restore over protected objects, pre-approve what pg_restore runs: " +
			"pg_restore --clean -f - DUMPFILE | pgmoat approve --file - --ttl 1h --reason '…' (the same options as the restore), " +
			"and restore with --exit-on-error or --single-transaction so that nothing half-applies."
	}
	return r
}

// blockRefusal is the error for a blocked message: it names the statement
// and the protected object, the rule, and how to get it approved.
func blockRefusal(res *rules.Result, extra string) refusal {
	v := res.Decision()
	sentence, rule := v.Sentence, v.Rule
	what := sentence
	if i := strings.LastIndex(what, "; rule "); i >= 0 {
		what = what[:i]
	}
	detail := fmt.Sprintf("Statement: %s\nRule: %s", rules.Shorten(v.Text, 200), rule)
	if len(res.Statements) > 1 {
		detail += fmt.Sprintf("\nThe whole message (%d statements) was refused; none of it ran.", len(res.Statements))
	}
	hint := preapproveHint + ", or ask an operator for a rule that holds it for approval."
	if rule == rules.RuleDefaultOpaque {
		hint = "pgmoat cannot see what this statement would do, so it refuses it while tables are protected. " + preapproveHint
	}
	if extra != "" {
		hint = extra
	}
	return refusal{
		code:    codeInsufficientPrivilege,
		message: "pgmoat blocked " + what,
		detail:  detail,
		hint:    hint,
	}
}

// refuseAuditDown refuses a statement whose decision could not be
// written to the audit log: fail closed.
func (st *sessionState) refuseAuditDown(typ byte, res *rules.Result, err error) proxy.MessageVerdict {
	st.e.log.Error("audit log write failed; refusing the statement", "session", st.auditBase.SessionID, "err", err)
	return refuse(typ, auditDownRefusal(res))
}

// refuse returns the verdict that makes the server raise r in place of
// message typ: a DO block that raises it, so that the transaction state
// and the skipping of pipelined messages are PostgreSQL's own.
func refuse(typ byte, r refusal) proxy.MessageVerdict {
	do := r.doBlock()
	switch typ {
	case 'Q', 'F':
		return proxy.MessageVerdict{Action: proxy.Replace, Rewrite: &proxy.Rewrite{
			Replacement: []proxy.Injected{{Msg: &pgproto3.Query{String: do}, OwnError: true}},
		}}
	}
	// Parse or Bind: run the DO on the unnamed statement and portal,
	// keep its ParseComplete and BindComplete from the client, and drop
	// the client's messages up to its Sync, as the server would after an
	// error.
	return proxy.MessageVerdict{Action: proxy.Replace, Rewrite: &proxy.Rewrite{
		Replacement: []proxy.Injected{
			{Msg: &pgproto3.Parse{Query: do}, HideReply: true, OwnError: true},
			{Msg: &pgproto3.Bind{}, HideReply: true, OwnError: true},
			{Msg: &pgproto3.Execute{}, HideReply: true, OwnError: true},
		},
		DiscardUntilSync: true,
	}}
}

// doBlock renders the DO statement that raises r.
func (r refusal) doBlock() string {
	var b strings.Builder
	b.WriteString(" BEGIN RAISE EXCEPTION USING ERRCODE = '")
	b.WriteString(r.code)
	b.WriteString("', MESSAGE = ")
	b.WriteString(rules.DollarQuote(r.message))
	if r.detail != "" {
		b.WriteString(", DETAIL = ")
		b.WriteString(rules.DollarQuote(r.detail))
	}
	if r.hint != "" {
		b.WriteString(", HINT = ")
		b.WriteString(rules.DollarQuote(r.hint))
	}
	b.WriteString("; END ")
	// The body holds user text in the refusal's strings: its quote tag
	// is chosen, like theirs, so that no text can close it.
	return "DO " + rules.DollarQuote(b.String())
}

func joinTexts(res *rules.Result) string {
	if len(res.Statements) == 1 {
		return res.Statements[0].Text
	}
	texts := make([]string, len(res.Statements))
	for i, v := range res.Statements {
		texts[i] = v.Text
	}
	return strings.Join(texts, ";\n")
}

func effectsOf(res *rules.Result) (ops, objs []string) {
	seenOp := map[string]bool{}
	seenObj := map[string]bool{}
	for _, v := range res.Statements {
		if v.Action == rules.Allow {
			continue
		}
		for _, ef := range v.Decisive() {
			if op := ef.Op.String(); !seenOp[op] {
				seenOp[op] = true
				ops = append(ops, op)
			}
			if obj := ef.Object.String(); !seenObj[obj] {
				seenObj[obj] = true
				objs = append(objs, obj)
			}
		}
	}
	return ops, objs
}
