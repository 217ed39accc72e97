package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pgmoat/pgmoat/config"
	"github.com/pgmoat/pgmoat/metrics"
)

// Options are the Server's dependencies beyond its configuration.
type Options struct {
	// Logger receives one info line per connection end and warnings; nil
	// discards them.
	Logger *slog.Logger
	// Metrics is updated with connection and byte counts; nil uses an
	// unregistered set.
	Metrics *metrics.Metrics
	// Interceptor, when set, sees every client message of every session
	// before it is forwarded (see Interceptor). nil relays everything.
	Interceptor Interceptor
}

// Server accepts PostgreSQL clients and relays each to the upstream server.
type Server struct {
	cfg       *config.Config
	log       *slog.Logger
	met       *metrics.Metrics
	clientTLS *tls.Config // nil: SSLRequest is answered 'N'
	ownCert   []byte      // DER of the leaf certificate clients see
	upstream  *upstreamDialer
	icpt      Interceptor
	loops     *eventLoops    // limits.event_loops
	budget    *messageBudget // limits.message_memory

	nextID atomic.Uint64
	wg     sync.WaitGroup // one per accepted connection

	mu       sync.Mutex
	ln       net.Listener
	addr     net.Addr
	draining bool
	conns    map[*ClientSession]struct{}
	admitted int                          // sessions counted against limits.max_connections
	keys     map[cancelKey]*ClientSession // sessions by their server's BackendKeyData
	idle     chan struct{}                // closed when draining and conns is empty
}

// New validates cfg's proxy settings and loads the client-facing
// certificate. cfg must have passed config.Validate (config.Load does it).
func New(cfg *config.Config, opts Options) (*Server, error) {
	if cfg == nil {
		return nil, errors.New("proxy: nil config")
	}
	if cfg.UpstreamURL.Host == "" {
		return nil, errors.New("proxy: config not validated: upstream has no host")
	}
	if cfg.Limits.MaxConnections < 1 || cfg.Limits.StartupTimeout <= 0 ||
		cfg.Limits.ConnectTimeout <= 0 || cfg.Limits.MaxMessageSize < 1024 || cfg.Limits.DrainTimeout <= 0 ||
		cfg.Limits.EventLoops < config.EventLoopsAuto || cfg.Limits.MessageMemory < cfg.Limits.MaxMessageSize {
		return nil, errors.New("proxy: config not validated: limits out of range")
	}
	s := &Server{
		cfg:   cfg,
		log:   opts.Logger,
		met:   opts.Metrics,
		icpt:  opts.Interceptor,
		conns: make(map[*ClientSession]struct{}),
		keys:  make(map[cancelKey]*ClientSession),
		idle:  make(chan struct{}),
	}
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s.loops = newEventLoops(cfg.Limits.EventLoops, s.log)
	if s.met == nil {
		s.met = metrics.New(nil)
	}
	s.budget = newMessageBudget(int64(cfg.Limits.MessageMemory), s.met.MessageMemory, s.met.MessageMemoryWaits)
	if cfg.TLS.Enabled() {
		cert, err := tls.LoadX509KeyPair(cfg.TLS.Cert, cfg.TLS.Key)
		if err != nil {
			return nil, &config.Error{File: cfg.File, Key: "tls", Err: err}
		}
		s.clientTLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{alpnPostgres}}
		s.ownCert = cert.Certificate[0]
	}
	up, err := newUpstreamDialer(cfg.UpstreamURL, cfg.Limits.ConnectTimeout.Std())
	if err != nil {
		return nil, &config.Error{File: cfg.File, Key: "upstream", Err: err}
	}
	s.upstream = up
	return s, nil
}

// ListenAndServe listens on the configured address and serves clients.
func (s *Server) ListenAndServe() error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	return s.Serve(ln)
}

// Serve accepts clients on ln until Shutdown, then returns ErrServerClosed.
// It takes ownership of ln. A Server serves one listener.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	switch {
	case s.draining:
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	case s.ln != nil:
		s.mu.Unlock()
		return errors.New("proxy: Serve called twice")
	}
	s.ln, s.addr = ln, ln.Addr()
	s.mu.Unlock()

	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.isDraining() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				// Out of file descriptors and the like: back off as
				// net/http does rather than spin or die.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("accept failed; retrying", "err", err, "backoff", backoff)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("proxy: accept: %w", err)
		}
		backoff = 0
		s.met.ClientConnectionsTotal.Inc()
		sess := s.newSession(c)
		if sess == nil {
			continue // draining: closed already
		}
		go sess.serve()
	}
}

// Addr returns the listening address, or nil before Serve.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Shutdown stops accepting clients and waits for the open sessions to end.
// When ctx is done first (the lead derives it from limits.drain_timeout),
// the remaining sessions are closed with FATAL 57P01, Shutdown waits for
// them to be torn down and returns an error wrapping ctx.Err(). Sessions
// that are still in startup are closed the same way.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if !s.draining {
		s.draining = true
		if s.ln != nil {
			s.ln.Close()
		}
		if len(s.conns) == 0 {
			close(s.idle)
		}
	}
	s.mu.Unlock()

	select {
	case <-s.idle:
		s.wg.Wait()
		s.loops.stop()
		return nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	left := make([]*ClientSession, 0, len(s.conns))
	for sess := range s.conns {
		left = append(left, sess)
	}
	s.mu.Unlock()
	for _, sess := range left {
		sess.kill(errShutdown)
	}
	s.wg.Wait()
	s.loops.stop()
	return fmt.Errorf("proxy: drain timeout expired, closed %d connections: %w", len(left), ctx.Err())
}

// CheckUpstream dials the upstream server (TCP only, bounded by
// limits.connect_timeout) and reports whether it accepts connections.
func (s *Server) CheckUpstream(ctx context.Context) error {
	d := net.Dialer{Timeout: s.cfg.Limits.ConnectTimeout.Std()}
	c, err := d.DialContext(ctx, "tcp", s.cfg.UpstreamURL.Addr())
	if err != nil {
		return fmt.Errorf("proxy: upstream %s: %w", s.cfg.UpstreamURL.Addr(), err)
	}
	return c.Close()
}

func (s *Server) isDraining() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.draining
}

// newSession registers a freshly accepted connection, or closes it and
// returns nil when the server is draining.
func (s *Server) newSession(c net.Conn) *ClientSession {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		c.Close()
		s.met.ClientConnectionsRejected.WithLabelValues("draining").Inc()
		return nil
	}
	sess := newSession(s, c)
	s.conns[sess] = struct{}{}
	s.wg.Add(1)
	return sess
}

// admit counts an authenticated-to-be session against max_connections.
func (s *Server) admit() (ok bool, reason EndReason) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.draining:
		return false, EndDraining
	case s.admitted >= s.cfg.Limits.MaxConnections:
		return false, EndTooManyConnections
	}
	s.admitted++
	s.met.ClientConnectionsOpen.Inc()
	return true, ""
}

// forget removes a finished connection from the server's books.
func (s *Server) forget(sess *ClientSession, admitted bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, sess)
	if sess.keyed {
		if s.keys[sess.key] == sess {
			delete(s.keys, sess.key)
		}
	}
	if admitted {
		s.admitted--
		s.met.ClientConnectionsOpen.Dec()
	}
	if s.draining && len(s.conns) == 0 {
		select {
		case <-s.idle:
		default:
			close(s.idle)
		}
	}
}
