package admin

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgmoat/pgmoat/approvals"
	"github.com/pgmoat/pgmoat/config"
	"github.com/pgmoat/pgmoat/metrics"
)

const (
	aliceSecret = "alice-0123456789abcdef"
	bobSecret   = "bob-0123456789abcdef"
	viewSecret  = "viewer-0123456789abcdef"
)

type testEnv struct {
	t        *testing.T
	store    *approvals.Store
	srv      *Server
	url      string
	alice    *Client // approver, token from env
	bob      *Client // approver, token from a file
	viewer   *Client
	anon     *Client
	readyErr error
	reloads  int
	reloadFn func() error
	inForce  *config.Config

	mu     sync.Mutex
	refuse approvals.EventType
	events []approvals.Event
}

// adminConfig configures alice and the viewer through environment
// variables and bob through a file with surrounding whitespace.
func adminConfig(t *testing.T) config.Admin {
	t.Setenv("PGMOAT_TEST_ALICE", aliceSecret)
	t.Setenv("PGMOAT_TEST_VIEWER", "  "+viewSecret+"\n")
	file := filepath.Join(t.TempDir(), "bob.token")
	if err := os.WriteFile(file, []byte("\n "+bobSecret+" \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return config.Admin{Tokens: []config.Token{
		{Name: "alice", Role: config.RoleApprover, TokenEnv: "PGMOAT_TEST_ALICE"},
		{Name: "bob", Role: config.RoleApprover, TokenFile: file},
		{Name: "dashboard", Role: config.RoleViewer, TokenEnv: "PGMOAT_TEST_VIEWER"},
	}}
}

func newEnv(t *testing.T, holds config.Holds, admin config.Admin) *testEnv {
	t.Helper()
	e := &testEnv{t: t}
	reg := prometheus.NewRegistry()
	e.store = approvals.New(holds, approvals.Options{Metrics: metrics.New(reg), OnEvent: e.onEvent})
	srv, err := New(Options{
		Config:   admin,
		Store:    e.store,
		Gatherer: reg,
		Ready:    func(context.Context) error { return e.readyErr },
		InForce:  func() *config.Config { return e.inForce },
		Reload: func() error {
			e.reloads++
			if e.reloadFn != nil {
				return e.reloadFn()
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	e.srv = srv
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		if err := srv.Shutdown(context.Background()); err != nil {
			t.Error(err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
		e.store.Close()
	})
	e.url = "http://" + ln.Addr().String()
	e.alice = &Client{BaseURL: e.url, Token: aliceSecret}
	e.bob = &Client{BaseURL: e.url + "/", Token: bobSecret}
	e.viewer = &Client{BaseURL: e.url, Token: viewSecret}
	e.anon = &Client{BaseURL: e.url}
	return e
}

func (e *testEnv) onEvent(ev approvals.Event) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if ev.Type == e.refuse {
		return errors.New("audit log: no space left on device")
	}
	e.events = append(e.events, ev)
	return nil
}

func (e *testEnv) hold() *approvals.Hold {
	e.t.Helper()
	h, err := e.store.Create(approvals.Request{
		Statement:   "DROP TABLE billing.invoices",
		User:        "app",
		Database:    "prod",
		Application: "psql",
		Client:      "10.1.2.3:5555",
		Rule:        "protect-billing",
		Reason:      "DROP TABLE on protected table billing.invoices.",
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return h
}

// raw sends a request with an optional bearer token and returns status,
// headers and body.
func (e *testEnv) raw(method, path, token, body string) (int, http.Header, string) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.url+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

func wantAPIError(t *testing.T, err error, status int, contains string) {
	t.Helper()
	var ae *APIError
	if !errors.As(err, &ae) {
		t.Fatalf("error %v (%T), want an APIError with status %d", err, err, status)
	}
	if ae.StatusCode != status || !strings.Contains(ae.Message, contains) {
		t.Fatalf("APIError %d %q, want %d containing %q", ae.StatusCode, ae.Message, status, contains)
	}
}

func jsonError(t *testing.T, body string) string {
	t.Helper()
	var e ErrorBody
	if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error == "" {
		t.Fatalf("body %q is not a JSON error", body)
	}
	return e.Error
}

func TestHealthReadyMetricsNeedNoToken(t *testing.T) {
	e := newEnv(t, config.Default().Holds, adminConfig(t))
	if st, _, body := e.raw("GET", "/healthz", "", ""); st != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q", st, body)
	}
	if st, _, body := e.raw("GET", "/readyz", "", ""); st != 200 || !strings.Contains(body, `"status":"ready"`) {
		t.Errorf("/readyz: %d %q", st, body)
	}
	e.readyErr = errors.New("upstream 127.0.0.1:5432: connection refused")
	st, hdr, body := e.raw("GET", "/readyz", "", "")
	if st != 503 || hdr.Get("Content-Type") != "application/json" || jsonError(t, body) != e.readyErr.Error() {
		t.Errorf("/readyz when not ready: %d %q", st, body)
	}

	e.hold()
	st, _, body = e.raw("GET", "/metrics", "", "")
	if st != 200 || !strings.Contains(body, "\npgmoat_holds_pending 1\n") {
		t.Errorf("/metrics: %d, holds pending not 1 in:\n%s", st, body)
	}
	if strings.Contains(body, "DROP TABLE") {
		t.Error("/metrics reveals statement text")
	}
}

func TestAuthentication(t *testing.T) {
	e := newEnv(t, config.Default().Holds, adminConfig(t))
	h := e.hold()

	st, hdr, body := e.raw("GET", "/api/v1/holds", "", "")
	if st != 401 || !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Bearer") || !strings.Contains(jsonError(t, body), "missing bearer token") {
		t.Errorf("no token: %d %v %q", st, hdr, body)
	}
	st, hdr, body = e.raw("GET", "/api/v1/holds", aliceSecret+"x", "")
	if st != 401 || !strings.Contains(hdr.Get("WWW-Authenticate"), "invalid_token") || jsonError(t, body) != "invalid token" {
		t.Errorf("bad token: %d %v %q", st, hdr, body)
	}
	if st, _, _ := e.raw("GET", "/api/v1/holds", "", "Basic YWxpY2U6eA=="); st != 401 {
		t.Errorf("basic auth: %d", st)
	}
	_, err := e.anon.ListHolds(t.Context())
	wantAPIError(t, err, 401, "missing bearer token")

	// A viewer may look but not decide.
	list, err := e.viewer.ListHolds(t.Context())
	if err != nil || len(list) != 1 || list[0].ID != h.ID() {
		t.Fatalf("viewer list: %+v, %v", list, err)
	}
	_, err = e.viewer.Approve(t.Context(), h.ID(), "lgtm")
	wantAPIError(t, err, 403, `token "dashboard" has role viewer`)
	_, err = e.viewer.Deny(t.Context(), h.ID(), "no")
	wantAPIError(t, err, 403, "approver token")
	_, err = e.viewer.PreApprove(t.Context(), PreApproveRequest{SQL: "DROP TABLE t", TTL: time.Hour, Reason: "r"})
	wantAPIError(t, err, 403, "approver token")
	wantAPIError(t, e.viewer.Reload(t.Context()), 403, "approver token")
	if info, _ := e.store.Get(h.ID()); info.Status != approvals.StatusPending {
		t.Errorf("hold %s after viewer attempts", info.Status)
	}

	// The token from a file, surrounded by whitespace, works.
	if _, err := e.bob.GetHold(t.Context(), h.ID()); err != nil {
		t.Errorf("bob: %v", err)
	}
	// The scheme is case-insensitive.
	req, _ := http.NewRequest("GET", e.url+"/api/v1/holds", nil)
	req.Header.Set("Authorization", "bearer "+viewSecret)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Errorf("lowercase scheme: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
}

func TestApproveAndDenyThroughClient(t *testing.T) {
	e := newEnv(t, config.Default().Holds, adminConfig(t))
	h := e.hold()
	out := make(chan approvals.Outcome, 1)
	go func() { out <- e.store.Wait(context.Background(), h) }()

	info, err := e.alice.Approve(t.Context(), h.ID(), "reviewed in PR 1234")
	if err != nil {
		t.Fatal(err)
	}
	if info.Status != approvals.StatusApproved || len(info.Approvals) != 1 ||
		info.Approvals[0].Approver != "alice" || info.Approvals[0].Reason != "reviewed in PR 1234" {
		t.Errorf("Approve = %+v", info)
	}
	if o := <-out; o.Status != approvals.StatusApproved || !slices.Equal(o.Approvers(), []string{"alice"}) {
		t.Errorf("outcome %+v", o)
	}
	_, err = e.bob.Approve(t.Context(), h.ID(), "me too")
	wantAPIError(t, err, 409, "no longer pending")
	_, err = e.bob.Deny(t.Context(), h.ID(), "too late")
	wantAPIError(t, err, 409, "was approved by alice")

	h2 := e.hold()
	_, err = e.bob.Deny(t.Context(), h2.ID(), "")
	wantAPIError(t, err, 400, "reason is required")
	_, err = e.bob.Approve(t.Context(), h2.ID(), "  ")
	wantAPIError(t, err, 400, "reason is required")
	info, err = e.bob.Deny(t.Context(), h2.ID(), "not during business hours")
	if err != nil || info.Status != approvals.StatusDenied || info.ResolvedBy != "bob" || info.Resolution != "not during business hours" {
		t.Errorf("Deny = %+v, %v", info, err)
	}
	if o := e.store.Wait(context.Background(), h2); o.Status != approvals.StatusDenied || o.By != "bob" {
		t.Errorf("outcome %+v", o)
	}

	_, err = e.alice.Approve(t.Context(), "0123456789abcdef", "lgtm")
	wantAPIError(t, err, 404, "not found")
	_, err = e.alice.GetHold(t.Context(), "nope")
	wantAPIError(t, err, 404, "not found")
}

func TestRequestBodies(t *testing.T) {
	e := newEnv(t, config.Default().Holds, adminConfig(t))
	h := e.hold()
	path := "/api/v1/holds/" + h.ID() + "/approve"
	for _, tc := range []struct{ body, want string }{
		{"", "must be a JSON object"},
		{"{", "bad JSON"},
		{`"lgtm"`, "bad JSON"},
		{`{"reason": "lgtm", "approver": "mallory"}`, `unknown field "approver"`},
		{`{"reson": "lgtm"}`, `unknown field "reson"`},
		{`{"reason": "lgtm"} {}`, "unexpected data"},
		{`{}`, "reason is required"},
	} {
		st, hdr, body := e.raw("POST", path, aliceSecret, tc.body)
		if st != 400 || hdr.Get("Content-Type") != "application/json" || !strings.Contains(jsonError(t, body), tc.want) {
			t.Errorf("body %q: %d %q, want 400 with %q", tc.body, st, body, tc.want)
		}
	}
	if info, _ := e.store.Get(h.ID()); info.Status != approvals.StatusPending {
		t.Errorf("hold %s after bad requests", info.Status)
	}
	big := `{"reason": "` + strings.Repeat("x", maxReasonBody) + `"}`
	if st, _, body := e.raw("POST", path, aliceSecret, big); st != 413 {
		t.Errorf("huge body: %d %q", st, body)
	}
}

func TestTwoApprovalsRequired(t *testing.T) {
	holds := config.Default().Holds
	holds.ApprovalsRequired = 2
	e := newEnv(t, holds, adminConfig(t))
	h := e.hold()

	info, err := e.alice.Approve(t.Context(), h.ID(), "lgtm")
	if err != nil || info.Status != approvals.StatusPending || info.ApprovalsRequired != 2 || len(info.Approvals) != 1 {
		t.Fatalf("first approval: %+v, %v", info, err)
	}
	_, err = e.alice.Approve(t.Context(), h.ID(), "really")
	wantAPIError(t, err, 409, "already approved by alice")
	info, err = e.bob.Approve(t.Context(), h.ID(), "second look")
	if err != nil || info.Status != approvals.StatusApproved {
		t.Fatalf("second approval: %+v, %v", info, err)
	}
	if o := e.store.Wait(context.Background(), h); !slices.Equal(o.Approvers(), []string{"alice", "bob"}) {
		t.Errorf("outcome %+v", o)
	}
}

func TestApprovalRefusedByAuditLogIs503(t *testing.T) {
	e := newEnv(t, config.Default().Holds, adminConfig(t))
	h := e.hold()
	e.mu.Lock()
	e.refuse = approvals.EventHoldApproved
	e.mu.Unlock()
	_, err := e.alice.Approve(t.Context(), h.ID(), "lgtm")
	wantAPIError(t, err, 503, "audit log")
	if info, _ := e.store.Get(h.ID()); info.Status != approvals.StatusPending {
		t.Errorf("hold %s after refused approval", info.Status)
	}
}

func TestHoldJSONShape(t *testing.T) {
	e := newEnv(t, config.Default().Holds, adminConfig(t))
	h := e.hold()
	st, _, body := e.raw("GET", "/api/v1/holds/"+h.ID(), viewSecret, "")
	if st != 200 {
		t.Fatalf("%d %s", st, body)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"id": h.ID(), "status": "pending", "statement": "DROP TABLE billing.invoices",
		"user": "app", "database": "prod", "application": "psql", "client": "10.1.2.3:5555",
		"rule": "protect-billing", "reason": "DROP TABLE on protected table billing.invoices.",
		"approvals_required": float64(1),
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %#v, want %#v", k, m[k], v)
		}
	}
	if a, ok := m["approvals"].([]any); !ok || len(a) != 0 {
		t.Errorf("approvals = %#v, want []", m["approvals"])
	}
	for _, k := range []string{"created_at", "expires_at"} {
		s, _ := m[k].(string)
		if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
			t.Errorf("%s = %#v: %v", k, m[k], err)
		}
	}
	if _, ok := m["resolved_at"]; ok {
		t.Error("pending hold has resolved_at")
	}

	if _, err := e.alice.Deny(t.Context(), h.ID(), "no"); err != nil {
		t.Fatal(err)
	}
	_, _, body = e.raw("GET", "/api/v1/holds/"+h.ID(), viewSecret, "")
	m = nil
	_ = json.Unmarshal([]byte(body), &m)
	if m["status"] != "denied" || m["resolved_by"] != "alice" || m["resolution"] != "no" || m["resolved_at"] == nil {
		t.Errorf("denied hold: %s", body)
	}
}

func TestListFilter(t *testing.T) {
	e := newEnv(t, config.Default().Holds, adminConfig(t))
	h1, h2 := e.hold(), e.hold()
	if _, err := e.alice.Deny(t.Context(), h1.ID(), "no"); err != nil {
		t.Fatal(err)
	}
	all, err := e.viewer.ListHolds(t.Context())
	if err != nil || len(all) != 2 {
		t.Fatalf("all: %+v, %v", all, err)
	}
	pending, err := e.viewer.ListHolds(t.Context(), approvals.StatusPending)
	if err != nil || len(pending) != 1 || pending[0].ID != h2.ID() {
		t.Errorf("pending: %+v, %v", pending, err)
	}
	both, err := e.viewer.ListHolds(t.Context(), approvals.StatusPending, approvals.StatusDenied)
	if err != nil || len(both) != 2 {
		t.Errorf("pending,denied: %+v, %v", both, err)
	}
	_, err = e.viewer.ListHolds(t.Context(), "open")
	wantAPIError(t, err, 400, `unknown status "open"`)
	if st, _, body := e.raw("GET", "/api/v1/holds", viewSecret, ""); st != 200 || !strings.HasPrefix(body, `{"holds":[`) {
		t.Errorf("list body: %s", body)
	}
}

func TestPreApprovals(t *testing.T) {
	e := newEnv(t, config.Default().Holds, adminConfig(t))
	p, err := e.alice.PreApprove(t.Context(), PreApproveRequest{
		SQL:      "DROP TABLE billing.invoices_legacy; DELETE FROM billing.invoices WHERE id = 7;",
		TTL:      2 * time.Hour,
		Reason:   "PR 1234",
		Database: "prod",
	})
	if err != nil {
		t.Fatal(err)
	}
	if p.Approver != "alice" || p.Status != approvals.PreApprovalActive || len(p.Fingerprints) != 2 || p.Database != "prod" ||
		p.ExpiresAt.Sub(p.CreatedAt) != 2*time.Hour {
		t.Errorf("PreApprove = %+v", p)
	}
	got, err := e.viewer.ListPreApprovals(t.Context())
	if err != nil || len(got) != 1 || got[0].ID != p.ID || got[0].Reason != "PR 1234" {
		t.Errorf("list: %+v, %v", got, err)
	}
	if st, _, body := e.raw("GET", "/api/v1/preapprovals/"+p.ID, viewSecret, ""); st != 200 || !strings.Contains(body, `"approver":"alice"`) {
		t.Errorf("get: %d %s", st, body)
	}
	if _, ok := e.store.Match(p.Fingerprints[0], "app", "prod"); !ok {
		t.Error("store does not match the pre-approval")
	}

	for _, tc := range []struct {
		req  PreApproveRequest
		want string
	}{
		{PreApproveRequest{SQL: "DROP TABLE t", Reason: "r"}, "ttl is required"},
		{PreApproveRequest{SQL: "DROP TABLE t", TTL: 8 * 24 * time.Hour, Reason: "r"}, "ttl must be between"},
		{PreApproveRequest{SQL: "DROP TABLE t", TTL: time.Hour}, "reason is required"},
		{PreApproveRequest{SQL: "DROP TABEL t", TTL: time.Hour, Reason: "r"}, "does not parse"},
	} {
		_, err := e.bob.PreApprove(t.Context(), tc.req)
		wantAPIError(t, err, 400, tc.want)
	}
	if st, _, body := e.raw("POST", "/api/v1/preapprovals", bobSecret, `{"sql":"DROP TABLE t","ttl":"soon","reason":"r"}`); st != 400 ||
		!strings.Contains(body, `invalid TTL`) {
		t.Errorf("bad ttl: %d %s", st, body)
	}

	_, err = e.viewer.Revoke(t.Context(), p.ID)
	wantAPIError(t, err, 403, "approver token")
	r, err := e.bob.Revoke(t.Context(), p.ID)
	if err != nil || r.Status != approvals.PreApprovalRevoked || r.RevokedBy != "bob" {
		t.Fatalf("Revoke = %+v, %v", r, err)
	}
	if _, ok := e.store.Match(p.Fingerprints[0], "app", "prod"); ok {
		t.Error("revoked pre-approval still matches")
	}
	_, err = e.bob.Revoke(t.Context(), p.ID)
	wantAPIError(t, err, 409, "already revoked")
	if st, _, body := e.raw("POST", "/api/v1/preapprovals/"+p.ID+"/revoke", bobSecret, ""); st != 409 {
		t.Errorf("POST revoke: %d %s", st, body)
	}
	_, err = e.bob.Revoke(t.Context(), "nope")
	wantAPIError(t, err, 404, "not found")
}

func TestReload(t *testing.T) {
	e := newEnv(t, config.Default().Holds, adminConfig(t))
	if err := e.alice.Reload(t.Context()); err != nil || e.reloads != 1 {
		t.Fatalf("Reload: %v (reloads %d)", err, e.reloads)
	}
	e.reloadFn = func() error { return errors.New("pgmoat.yaml: policy.rules[0].action: unknown action \"nuke\"") }
	wantAPIError(t, e.alice.Reload(t.Context()), 500, `previous configuration stays in force: pgmoat.yaml: policy.rules[0].action`)
	wantAPIError(t, e.anon.Reload(t.Context()), 401, "missing bearer token")
	if e.reloads != 2 {
		t.Errorf("reloads = %d, want 2", e.reloads)
	}
}

// TestPolicyEndpoint: a viewer reads the protection in force, with the
// hash /metrics shows; without a token the endpoint refuses.
func TestPolicyEndpoint(t *testing.T) {
	e := newEnv(t, config.Default().Holds, adminConfig(t))
	cfg, err := config.Load("/etc/pgmoat.yaml", []byte("policy: {protect: [billing.*]}\nholds: {approvals_required: 2}\nadmin:\n  tokens:\n    - {name: oncall, role: approver, token_env: X}\n"))
	if err != nil {
		t.Fatal(err)
	}
	e.inForce = cfg
	p, err := e.viewer.Policy(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := cfg.Protection()
	if p.Hash != want.Hash() || p.File != "/etc/pgmoat.yaml" || !slices.Equal(p.Policy.Protect, []string{"billing.*"}) ||
		p.Holds.ApprovalsRequired != 2 || !slices.Equal(p.Tokens, []config.TokenRole{{Name: "oncall", Role: "approver"}}) ||
		!slices.Equal(p.Stated, []string{"policy", "policy.protect", "admin.tokens", "holds"}) {
		t.Errorf("GET /api/v1/policy = %+v", *p)
	}
	if p.Protection.Hash() != p.Hash {
		t.Errorf("the body's protection hashes to %s, its hash field says %s", p.Protection.Hash(), p.Hash)
	}
	_, err = e.anon.Policy(t.Context())
	wantAPIError(t, err, 401, "missing bearer token")
	_, _, body := e.raw("GET", "/api/v1/policy", viewSecret, "")
	if strings.Contains(body, "token_env") || strings.Contains(body, `"X"`) {
		t.Errorf("the policy shows where token secrets come from: %s", body)
	}
}

func TestUnknownRoutesAnswerJSON(t *testing.T) {
	e := newEnv(t, config.Default().Holds, adminConfig(t))
	st, _, body := e.raw("GET", "/api/v1/nothing", aliceSecret, "")
	if st != 404 || !strings.Contains(jsonError(t, body), "no such endpoint") {
		t.Errorf("unknown path: %d %s", st, body)
	}
	st, hdr, body := e.raw("PUT", "/api/v1/holds", aliceSecret, "")
	if st != 405 || !strings.Contains(hdr.Get("Allow"), "GET") || !strings.Contains(jsonError(t, body), "not allowed") {
		t.Errorf("wrong method: %d %v %s", st, hdr, body)
	}
}

func TestNoTokensConfigured(t *testing.T) {
	e := newEnv(t, config.Default().Holds, config.Admin{})
	_, err := e.alice.ListHolds(t.Context())
	wantAPIError(t, err, 401, "no admin API tokens are configured")
	if st, _, _ := e.raw("GET", "/healthz", "", ""); st != 200 {
		t.Errorf("/healthz: %d", st)
	}
}

func TestTokenErrors(t *testing.T) {
	store := approvals.New(config.Default().Holds, approvals.Options{})
	t.Cleanup(store.Close)
	dir := t.TempDir()
	short := filepath.Join(dir, "short")
	_ = os.WriteFile(short, []byte("abc\n"), 0o600)
	t.Setenv("PGMOAT_TEST_EMPTY", "  \n")
	t.Setenv("PGMOAT_TEST_A", aliceSecret)
	t.Setenv("PGMOAT_TEST_B", aliceSecret)
	for _, tc := range []struct {
		tokens  []config.Token
		key     string
		message string
	}{
		{[]config.Token{{Name: "ci", Role: "approver", TokenEnv: "PGMOAT_TEST_UNSET"}},
			"admin.tokens[0].token_env", `token "ci": environment variable PGMOAT_TEST_UNSET is empty or unset`},
		{[]config.Token{{Name: "a", Role: "approver", TokenEnv: "PGMOAT_TEST_A"}, {Name: "ci", Role: "viewer", TokenEnv: "PGMOAT_TEST_EMPTY"}},
			"admin.tokens[1].token_env", `token "ci": environment variable PGMOAT_TEST_EMPTY is empty`},
		{[]config.Token{{Name: "ci", Role: "approver", TokenFile: filepath.Join(dir, "missing")}},
			"admin.tokens[0].token_file", "no such file"},
		{[]config.Token{{Name: "ci", Role: "approver", TokenFile: short}},
			"admin.tokens[0].token_file", "is 3 characters; use at least 16"},
		{[]config.Token{{Name: "a", Role: "approver", TokenEnv: "PGMOAT_TEST_A"}, {Name: "b", Role: "viewer", TokenEnv: "PGMOAT_TEST_B"}},
			"admin.tokens[1].token_env", `same secret as token "a"`},
	} {
		_, err := New(Options{Config: config.Admin{Tokens: tc.tokens}, Store: store})
		var ce *config.Error
		if !errors.As(err, &ce) || ce.Key != tc.key || !strings.Contains(err.Error(), tc.message) {
			t.Errorf("tokens %+v: %v, want key %s and %q", tc.tokens, err, tc.key, tc.message)
		}
		if err != nil && (strings.Contains(err.Error(), aliceSecret) || strings.Contains(err.Error(), "abc")) {
			t.Errorf("error reveals a secret: %v", err)
		}
	}
}

// A reload with a broken token keeps the tokens in force; a good one
// replaces them.
func TestSetConfigReloadsTokens(t *testing.T) {
	cfg := adminConfig(t)
	e := newEnv(t, config.Default().Holds, cfg)
	t.Setenv("PGMOAT_TEST_ALICE", "")
	if err := e.srv.SetConfig(cfg); err == nil {
		t.Fatal("SetConfig accepted an empty secret")
	}
	if _, err := e.alice.ListHolds(t.Context()); err != nil {
		t.Errorf("old token after failed reload: %v", err)
	}
	t.Setenv("PGMOAT_TEST_ALICE", "alice-rotated-0123456789")
	if err := e.srv.SetConfig(cfg); err != nil {
		t.Fatal(err)
	}
	_, err := e.alice.ListHolds(t.Context())
	wantAPIError(t, err, 401, "invalid token")
	rotated := &Client{BaseURL: e.url, Token: "alice-rotated-0123456789"}
	if _, err := rotated.ListHolds(t.Context()); err != nil {
		t.Errorf("rotated token: %v", err)
	}
}

func TestClientConnectionError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c := &Client{BaseURL: "http://" + addr, Token: aliceSecret}
	_, err = c.ListHolds(t.Context())
	if err == nil || !strings.Contains(err.Error(), "admin API at http://"+addr) {
		t.Errorf("error %v", err)
	}
}

// TestREADMEListsAdminErrors keeps README's list of admin API error
// statuses complete: every status the API answers errors with.
func TestREADMEListsAdminErrors(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	i := strings.Index(string(readme), "**Admin API**")
	if i < 0 {
		t.Fatal("README has no **Admin API** paragraph")
	}
	para := string(readme[i:])
	if j := strings.Index(para, "\n\n"); j >= 0 {
		para = para[:j]
	}
	for _, code := range []string{"400", "401", "403", "404", "409", "500", "503"} {
		if !strings.Contains(para, code) {
			t.Errorf("README's admin API paragraph does not list %s:\n%s", code, para)
		}
	}
}
