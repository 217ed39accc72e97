package admin

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/cookiejar"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgmoat/pgmoat/approvals"
	"github.com/pgmoat/pgmoat/audit"
	"github.com/pgmoat/pgmoat/config"
)

// browser is an HTTP client with a cookie jar, as the console's page has.
type browser struct {
	t    *testing.T
	e    *testEnv
	c    *http.Client
	csrf string
}

func newBrowser(e *testEnv) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: e.t, e: e, c: &http.Client{Jar: jar, Timeout: 10 * time.Second}}
}

func (b *browser) do(method, path, body string, hdr map[string]string) (*http.Response, string) {
	b.t.Helper()
	req, err := http.NewRequest(method, b.e.url+path, strings.NewReader(body))
	if err != nil {
		b.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if b.csrf != "" && method != "GET" {
		req.Header.Set(csrfHeader, b.csrf)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	var sb strings.Builder
	_, _ = bufio.NewReader(resp.Body).WriteTo(&sb)
	return resp, sb.String()
}

func (b *browser) login(secret string) SessionInfo {
	b.t.Helper()
	resp, body := b.do("POST", "/ui/login", `{"token": "`+secret+`"}`, nil)
	if resp.StatusCode != 200 {
		b.t.Fatalf("login: %d %s", resp.StatusCode, body)
	}
	var info SessionInfo
	if err := json.Unmarshal([]byte(body), &info); err != nil {
		b.t.Fatal(err)
	}
	b.csrf = info.CSRF
	return info
}

func TestConsoleSignInAndCookie(t *testing.T) {
	e := newEnv(t, config.Default().Holds, adminConfig(t))
	b := newBrowser(e)
	if resp, body := b.do("POST", "/ui/login", `{"token": "nope-0123456789abcdef"}`, nil); resp.StatusCode != 401 || !strings.Contains(body, "unknown token") {
		t.Fatalf("bad token: %d %s", resp.StatusCode, body)
	}
	resp, body := b.do("POST", "/ui/login", `{"token": "`+aliceSecret+`"}`, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("login: %d %s", resp.StatusCode, body)
	}
	var c *http.Cookie
	for _, ck := range resp.Cookies() {
		if ck.Name == sessionCookie {
			c = ck
		}
	}
	if c == nil || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Secure || c.Path != "/" ||
		strings.Contains(c.Value, aliceSecret) || time.Until(c.Expires) < 7*time.Hour {
		t.Fatalf("session cookie %+v", c)
	}
	var info SessionInfo
	_ = json.Unmarshal([]byte(body), &info)
	if info.Name != "alice" || info.Role != "approver" || info.CSRF == "" {
		t.Fatalf("session %+v", info)
	}
	b.csrf = info.CSRF
	// The cookie works for the API, as alice.
	if resp, body := b.do("GET", "/api/v1/session", "", nil); resp.StatusCode != 200 || !strings.Contains(body, `"name":"alice"`) || !strings.Contains(body, info.CSRF) {
		t.Fatalf("whoami: %d %s", resp.StatusCode, body)
	}
	h := e.hold()
	// A change without the CSRF token, or from another origin, is refused.
	saved := b.csrf
	b.csrf = ""
	if resp, body := b.do("POST", "/api/v1/holds/"+h.ID()+"/approve", `{"reason":"lgtm"}`, nil); resp.StatusCode != 403 || !strings.Contains(body, "CSRF") {
		t.Fatalf("no CSRF token: %d %s", resp.StatusCode, body)
	}
	b.csrf = "forged"
	if resp, _ := b.do("POST", "/api/v1/holds/"+h.ID()+"/approve", `{"reason":"lgtm"}`, nil); resp.StatusCode != 403 {
		t.Fatalf("wrong CSRF token: %d", resp.StatusCode)
	}
	b.csrf = saved
	if resp, body := b.do("POST", "/api/v1/holds/"+h.ID()+"/approve", `{"reason":"lgtm"}`, map[string]string{"Origin": "https://evil.example"}); resp.StatusCode != 403 || !strings.Contains(body, "cross-origin") {
		t.Fatalf("cross-origin: %d %s", resp.StatusCode, body)
	}
	if info, _ := e.store.Get(h.ID()); info.Status != approvals.StatusPending {
		t.Fatalf("hold %s after refused requests", info.Status)
	}
	// With both, alice approves; the approver is the token's name.
	resp, body = b.do("POST", "/api/v1/holds/"+h.ID()+"/approve", `{"reason":"reviewed in the console"}`, map[string]string{"Origin": e.url})
	if resp.StatusCode != 200 {
		t.Fatalf("approve: %d %s", resp.StatusCode, body)
	}
	if info, _ := e.store.Get(h.ID()); info.Status != approvals.StatusApproved || info.Approvals[0].Approver != "alice" {
		t.Fatalf("hold after approval: %+v", info)
	}
	// Sign out ends the session in this browser.
	if resp, _ := b.do("POST", "/ui/logout", `{}`, nil); resp.StatusCode != 200 {
		t.Fatalf("logout: %d", resp.StatusCode)
	}
	if resp, _ := b.do("GET", "/api/v1/holds", "", nil); resp.StatusCode != 401 {
		t.Fatalf("after logout: %d", resp.StatusCode)
	}
}

// A viewer's session can look but not decide, and a rotated token ends
// the sessions made with the old secret.
func TestConsoleViewerAndRotation(t *testing.T) {
	cfg := adminConfig(t)
	e := newEnv(t, config.Default().Holds, cfg)
	v := newBrowser(e)
	if info := v.login(viewSecret); info.Role != "viewer" {
		t.Fatalf("viewer session %+v", info)
	}
	h := e.hold()
	if resp, body := v.do("GET", "/api/v1/holds", "", nil); resp.StatusCode != 200 || !strings.Contains(body, h.ID()) {
		t.Fatalf("viewer list: %d %s", resp.StatusCode, body)
	}
	if resp, body := v.do("POST", "/api/v1/holds/"+h.ID()+"/approve", `{"reason":"lgtm"}`, nil); resp.StatusCode != 403 || !strings.Contains(body, "needs an approver token") {
		t.Fatalf("viewer approve: %d %s", resp.StatusCode, body)
	}
	a := newBrowser(e)
	a.login(aliceSecret)
	t.Setenv("PGMOAT_TEST_ALICE", "alice-rotated-0123456789")
	if err := e.srv.SetConfig(cfg); err != nil {
		t.Fatal(err)
	}
	if resp, body := a.do("GET", "/api/v1/holds", "", nil); resp.StatusCode != 401 || !strings.Contains(body, "sign in again") {
		t.Fatalf("session of a rotated token: %d %s", resp.StatusCode, body)
	}
	// Forged cookies do not pass.
	for _, val := range []string{"alice.9999999999.00.AAAA", "garbage", "alice." + "1.x.y"} {
		req, _ := http.NewRequest("GET", e.url+"/api/v1/holds", nil)
		req.AddCookie(&http.Cookie{Name: sessionCookie, Value: val})
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Errorf("forged cookie %q: %d", val, resp.StatusCode)
		}
	}
}

// The event stream delivers a new hold and its approval as they happen.
func TestConsoleEventStream(t *testing.T) {
	e := newEnv(t, config.Default().Holds, adminConfig(t))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", e.url+"/api/v1/events", nil)
	req.Header.Set("Authorization", "Bearer "+viewSecret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("events: %d %v", resp.StatusCode, resp.Header)
	}
	r := bufio.NewReader(resp.Body)
	next := func() (string, approvals.HoldInfo) {
		t.Helper()
		var ev string
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("reading the stream: %v", err)
			}
			line = strings.TrimRight(line, "\n")
			switch {
			case strings.HasPrefix(line, "event: "):
				ev = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: ") && ev != "":
				var h approvals.HoldInfo
				_ = json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &h)
				return ev, h
			}
		}
	}
	h := e.hold()
	if ev, got := next(); ev != "hold" || got.ID != h.ID() || got.Status != approvals.StatusPending {
		t.Fatalf("first event %s %+v", ev, got)
	}
	if _, err := e.alice.Approve(ctx, h.ID(), "lgtm"); err != nil {
		t.Fatal(err)
	}
	if ev, got := next(); ev != "hold" || got.ID != h.ID() || got.Status != approvals.StatusApproved {
		t.Fatalf("second event %s %+v", ev, got)
	}
}

func TestConsoleFiles(t *testing.T) {
	e := newEnv(t, config.Default().Holds, adminConfig(t))
	for path, ctype := range map[string]string{"/ui/": "text/html", "/ui/console.js": "text/javascript", "/ui/console.css": "text/css"} {
		resp, err := http.Get(e.url + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), ctype) ||
			!strings.Contains(resp.Header.Get("Content-Security-Policy"), "script-src 'self'") || resp.Header.Get("X-Frame-Options") != "DENY" {
			t.Errorf("%s: %d %v", path, resp.StatusCode, resp.Header)
		}
	}
	for _, path := range []string{"/ui/nope.js", "/ui/../server.go", "/ui/.hidden"} {
		resp, err := http.Get(e.url + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 404 {
			t.Errorf("%s: %d", path, resp.StatusCode)
		}
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(e.url + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 302 || resp.Header.Get("Location") != "/ui/" {
		t.Errorf("/: %d %v", resp.StatusCode, resp.Header)
	}
}

func TestAuditTrail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	l, err := audit.Open(config.Audit{Path: path, Statements: "decisions", QueueSize: 16, FlushInterval: config.Duration(time.Millisecond)}, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range []audit.Event{
		{Kind: audit.SessionStart, User: "app"},
		{Kind: audit.Decision, User: "app", Database: "prod", Statement: "DROP TABLE users", Decision: "block", Rule: "default-destructive"},
		{Kind: audit.HoldApproved, User: "deploy", HoldID: "0123456789abcdef", Approvers: []string{"alice"}, ApprovalReason: "PR 12"},
	} {
		if err := l.Record(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	e := newEnv(t, config.Default().Holds, adminConfig(t))
	e.srv.auditPath = path
	list := func(query string) TrailList {
		t.Helper()
		st, _, body := e.raw("GET", "/api/v1/audit"+query, viewSecret, "")
		if st != 200 {
			t.Fatalf("%s: %d %s", query, st, body)
		}
		var out TrailList
		_ = json.Unmarshal([]byte(body), &out)
		return out
	}
	if got := list(""); len(got.Events) != 2 || got.Events[0].Event != "decision" || got.Events[1].Approvers[0] != "alice" {
		t.Errorf("all: %+v", got)
	}
	if got := list("?kind=hold"); len(got.Events) != 1 || got.Events[0].HoldID != "0123456789abcdef" {
		t.Errorf("kind=hold: %+v", got)
	}
	if got := list("?q=USERS"); len(got.Events) != 1 || got.Events[0].Statement != "DROP TABLE users" {
		t.Errorf("q=USERS: %+v", got)
	}
	if st, _, _ := e.raw("GET", "/api/v1/audit?limit=0", viewSecret, ""); st != 400 {
		t.Errorf("limit=0: %d", st)
	}
	e.srv.auditPath = "-"
	if st, _, body := e.raw("GET", "/api/v1/audit", viewSecret, ""); st != 501 || !strings.Contains(body, "stdout") {
		t.Errorf("stdout: %d %s", st, body)
	}
	_ = os.Remove(path)
}
