package moattest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pgmoat/pgmoat/internal/pgtest"
)

// Tokens the started pgmoat accepts (admin.tokens).
const (
	ApproverToken  = "approver-token-0123456789abcdef"
	Approver2Token = "approver2-token-0123456789abcdef"
	ViewerToken    = "viewer-token-0123456789abcdef"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// Binary builds pgmoat once per test process and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..")
		dir, err := os.MkdirTemp("", "pgmoat-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "pgmoat")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/pgmoat")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// EventLoopsEnv names the environment variable with which `make test`
// runs the proxy and end-to-end tests a second time with the event loop
// off, so that the goroutine relay stays tested for every kind of
// session. The harnesses (Start, and the proxy package's own) put its
// value in limits.event_loops; pgmoat itself never reads it.
const EventLoopsEnv = "PGMOAT_EVENT_LOOPS"

// EventLoops returns the limits.event_loops the harnesses configure: the
// value of EventLoopsEnv, or auto when it is not set.
func EventLoops() string {
	if v := os.Getenv(EventLoopsEnv); v != "" {
		return v
	}
	return "auto"
}

// Options configure a started pgmoat.
type Options struct {
	// Config is YAML appended to the generated configuration (listen,
	// upstream, limits.event_loops, admin.listen/tokens, audit and log are
	// set for you; keys given here must not repeat them). Typically policy
	// and holds.
	Config string
	// Upstream overrides the upstream URL (default: the harness cluster,
	// sslmode=disable).
	Upstream string
	// AuditStatements sets audit.statements (default decisions).
	AuditStatements string
	// Limits are more keys of the limits section, "key: value" each (e.g.
	// "analysis_statements: 1000").
	Limits []string
}

// Moat is a running pgmoat.
type Moat struct {
	t          testing.TB
	cmd        *exec.Cmd
	Dir        string
	ConfigPath string
	Addr       string // client-facing host:port
	AdminURL   string // http://host:port
	AuditPath  string
	log        *syncBuffer
	done       chan struct{}
	exitErr    error
	cluster    *pgtest.Cluster
}

// Start writes a configuration and starts `pgmoat serve`; it is stopped
// (SIGTERM) at test cleanup.
func Start(t testing.TB, c *pgtest.Cluster, o Options) *Moat {
	t.Helper()
	bin := Binary(t)
	for try := 1; ; try++ {
		m := launch(t, bin, c, o)
		err := m.waitReady()
		if err == nil {
			t.Cleanup(func() {
				m.Stop()
				if t.Failed() {
					t.Logf("pgmoat output:\n%s", m.Log())
				}
			})
			return m
		}
		m.Stop()
		if try < portTries && strings.Contains(m.Log(), "address already in use") {
			t.Logf("a port picked for pgmoat was taken before it listened (try %d); picking others", try)
			continue
		}
		t.Fatalf("%v\n%s", err, m.Log())
	}
}

// portTries is how many times Start picks new ports for a pgmoat that
// found one taken: freeAddr's port is free when picked, but until pgmoat
// listens on it anything may take it (another test's server, or the
// ephemeral port of an outgoing connection, which comes from the same
// range).
const portTries = 5

// launch writes a configuration with newly picked ports and starts
// `pgmoat serve` with it.
func launch(t testing.TB, bin string, c *pgtest.Cluster, o Options) *Moat {
	t.Helper()
	dir := t.TempDir()
	m := &Moat{t: t, Dir: dir, cluster: c, log: &syncBuffer{}, done: make(chan struct{})}
	m.Addr = freeAddr(t)
	adminAddr := freeAddr(t)
	m.AdminURL = "http://" + adminAddr
	m.AuditPath = filepath.Join(dir, "audit.jsonl")
	up := o.Upstream
	if up == "" {
		up = fmt.Sprintf("postgres://%s?sslmode=disable", c.Addr())
	}
	limits := ""
	for _, l := range o.Limits {
		limits += "\n  " + l
	}
	stmts := o.AuditStatements
	if stmts == "" {
		stmts = "decisions"
	}
	cfg := fmt.Sprintf(`listen: %s
upstream: %s
limits:
  event_loops: %s%s
admin:
  listen: %s
  tokens:
    - {name: alice, role: approver, token_env: MOATTEST_APPROVER}
    - {name: bob, role: approver, token_env: MOATTEST_APPROVER2}
    - {name: grafana, role: viewer, token_env: MOATTEST_VIEWER}
audit:
  path: %s
  statements: %s
  flush_interval: 20ms
log:
  level: debug
%s`, m.Addr, up, EventLoops(), limits, adminAddr, m.AuditPath, stmts, o.Config)
	m.ConfigPath = filepath.Join(dir, "pgmoat.yaml")
	if err := os.WriteFile(m.ConfigPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	m.cmd = exec.Command(bin, "serve", "--config", m.ConfigPath)
	m.cmd.Env = append(os.Environ(),
		"MOATTEST_APPROVER="+ApproverToken,
		"MOATTEST_APPROVER2="+Approver2Token,
		"MOATTEST_VIEWER="+ViewerToken)
	m.cmd.Stdout = m.log
	m.cmd.Stderr = m.log
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		m.exitErr = m.cmd.Wait()
		close(m.done)
	}()
	return m
}

// waitReady waits until pgmoat answers /readyz, and says why not when it
// exits first or takes longer than 30 seconds.
func (m *Moat) waitReady() error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-m.done:
			return fmt.Errorf("pgmoat exited during start: %v", m.exitErr)
		default:
		}
		resp, err := http.Get(m.AdminURL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("pgmoat not ready after 30s")
}

// ConnString returns a URL for connecting through pgmoat.
func (m *Moat) ConnString(user, password, db string, params ...string) string {
	q := append([]string{"sslmode=disable"}, params...)
	auth := user
	if password != "" {
		auth += ":" + password
	}
	return fmt.Sprintf("postgres://%s@%s/%s?%s", auth, m.Addr, db, strings.Join(q, "&"))
}

// SuperConnString connects through pgmoat as the cluster's superuser.
func (m *Moat) SuperConnString(db string, params ...string) string {
	return m.ConnString(m.cluster.Superuser, m.cluster.SuperPassword, db, params...)
}

// Signal sends sig to pgmoat.
func (m *Moat) Signal(sig os.Signal) {
	m.t.Helper()
	if err := m.cmd.Process.Signal(sig); err != nil {
		m.t.Fatal(err)
	}
}

// Reload sends SIGHUP and waits until pgmoat has logged the reload's
// outcome (success or failure).
func (m *Moat) Reload() {
	m.t.Helper()
	before := strings.Count(m.Log(), "configuration reload")
	m.Signal(syscall.SIGHUP)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if strings.Count(m.Log(), "configuration reload") > before {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	m.t.Fatalf("no reload logged\n%s", m.Log())
}

// Stop sends SIGTERM and waits for pgmoat to exit.
func (m *Moat) Stop() error {
	select {
	case <-m.done:
		return m.exitErr
	default:
	}
	m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
	case <-time.After(60 * time.Second):
		m.cmd.Process.Kill()
		<-m.done
	}
	return m.exitErr
}

// PID is the pgmoat process's id, to read its /proc entries.
func (m *Moat) PID() int { return m.cmd.Process.Pid }

// Done is closed when pgmoat has exited.
func (m *Moat) Done() <-chan struct{} { return m.done }

// Log returns everything pgmoat printed so far.
func (m *Moat) Log() string { return m.log.String() }

// Metrics returns the /metrics page.
func (m *Moat) Metrics(t testing.TB) string {
	t.Helper()
	resp, err := http.Get(m.AdminURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	return b.String()
}

// WaitFor polls cond every 20ms until it holds or timeout passes.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// syncBuffer is a bytes.Buffer safe for the child's two output pipes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
