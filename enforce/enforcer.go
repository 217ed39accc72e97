package enforce

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgmoat/pgmoat/approvals"
	"github.com/pgmoat/pgmoat/audit"
	"github.com/pgmoat/pgmoat/config"
	"github.com/pgmoat/pgmoat/metrics"
	"github.com/pgmoat/pgmoat/proxy"
	"github.com/pgmoat/pgmoat/rules"
)

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

	// counters[action][operation], resolved once: WithLabelValues on every
	// statement would cost a map look-up and a lock.
	counters [4][16]prometheus.Counter
	cacheHit prometheus.Counter
	cacheMis prometheus.Counter

	conns sync.Map // *proxy.Session → *conn
	cats  catalogs
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
		for op := rules.OpNone; op <= rules.OpUnparseable; op++ {
			e.counters[a][op] = e.met.Statements.WithLabelValues(a.String(), op.String())
		}
	}
	e.cacheHit = e.met.AnalysisCache.WithLabelValues("hit")
	e.cacheMis = e.met.AnalysisCache.WithLabelValues("miss")
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

func (e *Enforcer) conn(s *proxy.Session) *conn {
	if c, ok := e.conns.Load(s); ok {
		return c.(*conn)
	}
	return nil
}

// SessionStarted implements proxy.SessionHooks: it refuses sessions whose
// startup parameters would make PostgreSQL lex differently from pgmoat, and
// starts tracking the session.
func (e *Enforcer) SessionStarted(s *proxy.Session) error {
	id := rules.Identity{User: s.User(), Database: s.Database(), Application: s.ApplicationName()}
	if host, _, err := net.SplitHostPort(s.ClientAddr()); err == nil {
		if a, err := netip.ParseAddr(host); err == nil {
			id.Client = a.Unmap()
		}
	}
	c := &conn{e: e, ps: s, rs: rules.NewSession(id), started: e.now()}
	c.auditBase = audit.Event{
		SessionID:   sessionID(s),
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
		ev := c.event(audit.SessionEnd)
		ev.EndReason = "lexer_state"
		ev.Error = err.Error()
		e.audit.RecordAsync(ev)
		return proxy.Refuse("42501", "pgmoat refuses this session: "+err.Error(),
			"After it, PostgreSQL would split statements differently from pgmoat's parser, so pgmoat could not check them.")
	}
	if ok {
		c.rs.SetSearchPath(path)
	}
	if e.engine.Policy().ProtectsAnything() {
		c.learn(s, ok)
	}
	e.conns.Store(s, c)
	e.audit.RecordAsync(c.event(audit.SessionStart))
	return nil
}

// SessionEnded implements proxy.SessionHooks.
func (e *Enforcer) SessionEnded(s *proxy.Session, reason string, err error) {
	c := e.conn(s)
	if c == nil {
		return
	}
	e.conns.Delete(s)
	ev := c.event(audit.SessionEnd)
	ev.EndReason = reason
	if err != nil {
		ev.Error = err.Error()
	}
	ev.Duration = e.now().Sub(c.started)
	e.audit.RecordAsync(ev)
}

// Intercept implements proxy.Interceptor.
func (e *Enforcer) Intercept(ctx context.Context, s *proxy.Session, m *proxy.ClientMessage) (proxy.Verdict, error) {
	c := e.conn(s)
	if c == nil {
		// A session the hooks never saw start: nothing is known about
		// it, so nothing of it is trusted.
		return proxy.Verdict{}, errNoSession
	}
	return c.intercept(ctx, m)
}

// TryIntercept implements proxy.TryInterceptor: the statements it allows,
// and the messages that need no decision, are settled in the proxy's event
// loop; the rest go to Intercept.
func (e *Enforcer) TryIntercept(s *proxy.Session, m *proxy.ClientMessage) (proxy.Verdict, bool) {
	c := e.conn(s)
	if c == nil {
		return proxy.Verdict{}, false
	}
	return c.tryIntercept(m)
}

// ServerMessage implements proxy.ReplyObserver.
func (e *Enforcer) ServerMessage(s *proxy.Session, tag any, typ byte, body []byte) error {
	c := e.conn(s)
	if c == nil {
		return nil
	}
	return c.serverMessage(tag, typ, body)
}

func sessionID(s *proxy.Session) string {
	return formatUint(s.ID())
}
