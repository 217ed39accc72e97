package e2e

import (
	"encoding/json"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgmoat/pgmoat/internal/moattest"
	"github.com/pgmoat/pgmoat/internal/pgtest"
)

// TestHealthEndpoints checks /healthz and /readyz as a load balancer or
// Kubernetes sees them while pgmoat's upstream goes away and comes back.
func TestHealthEndpoints(t *testing.T) {
	c := pgtest.Get(t)
	up := newFlakyUpstream(t, c)
	m := moattest.Start(t, c, moattest.Options{Upstream: up.url(), Config: "policy:\n  protect: [public.users]\n"})

	if code, body := httpGet(t, m.AdminURL+"/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz = %d %q, want 200 ok", code, body)
	}
	if code, r := readyz(t, m); code != 200 || r.Status != "ready" {
		t.Errorf("/readyz with the upstream up = %d %+v, want 200 ready", code, r)
	}
	conn := connect(t, m.SuperConnString("postgres"))
	mustExec(t, conn, "SELECT 1")

	up.close()
	code, r := readyz(t, m)
	if code != 503 || r.Status != "not ready" || !strings.Contains(r.Error, up.addr) || !strings.Contains(r.Error, "connection refused") {
		t.Errorf("/readyz with the upstream port closed = %d %+v, want 503 naming %s and the refusal", code, r, up.addr)
	}
	if code, _ := httpGet(t, m.AdminURL+"/healthz"); code != 200 {
		t.Errorf("/healthz with the upstream down = %d, want 200: the process is up", code)
	}

	up.open()
	if code, r := readyz(t, m); code != 200 {
		t.Errorf("/readyz after the upstream came back = %d %+v", code, r)
	}
}

// TestServeStartLine checks the one line `pgmoat serve` logs at start:
// version, listen addresses, upstream and a summary of the policy. A
// reload does not log it again.
func TestServeStartLine(t *testing.T) {
	c := pgtest.Get(t)
	m := moattest.Start(t, c, moattest.Options{Config: `policy:
  protect: [public.users, billing.*]
  rules:
    - name: deployer-needs-approval
      match:
        applications: [deployer]
      operations: [destructive]
      action: hold
`})
	m.Reload()
	var starts []string
	for _, line := range strings.Split(m.Log(), "\n") {
		if strings.Contains(line, "pgmoat started") {
			starts = append(starts, line)
		}
	}
	if len(starts) != 1 {
		t.Fatalf("%d start lines, want 1:\n%s", len(starts), m.Log())
	}
	line := starts[0]
	for _, want := range []string{
		"level=INFO",
		"version=dev",
		"listen=" + m.Addr,
		"admin=" + strings.TrimPrefix(m.AdminURL, "http://"),
		"upstream=" + c.Addr(),
		"public.users",
		"billing.*",
		"1 rule",
	} {
		if !strings.Contains(line, want) {
			t.Errorf("start line lacks %q:\n%s", want, line)
		}
	}
}

type readyBody struct {
	Status string `json:"status"`
	Error  string `json:"error"`
}

func readyz(t *testing.T, m *moattest.Moat) (int, readyBody) {
	t.Helper()
	code, body := httpGet(t, m.AdminURL+"/readyz")
	var r readyBody
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatalf("/readyz body is not JSON: %q", body)
	}
	return code, r
}

// flakyUpstream is a TCP relay to the harness's PostgreSQL whose port a
// test can close and open again: an upstream that goes away.
type flakyUpstream struct {
	t      *testing.T
	target string
	addr   string

	mu    sync.Mutex
	ln    net.Listener
	conns []net.Conn
}

func newFlakyUpstream(t *testing.T, c *pgtest.Cluster) *flakyUpstream {
	u := &flakyUpstream{t: t, target: c.Addr()}
	u.open()
	u.addr = u.ln.Addr().String()
	t.Cleanup(u.close)
	return u
}

func (u *flakyUpstream) url() string { return "postgres://" + u.addr + "?sslmode=disable" }

// open listens (again) on the relay's port.
func (u *flakyUpstream) open() {
	u.t.Helper()
	addr := u.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var ln net.Listener
	var err error
	// The closed port may linger briefly; it is ours to take again.
	moattest.WaitFor(u.t, 10*time.Second, "listening on "+addr, func() bool {
		ln, err = net.Listen("tcp", addr)
		return err == nil
	})
	u.mu.Lock()
	u.ln = ln
	u.mu.Unlock()
	go u.accept(ln)
}

func (u *flakyUpstream) accept(ln net.Listener) {
	for {
		cc, err := ln.Accept()
		if err != nil {
			return
		}
		sc, err := net.Dial("tcp", u.target)
		if err != nil {
			cc.Close()
			continue
		}
		u.mu.Lock()
		u.conns = append(u.conns, cc, sc)
		u.mu.Unlock()
		go func() { io.Copy(sc, cc); sc.Close() }()
		go func() { io.Copy(cc, sc); cc.Close() }()
	}
}

// close closes the port and every relayed connection.
func (u *flakyUpstream) close() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.ln != nil {
		u.ln.Close()
		u.ln = nil
	}
	for _, c := range u.conns {
		c.Close()
	}
	u.conns = nil
}
