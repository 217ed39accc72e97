package admin

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pgmoat/pgmoat/approvals"
	"github.com/pgmoat/pgmoat/config"
)

// Options are the Server's dependencies.
type Options struct {
	// Config is the admin section; its tokens' secrets are read by New.
	Config config.Admin
	// Store holds the holds and pre-approvals the API exposes (required).
	Store *approvals.Store
	// Gatherer is exposed on /metrics; nil leaves /metrics out.
	Gatherer prometheus.Gatherer
	// Ready reports whether pgmoat can serve clients (listening, upstream
	// reachable); nil means always ready.
	Ready func(ctx context.Context) error
	// ReadyTimeout bounds one Ready call (default 5s).
	ReadyTimeout time.Duration
	// Reload reloads the configuration file, as SIGHUP does; nil makes
	// POST /api/v1/reload answer 501.
	Reload func() error
	// SessionKey signs console session cookies; instances behind one
	// load balancer must share it. Empty: a random key (sessions end
	// when the process does).
	SessionKey []byte
	// AuditPath is audit.path, which the console's audit trail reads.
	AuditPath string
	// InForce returns the configuration in force, for GET
	// /api/v1/policy; nil makes that endpoint answer 501.
	InForce func() *config.Config
	Logger  *slog.Logger
}

// Server is the admin HTTP server.
type Server struct {
	store        *approvals.Store
	ready        func(context.Context) error
	readyTimeout time.Duration
	reload       func() error
	inForce      func() *config.Config
	log          *slog.Logger
	tokens       atomic.Pointer[[]token]
	mux          *http.ServeMux
	http         *http.Server
	sessionKey   []byte
	sessionTTL   time.Duration
	auditPath    string
	// stopping is closed when Shutdown starts, ending event streams.
	stopping chan struct{}
}

// New builds the server and reads the tokens' secrets. Errors are
// *config.Error values naming the offending token.
func New(opts Options) (*Server, error) {
	if opts.Store == nil {
		return nil, errors.New("admin: Options.Store is required")
	}
	s := &Server{
		store:        opts.Store,
		ready:        opts.Ready,
		readyTimeout: opts.ReadyTimeout,
		reload:       opts.Reload,
		inForce:      opts.InForce,
		log:          opts.Logger,
		mux:          http.NewServeMux(),
		sessionKey:   opts.SessionKey,
		sessionTTL:   opts.Config.SessionTTL.Std(),
		auditPath:    opts.AuditPath,
		stopping:     make(chan struct{}),
	}
	if len(s.sessionKey) == 0 {
		s.sessionKey = make([]byte, 32)
		_, _ = rand.Read(s.sessionKey)
	}
	if s.sessionTTL <= 0 {
		s.sessionTTL = 8 * time.Hour
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.readyTimeout <= 0 {
		s.readyTimeout = 5 * time.Second
	}
	if err := s.SetConfig(opts.Config); err != nil {
		return nil, err
	}

	s.mux.HandleFunc("GET /healthz", s.healthz)
	s.mux.HandleFunc("GET /readyz", s.readyz)
	if opts.Gatherer != nil {
		s.mux.Handle("GET /metrics", promhttp.HandlerFor(opts.Gatherer, promhttp.HandlerOpts{
			ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelError),
		}))
	}
	viewer, approver := config.RoleViewer, config.RoleApprover
	s.mux.Handle("GET /api/v1/holds", s.auth(viewer, s.listHolds))
	s.mux.Handle("GET /api/v1/holds/{id}", s.auth(viewer, s.getHold))
	s.mux.Handle("POST /api/v1/holds/{id}/approve", s.auth(approver, s.approve))
	s.mux.Handle("POST /api/v1/holds/{id}/deny", s.auth(approver, s.denyHold))
	s.mux.Handle("GET /api/v1/preapprovals", s.auth(viewer, s.listPreApprovals))
	s.mux.Handle("POST /api/v1/preapprovals", s.auth(approver, s.preApprove))
	s.mux.Handle("GET /api/v1/preapprovals/{id}", s.auth(viewer, s.getPreApproval))
	s.mux.Handle("DELETE /api/v1/preapprovals/{id}", s.auth(approver, s.revoke))
	s.mux.Handle("POST /api/v1/preapprovals/{id}/revoke", s.auth(approver, s.revoke))
	s.mux.Handle("POST /api/v1/reload", s.auth(approver, s.reloadConfig))
	s.mux.Handle("GET /api/v1/session", s.auth(viewer, s.whoami))
	s.mux.Handle("GET /api/v1/events", s.auth(viewer, s.events))
	s.mux.Handle("GET /api/v1/audit", s.auth(viewer, s.trail))
	s.mux.HandleFunc("GET /{$}", redirectToConsole)
	s.mux.HandleFunc("GET /ui/", s.console)
	s.mux.HandleFunc("POST /ui/login", s.login)
	s.mux.Handle("POST /ui/logout", s.auth(viewer, s.logout))
	s.mux.Handle("GET /api/v1/policy", s.auth(viewer, s.policy))

	s.http = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		WriteTimeout:      time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	s.http.RegisterOnShutdown(func() { close(s.stopping) })
	return s, nil
}

// SetConfig applies a reloaded admin section: the tokens' secrets are read
// again. On error the tokens in force stay unchanged. A changed
// admin.listen needs a restart.
func (s *Server) SetConfig(cfg config.Admin) error {
	toks, err := loadTokens(cfg)
	if err != nil {
		return err
	}
	s.tokens.Store(&toks)
	return nil
}

// Serve accepts connections on ln until Shutdown; it then returns nil.
func (s *Server) Serve(ln net.Listener) error {
	s.log.Info("admin listener started", "addr", ln.Addr().String())
	if err := s.http.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// ServeTLS is Serve over TLS with the certificate and key files
// (admin.tls.cert, admin.tls.key).
func (s *Server) ServeTLS(ln net.Listener, certFile, keyFile string) error {
	s.log.Info("admin listener started", "addr", ln.Addr().String(), "tls", true)
	if err := s.http.ServeTLS(ln, certFile, keyFile); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Shutdown stops accepting connections and waits for requests in progress
// until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	return s.http.Shutdown(ctx)
}

// ServeHTTP routes r; requests no route takes get a JSON 404 or 405
// instead of net/http's plain-text ones.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h, pattern := s.mux.Handler(r); pattern == "" {
		rec := &statusRecorder{header: http.Header{}}
		h.ServeHTTP(rec, r)
		if rec.status == http.StatusMethodNotAllowed {
			w.Header().Set("Allow", rec.header.Get("Allow"))
			writeError(w, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed on "+r.URL.Path+" (allowed: "+rec.header.Get("Allow")+")")
			return
		}
		writeError(w, http.StatusNotFound, "no such endpoint: "+r.Method+" "+r.URL.Path)
		return
	}
	s.mux.ServeHTTP(w, r)
}

// statusRecorder captures what net/http's fallback handlers would answer.
type statusRecorder struct {
	header http.Header
	status int
}

func (r *statusRecorder) Header() http.Header         { return r.header }
func (r *statusRecorder) Write(b []byte) (int, error) { return len(b), nil }
func (r *statusRecorder) WriteHeader(status int)      { r.status = status }

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("ok\n"))
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if s.ready != nil {
		ctx, cancel := context.WithTimeout(r.Context(), s.readyTimeout)
		defer cancel()
		if err := s.ready(ctx); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "error": err.Error()})
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}
