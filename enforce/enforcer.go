package enforce

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/pgmoat/pgmoat/approvals"
	"github.com/pgmoat/pgmoat/audit"
	"github.com/pgmoat/pgmoat/config"
	"github.com/pgmoat/pgmoat/metrics"
	"github.com/pgmoat/pgmoat/proxy"
	"github.com/pgmoat/pgmoat/rules"
)

var errNoSession = errors.New("enforce: session not registered")

// Options are an Enforcer's dependencies.
type Options struct {
	Engine *rules.Engine    // required
	Holds  *approvals.Store // required
	Audit  *audit.Logger    // nil: nothing is audited
	Logger *slog.Logger     // nil: discarded
	Met    *metrics.Metrics // nil: an unregistered set
	Holds0 config.Holds     // the holds section in force at start
	Now    func() time.Time // nil: time.Now
}

// Enforcer judges and enforces; one serves every session of a proxy.Server.
type Enforcer struct {
	engine *rules.Engine
	holds  *approvals.Store
	audit  *audit.Logger
	log    *slog.Logger
	met    *metrics.Metrics
	now    func() time.Time
	hcfg   atomic.Pointer[config.Holds]

	// The series numbers of pgmoat_statements_total, by action and
	// operation, and of the cache's hit and miss, resolved once.
	counters [rules.Block + 1][16]int
	cacheHit int
	cacheMis int

	cats catalogs
}

// New returns an Enforcer; install it as proxy.Options.Interceptor.
func New(o Options) *Enforcer {
	e := &Enforcer{engine: o.Engine, holds: o.Holds, audit: o.Audit, log: o.Logger, met: o.Met, now: o.Now}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	if e.met == nil {
		e.met = metrics.New(nil)
	}
	if e.now == nil {
		e.now = time.Now
	}
	h := o.Holds0
	e.hcfg.Store(&h)
	for a := rules.Allow; a <= rules.Block; a++ {
		for op := rules.OpNone; op < rules.NumOperations; op++ {
			e.counters[a][op] = e.met.Statements.Series(a.String(), op.String())
		}
	}
	e.cacheHit = e.met.AnalysisCache.Series("hit")
	e.cacheMis = e.met.AnalysisCache.Series("miss")
	return e
}

// SetConfig applies a reloaded configuration: the new policy and analysis
// limits take effect for the next statement of every session.
func (e *Enforcer) SetConfig(cfg *config.Config) {
	e.engine.SetPolicy(cfg.CompiledPolicy)
	e.engine.SetLimits(cfg.Limits.Rules())
	h := cfg.Holds
	e.hcfg.Store(&h)
}

// session returns the state SessionStarted kept with s, or nil for a
// session it did not accept.
func (e *Enforcer) session(s *proxy.ClientSession) *sessionState {
	st, _ := s.HookData().(*sessionState)
	return st
}

// SessionStarted implements proxy.SessionHooks: it refuses sessions whose
// startup parameters would make PostgreSQL lex differently from pgmoat, and
// starts tracking the session.
func (e *Enforcer) SessionStarted(s *proxy.ClientSession) error {
	id := rules.Identity{User: s.User(), Database: s.Database(), Application: s.ApplicationName()}
	if host, _, err := net.SplitHostPort(s.ClientAddr()); err == nil {
		if a, err := netip.ParseAddr(host); err == nil {
			id.Client = a.Unmap()
		}
	}
	st := &sessionState{e: e, client: s, analysis: rules.NewSession(id), started: e.now()}
	st.auditBase = audit.Event{
		SessionID:   strconv.FormatUint(s.ID(), 10),
		User:        id.User,
		Database:    id.Database,
		Application: id.Application,
		Client:      s.ClientAddr(),
	}
	params := map[string]string{}
	for _, k := range []string{"options", "client_encoding", "standard_conforming_strings", "search_path"} {
		if v := s.StartupParameter(k); v != "" {
			params[k] = v
		}
	}
	for k, v := range s.ParameterStatuses() {
		if k == "client_encoding" || k == "standard_conforming_strings" {
			params[k] = v
		}
	}
	path, ok, err := rules.CheckStartup(params)
	if err != nil && e.engine.Policy().ProtectsAnything() {
		e.met.ClientConnectionsRejected.WithLabelValues("lexer_state").Inc()
		ev := st.event(audit.SessionEnd)
		ev.EndReason = "lexer_state"
		ev.Error = err.Error()
		e.audit.RecordAsync(ev)
		return proxy.Refuse("42501", "pgmoat refuses this session: "+err.Error(),
			"After it, PostgreSQL would split statements differently from pgmoat's parser, so pgmoat could not check them.")
	}
	if ok {
		st.analysis.SetSearchPath(path)
	}
	if e.engine.Policy().ProtectsAnything() {
		st.learn(ok)
	}
	s.SetHookData(st)
	e.audit.RecordAsync(st.event(audit.SessionStart))
	return nil
}

// SessionEnded implements proxy.SessionHooks.
func (e *Enforcer) SessionEnded(s *proxy.ClientSession, reason string, err error) {
	st := e.session(s)
	if st == nil {
		return
	}
	ev := st.event(audit.SessionEnd)
	ev.EndReason = reason
	if err != nil {
		ev.Error = err.Error()
	}
	ev.Duration = e.now().Sub(st.started)
	e.audit.RecordAsync(ev)
}

// Intercept implements proxy.Interceptor.
func (e *Enforcer) Intercept(ctx context.Context, s *proxy.ClientSession, m *proxy.ClientMessage) (proxy.MessageVerdict, error) {
	st := e.session(s)
	if st == nil {
		// A session the hooks never saw start: nothing is known about
		// it, so nothing of it is trusted.
		return proxy.MessageVerdict{}, errNoSession
	}
	return st.handle(ctx, m, true)
}

// TryIntercept implements proxy.TryInterceptor: the statements it allows,
// and the messages that need no decision, are settled in the proxy's event
// loop; the rest go to Intercept.
func (e *Enforcer) TryIntercept(s *proxy.ClientSession, m *proxy.ClientMessage) (proxy.MessageVerdict, bool) {
	st := e.session(s)
	if st == nil {
		return proxy.MessageVerdict{}, false
	}
	v, err := st.handle(context.Background(), m, false)
	return v, err == nil
}

// ServerMessage implements proxy.ReplyObserver.
func (e *Enforcer) ServerMessage(s *proxy.ClientSession, tag any, typ byte, body []byte) error {
	st := e.session(s)
	if st == nil {
		return nil
	}
	return st.serverMessage(tag, typ, body)
}
