package enforce

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/pgmoat/pgmoat/approvals"
	"github.com/pgmoat/pgmoat/audit"
	"github.com/pgmoat/pgmoat/proxy"
	"github.com/pgmoat/pgmoat/rules"
)

var errNoSession = errors.New("enforce: session not registered")

// conn is one session's enforcement state. Its client→server goroutine
// (Intercept) and server→client goroutine (ServerMessage) both use it, so
// mu guards everything below it.
type conn struct {
	e         *Enforcer
	ps        *proxy.Session
	started   time.Time
	auditBase audit.Event

	mu sync.Mutex
	rs *rules.Session
	// unconfirmed holds the tags (*queryTag, *executeTag) of forwarded
	// messages whose state changes the server has not confirmed yet.
	unconfirmed []any
	// sqlPrepared names the statements prepared with SQL PREPARE, which
	// Bind can run without new text; stmts keeps every protocol-level
	// statement (Parse) with the policy that judged it, and portals the
	// judgement of portals whose execution changes session state.
	sqlPrepared map[string]bool
	stmts       map[string]*parsedStmt
	portals     map[string]*rules.Result
}

// parsedStmt is a statement the client prepared with Parse. A Bind after
// a policy reload judges its text again: clients keep prepared statements
// for the life of a connection, and a tightened policy must reach them.
type parsedStmt struct {
	text   string
	policy uint64        // version of the policy that allowed it
	res    *rules.Result // its judgement, when executing it changes session state
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
// changes session state.
type executeTag struct {
	changes []rules.StateChange
}

func (c *conn) event(kind audit.Kind) audit.Event {
	ev := c.auditBase
	ev.Kind = kind
	return ev
}

func (c *conn) intercept(ctx context.Context, m *proxy.ClientMessage) (proxy.Verdict, error) {
	body := m.Body()
	switch m.Type {
	case 'Q':
		_, sql, ok := statementText(m.Type, body)
		if !ok {
			return proxy.Verdict{}, proxy.Malformed("malformed Query message")
		}
		return c.judgeText(ctx, m.Type, string(sql), "")
	case 'P':
		name, sql, ok := statementText(m.Type, body)
		if !ok {
			return proxy.Verdict{}, proxy.Malformed("malformed Parse message")
		}
		return c.judgeText(ctx, m.Type, string(sql), string(name))
	case 'B':
		portal, stmt, ok := bindNames(body)
		if !ok {
			return proxy.Verdict{}, proxy.Malformed("malformed Bind message")
		}
		return c.bind(ctx, portal, stmt)
	case 'E':
		portal, ok := cstring(body)
		if !ok {
			return proxy.Verdict{}, proxy.Malformed("malformed Execute message")
		}
		c.mu.Lock()
		r := c.portals[string(portal)]
		if r == nil {
			c.mu.Unlock()
			return proxy.Verdict{}, nil
		}
		tag := &executeTag{changes: allChanges(r)}
		c.unconfirmed = append(c.unconfirmed, tag)
		c.mu.Unlock()
		return proxy.Verdict{Tag: tag}, nil
	case 'C':
		if len(body) >= 2 {
			if name, ok := cstring(body[1:]); ok {
				c.mu.Lock()
				switch body[0] {
				case 'S':
					delete(c.stmts, string(name))
					delete(c.sqlPrepared, string(name))
					c.rs.ClosePrepared(string(name))
				case 'P':
					delete(c.portals, string(name))
				}
				c.mu.Unlock()
			}
		}
		return proxy.Verdict{}, nil
	case 'F':
		return c.functionCall(ctx)
	}
	return proxy.Verdict{}, nil
}

// watchBytes is the length from which a message may take long enough to
// analyse (a millisecond and more) that pgmoat watches the client
// meanwhile, and stops the analysis when the client goes.
const watchBytes = 64 << 10

// judgeText judges the SQL of a Query ('Q') or Parse ('P', statement name
// stmt) and carries out the decision.
func (c *conn) judgeText(ctx context.Context, typ byte, sql, stmt string) (proxy.Verdict, error) {
	actx, stop := ctx, func() {} // actx ends with the session
	if len(sql) >= watchBytes {
		var cancel context.CancelCauseFunc
		actx, cancel = context.WithCancelCause(ctx)
		defer cancel(nil)
		stop = c.ps.WatchClient(func() { cancel(approvals.ErrClientDisconnect) })
	}
	res := c.judge(func(rs *rules.Session) *rules.Result { return c.e.engine.JudgeContext(actx, rs, sql) })
	stop() // before a hold watches the client in its turn
	if actx.Err() != nil {
		// The analysis may have stopped short: nothing of the message is
		// forwarded, and the session ends (the client is gone, or pgmoat
		// is shutting down).
		return proxy.Verdict{}, proxy.Refuse("08006", "pgmoat stopped analysing the message: "+context.Cause(actx).Error(), "")
	}
	if res.Action == rules.Allow || res.Action == rules.Log {
		if res.Action == rules.Log {
			if err := c.recordDecision(res, "log"); err != nil {
				return c.refuseAuditDown(typ, res, err), nil
			}
		}
		c.allowed(res, "")
		return c.forward(typ, res, stmt), nil
	}
	return c.enforce(ctx, typ, res, stmt)
}

// judge runs f against the session's analysis state, or, while a state
// change the client pipelined is unconfirmed, against a session whose
// search_path is unknown (the strictest assumption) that knows the
// relations the session made and those the unconfirmed messages make.
func (c *conn) judge(f func(*rules.Session) *rules.Result) *rules.Result {
	res, d := c.analyse(f)
	c.judged(res, d)
	return res
}

// analyse is judge without the metrics: TryIntercept may give a message
// up to Intercept, which then counts it.
func (c *conn) analyse(f func(*rules.Session) *rules.Result) (*rules.Result, time.Duration) {
	t0 := time.Now()
	c.mu.Lock()
	rs := c.rs
	if len(c.unconfirmed) > 0 {
		rs = c.rs.Unsettled(c.pendingLocked()...)
	}
	res := f(rs)
	c.mu.Unlock()
	return res, time.Since(t0)
}

// judged counts a judged message in the metrics.
func (c *conn) judged(res *rules.Result, d time.Duration) {
	c.e.met.AnalysisDuration.Observe(d.Seconds())
	if res.Path == rules.PathFull {
		c.e.cacheMis.Inc()
	} else {
		c.e.cacheHit.Inc()
	}
	c.count(res)
}

// tryIntercept is intercept for the proxy's event loop: it decides the
// messages that need nothing but the analysis (allowed statements, Bind of
// a statement judged under the current policy, Execute, Close, Sync, ...)
// and gives up, having changed nothing, on everything that may block or
// write durably: a statement to block, hold or log, a FunctionCall, a
// malformed message.
func (c *conn) tryIntercept(m *proxy.ClientMessage) (proxy.Verdict, bool) {
	body := m.Body()
	switch m.Type {
	case 'Q', 'P':
		name, sql, ok := statementText(m.Type, body)
		if !ok {
			return proxy.Verdict{}, false
		}
		text := string(sql)
		res, d := c.analyse(func(rs *rules.Session) *rules.Result { return c.e.engine.Judge(rs, text) })
		if res.Action != rules.Allow {
			return proxy.Verdict{}, false
		}
		c.judged(res, d)
		c.allowed(res, "")
		return c.forward(m.Type, res, string(name)), true
	case 'B':
		portal, stmt, ok := bindNames(body)
		if !ok || !c.bindSettled(portal, stmt) {
			return proxy.Verdict{}, false // judged again (it may block), or malformed
		}
		return proxy.Verdict{}, true
	case 'F':
		return proxy.Verdict{}, false
	}
	// The rest (Execute, Close, Describe, Sync, Flush, CopyDone, ...)
	// never blocks in intercept.
	v, err := c.intercept(context.Background(), m)
	return v, err == nil
}

// count adds the message's statements to pgmoat_statements_total, under
// the message's decision and each statement's most severe operation.
func (c *conn) count(res *rules.Result) {
	for _, v := range res.Statements {
		op := rules.OpNone
		for _, ef := range v.Effects {
			if ef.Op > op {
				op = ef.Op
			}
		}
		c.e.counters[res.Action][op].Inc()
	}
}

// forward lets a judged message through, tagging it when its statements
// change session state so the change is applied once confirmed.
func (c *conn) forward(typ byte, res *rules.Result, stmt string) proxy.Verdict {
	changes := hasChanges(res)
	c.mu.Lock()
	defer c.mu.Unlock()
	switch typ {
	case 'Q':
		if !changes {
			return proxy.Verdict{}
		}
		_, inTx := c.txStatusLocked()
		tag := &queryTag{res: res, wasInTx: inTx}
		c.unconfirmed = append(c.unconfirmed, tag)
		return proxy.Verdict{Tag: tag}
	case 'P':
		text := joinTexts(res)
		if stmt != "" {
			delete(c.sqlPrepared, stmt)
			c.rs.RegisterPrepared(stmt, text)
		}
		if c.stmts == nil {
			c.stmts = map[string]*parsedStmt{}
		}
		ps := &parsedStmt{text: text, policy: c.e.engine.Policy().Version()}
		if changes {
			ps.res = res
		}
		c.stmts[stmt] = ps
	}
	return proxy.Verdict{}
}

func (c *conn) txStatusLocked() (byte, bool) {
	st := c.ps.TxStatus()
	return st, st == 'T' || st == 'E'
}

// bind handles Bind: a statement prepared with SQL PREPARE runs here
// without new text, so it is judged (as EXECUTE of it) under the policy
// in force now; a statement prepared with Parse is judged again when the
// policy changed since its Parse.
func (c *conn) bind(ctx context.Context, portal, stmt []byte) (proxy.Verdict, error) {
	if c.bindSettled(portal, stmt) {
		return proxy.Verdict{}, nil
	}
	// The rest is judged, and may block. The state is read again: the
	// server→client side may have changed it (DISCARD ALL, PREPARE).
	c.mu.Lock()
	sqlPrep := c.sqlPrepared[string(stmt)]
	ps := c.stmts[string(stmt)]
	c.mu.Unlock()
	if !sqlPrep {
		if ps == nil {
			c.setPortal(string(portal), nil)
			return proxy.Verdict{}, nil
		}
		if pv := c.e.engine.Policy().Version(); ps.policy != pv {
			res := c.judge(func(rs *rules.Session) *rules.Result { return c.e.engine.Judge(rs, ps.text) })
			if res.Action != rules.Allow && res.Action != rules.Log {
				return c.enforce(ctx, 'B', res, "")
			}
			if res.Action == rules.Log {
				if err := c.recordDecision(res, "log"); err != nil {
					return c.refuseAuditDown('B', res, err), nil
				}
			}
			c.mu.Lock()
			ps.policy = pv
			c.mu.Unlock()
		}
		c.setPortal(string(portal), ps.res)
		return proxy.Verdict{}, nil
	}
	text := "EXECUTE " + quoteIdent(string(stmt))
	res := c.judge(func(rs *rules.Session) *rules.Result { return c.e.engine.Judge(rs, text) })
	if res.Action == rules.Allow || res.Action == rules.Log {
		if res.Action == rules.Log {
			if err := c.recordDecision(res, "log"); err != nil {
				return c.refuseAuditDown('B', res, err), nil
			}
		}
		c.allowed(res, "")
		c.setPortal(string(portal), nil)
		return proxy.Verdict{}, nil
	}
	return c.enforce(ctx, 'B', res, "")
}

// bindSettled settles, without judging, a Bind of a statement pgmoat did
// not see prepared or saw Parse'd and judged under the policy in force:
// the portal takes the statement's judgement. It reports false, having
// changed nothing, when the Bind must be judged (a statement prepared with
// SQL PREPARE, or judged under an older policy).
func (c *conn) bindSettled(portal, stmt []byte) bool {
	c.mu.Lock()
	sqlPrep := c.sqlPrepared[string(stmt)]
	ps := c.stmts[string(stmt)]
	c.mu.Unlock()
	if sqlPrep || ps != nil && ps.policy != c.e.engine.Policy().Version() {
		return false
	}
	var r *rules.Result
	if ps != nil {
		r = ps.res
	}
	c.setPortal(string(portal), r)
	return true
}

func (c *conn) setPortal(portal string, r *rules.Result) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r == nil {
		if c.portals != nil {
			delete(c.portals, portal)
		}
		return
	}
	if c.portals == nil {
		c.portals = map[string]*rules.Result{}
	}
	c.portals[portal] = r
}

// functionCall judges a FunctionCall message: pgmoat cannot see what the
// function does, so it is opaque.
func (c *conn) functionCall(ctx context.Context) (proxy.Verdict, error) {
	res := c.judge(func(rs *rules.Session) *rules.Result {
		return c.e.engine.JudgeOpaque(rs, "FunctionCall message (fast-path function call)")
	})
	if res.Action == rules.Allow || res.Action == rules.Log {
		if res.Action == rules.Log {
			if err := c.recordDecision(res, "log"); err != nil {
				return c.refuseAuditDown('F', res, err), nil
			}
		}
		return proxy.Verdict{}, nil
	}
	return c.enforce(ctx, 'F', res, "")
}

// allowed records the statements of a message that is let through, when
// audit.statements is all. why says what let a held or blocked statement
// through ("pre-approved", "approved"); the recorded decision is what
// happened to the statement (allow, or log), not what the policy alone
// would have done.
func (c *conn) allowed(res *rules.Result, why string) {
	if !c.e.audit.AllStatements() {
		return
	}
	for _, v := range res.Statements {
		ev := c.event(audit.Statement)
		ev.Statement = v.Text
		ev.Fingerprint, _ = v.Fingerprint()
		ev.Decision = "allow"
		if v.Action == rules.Log && why == "" {
			ev.Decision = "log"
		}
		ev.Reason = why
		ev.Rule = v.Rule
		c.e.audit.RecordAsync(ev)
	}
}

// recordDecision writes a non-allow decision to the audit log, durably.
func (c *conn) recordDecision(res *rules.Result, decision string) error {
	v := res.Decision()
	ev := c.event(audit.Decision)
	ev.Statement = joinTexts(res)
	if v != nil {
		ev.Fingerprint, _ = v.Fingerprint()
		ev.Rule = v.Rule
		ev.Reason = v.Sentence
	}
	ev.Decision = decision
	ev.Operations, ev.Objects = effectsOf(res)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return c.e.audit.Record(ctx, ev)
}

// serverMessage applies confirmed state changes and watches settings the
// server reports.
func (c *conn) serverMessage(tag any, typ byte, body []byte) error {
	switch typ {
	case 'S':
		name, rest, ok := cstringRest(body)
		if !ok {
			return nil
		}
		value, _ := cstring(rest)
		if err := rules.CheckParameter(string(name), string(value)); err != nil && c.e.engine.Policy().ProtectsAnything() {
			c.e.log.Warn("session changed a setting that makes lexing unsafe; closing it", "session", c.auditBase.SessionID, "err", err)
			ev := c.event(audit.SessionEnd)
			ev.EndReason = "lexer_state"
			ev.Error = err.Error()
			c.e.audit.RecordAsync(ev)
			return proxy.Refuse("42501", "pgmoat closed this session: "+err.Error(),
				"After this setting, PostgreSQL would split statements differently from pgmoat's parser.")
		}
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch t := tag.(type) {
	case *queryTag:
		switch typ {
		case 'C':
			if t.next < len(t.res.Statements) {
				ch := t.res.Statements[t.next].Changes
				c.applyLocked(ch)
				if movesPath(ch) {
					t.pathMove = true
				}
			}
			t.next++
		case 'E':
			t.failed = true
		case 'Z':
			if t.failed && t.pathMove && !t.wasInTx && len(body) == 1 && body[0] == 'I' {
				// The implicit transaction of the message rolled back
				// the SETs that ran before the error; pgmoat cannot tell
				// exactly what remains, so it assumes nothing.
				c.rs.Apply(rules.StateChange{Kind: rules.ChangeSearchPath})
			}
			c.settledLocked(t)
		case 0:
			c.settledLocked(t)
		}
	case *executeTag:
		switch typ {
		case 'C':
			c.applyLocked(t.changes)
			c.settledLocked(t)
		case 'E', 0:
			c.settledLocked(t)
		}
	}
	if typ == 'Z' && len(body) == 1 {
		c.rs.Sync(body[0])
	}
	return nil
}

// settledLocked forgets the tag of a message the server has finished.
func (c *conn) settledLocked(tag any) {
	if i := slices.Index(c.unconfirmed, tag); i >= 0 {
		c.unconfirmed = slices.Delete(c.unconfirmed, i, i+1)
	}
}

// pendingLocked returns the state changes of forwarded messages the
// server has not confirmed yet: they may or may not happen.
func (c *conn) pendingLocked() []rules.StateChange {
	var out []rules.StateChange
	for _, tag := range c.unconfirmed {
		switch t := tag.(type) {
		case *queryTag:
			for _, v := range t.res.Statements[min(t.next, len(t.res.Statements)):] {
				out = append(out, v.Changes...)
			}
		case *executeTag:
			out = append(out, t.changes...)
		}
	}
	return out
}

func (c *conn) applyLocked(changes []rules.StateChange) {
	stale := false
	for _, ch := range changes {
		switch ch.Kind {
		case rules.ChangeCreateRelation, rules.ChangeEdge, rules.ChangeRenameRelation, rules.ChangeDropRelation, rules.ChangeDropSchema:
			// The catalog snapshot no longer says what the database
			// holds: the next session reloads it (what this one made
			// reaches the others at once through Learn, below; the reload
			// also brings what was made outside pgmoat).
			stale = stale || ch.Relation.Schema != "pg_temp"
		case rules.ChangePrepare:
			if c.sqlPrepared == nil {
				c.sqlPrepared = map[string]bool{}
			}
			c.sqlPrepared[ch.Name] = true
		case rules.ChangeDeallocate:
			if ch.Name == "" {
				c.sqlPrepared = nil
			} else {
				delete(c.sqlPrepared, ch.Name)
			}
		case rules.ChangeDiscardAll:
			c.sqlPrepared, c.stmts, c.portals = nil, nil, nil
		}
	}
	if stale {
		c.e.cats.release(c.auditBase.Database)
	}
	c.rs.Apply(changes...)
	// The database's other sessions count what this one made too.
	c.e.engine.Learn(c.auditBase.Database, changes...)
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
	var out []rules.StateChange
	for _, v := range res.Statements {
		out = append(out, v.Changes...)
	}
	return out
}

func formatUint(u uint64) string { return strconv.FormatUint(u, 10) }

// statementText returns the SQL of a Query ('Q') or Parse ('P') body,
// and for Parse the statement name.
func statementText(typ byte, body []byte) (name, sql []byte, ok bool) {
	if typ == 'P' {
		if name, body, ok = cstringRest(body); !ok {
			return nil, nil, false
		}
	}
	sql, ok = cstring(body)
	return name, sql, ok
}

// bindNames returns the portal and statement names of a Bind body.
func bindNames(body []byte) (portal, stmt []byte, ok bool) {
	portal, rest, ok := cstringRest(body)
	if !ok {
		return nil, nil, false
	}
	stmt, ok = cstring(rest)
	return portal, stmt, ok
}

// cstring returns the NUL-terminated string at the start of b.
func cstring(b []byte) ([]byte, bool) {
	for i, ch := range b {
		if ch == 0 {
			return b[:i], true
		}
	}
	return nil, false
}

// cstringRest returns the NUL-terminated string at the start of b and what
// follows it.
func cstringRest(b []byte) (s, rest []byte, ok bool) {
	s, ok = cstring(b)
	if !ok {
		return nil, nil, false
	}
	return s, b[len(s)+1:], true
}
