package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pgmoat/pgmoat/config"
	"github.com/pgmoat/pgmoat/internal/moattest"
	"github.com/pgmoat/pgmoat/internal/pgtest"
	"github.com/pgmoat/pgmoat/metrics"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// harnessEventLoops is the limits.event_loops the tests run with: auto,
// or what `make test` sets to run them again with the event loop off.
func harnessEventLoops(t testing.TB) config.EventLoops {
	t.Helper()
	n, err := config.ParseEventLoops(moattest.EventLoops())
	if err != nil {
		t.Fatalf("%s: %v", moattest.EventLoopsEnv, err)
	}
	return n
}

// testProxy is a pgmoat Server running in-process on 127.0.0.1:0 in front
// of the harness's cluster.
type testProxy struct {
	t       testing.TB
	srv     *Server
	cfg     *config.Config
	met     *metrics.Metrics
	reg     *prometheus.Registry
	logs    *syncBuffer
	host    string
	port    int
	served  chan error
	stopped bool
}

// proxyOption changes the configuration of a test proxy before it starts.
type proxyOption func(*config.Config)

// withUpstream points the proxy at the cluster with the given sslmode;
// verify-ca and verify-full use the harness CA.
func withUpstream(c *pgtest.Cluster, sslmode string) proxyOption {
	return func(cfg *config.Config) {
		cfg.Upstream = fmt.Sprintf("postgres://%s?sslmode=%s", c.Addr(), sslmode)
		if strings.HasPrefix(sslmode, "verify") {
			cfg.Upstream += "&sslrootcert=" + url.QueryEscape(c.CAFile)
		}
	}
}

// withClientTLS gives the proxy a client-facing certificate.
func withClientTLS(cert, key string) proxyOption {
	return func(cfg *config.Config) { cfg.TLS.Cert, cfg.TLS.Key = cert, key }
}

func withLimits(f func(*config.Limits)) proxyOption {
	return func(cfg *config.Config) { f(&cfg.Limits) }
}

func startProxy(t testing.TB, opts Options, mods ...proxyOption) *testProxy {
	t.Helper()
	c := pgtest.Get(t)
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.Admin.Listen = ""
	cfg.Limits.EventLoops = harnessEventLoops(t)
	withUpstream(c, "disable")(&cfg)
	for _, m := range mods {
		m(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	p := &testProxy{t: t, cfg: &cfg, reg: prometheus.NewRegistry(), logs: &syncBuffer{}, served: make(chan error, 1)}
	p.met = metrics.New(p.reg)
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(p.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	opts.Metrics = p.met
	srv, err := New(&cfg, opts)
	if err != nil {
		t.Fatalf("proxy.New: %v", err)
	}
	p.srv = srv
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { p.served <- srv.Serve(ln) }()
	addr := ln.Addr().(*net.TCPAddr)
	p.host, p.port = addr.IP.String(), addr.Port
	t.Cleanup(func() {
		if !p.stopped {
			p.shutdown(10 * time.Second)
		}
		if t.Failed() {
			t.Logf("pgmoat log:\n%s", p.logs.String())
		}
	})
	return p
}

// shutdown stops the proxy with the given drain timeout and returns
// Shutdown's error.
func (p *testProxy) shutdown(drain time.Duration) error {
	p.t.Helper()
	p.stopped = true
	ctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	err := p.srv.Shutdown(ctx)
	select {
	case serr := <-p.served:
		if !errors.Is(serr, ErrServerClosed) {
			p.t.Errorf("Serve returned %v, want ErrServerClosed", serr)
		}
	case <-time.After(10 * time.Second):
		p.t.Errorf("Serve did not return after Shutdown")
	}
	return err
}

func (p *testProxy) addr() string { return net.JoinHostPort(p.host, strconv.Itoa(p.port)) }

// connString is a URL for user@db through the proxy.
func (p *testProxy) connString(user, password, db string, params ...string) string {
	return buildConnString(p.addr(), user, password, db, params...)
}

func buildConnString(addr, user, password, db string, params ...string) string {
	u := url.URL{Scheme: "postgres", Host: addr, Path: "/" + db}
	if password != "" {
		u.User = url.UserPassword(user, password)
	} else {
		u.User = url.User(user)
	}
	q := url.Values{}
	for _, kv := range params {
		k, v, _ := strings.Cut(kv, "=")
		q.Add(k, v)
	}
	if q.Get("sslmode") == "" {
		q.Set("sslmode", "disable")
	}
	u.RawQuery = strings.ReplaceAll(q.Encode(), "+", "%20") // pgx does not read + as a space
	return u.String()
}

// superConn connects to db through the proxy as the superuser, without TLS.
func (p *testProxy) superConn(t testing.TB, db string, params ...string) *pgx.Conn {
	t.Helper()
	c := pgtest.Get(t)
	return connect(t, p.connString(c.Superuser, c.SuperPassword, db, params...))
}

func connect(t testing.TB, connString string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, connString)
	if err != nil {
		t.Fatalf("connect %s: %v", redactURL(connString), err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// directConn connects to db directly (not through pgmoat) as the superuser.
func directConn(t testing.TB, db string) *pgx.Conn {
	t.Helper()
	return connect(t, pgtest.Get(t).SuperConnString(db, "sslmode=disable"))
}

func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "<bad url>"
	}
	return u.Redacted()
}

// pgCode returns the SQLSTATE of err, or "".
func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

func ctxTimeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// counter reads a metric value from the proxy's registry.
func (p *testProxy) counter(c prometheus.Collector) float64 { return testutil.ToFloat64(c) }

// eventually polls cond until it holds or timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// syncBuffer is a bytes.Buffer safe for the logger's concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
