package approvals

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// hookServer answers with the given status codes in turn (the last one
// repeats) and keeps what it received.
type hookServer struct {
	*httptest.Server
	mu       sync.Mutex
	bodies   [][]byte
	headers  []http.Header
	statuses []int
	block    chan struct{} // when set, each request waits for it to close
}

func newHookServer(t *testing.T, statuses ...int) *hookServer {
	hs := &hookServer{statuses: statuses}
	hs.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		hs.mu.Lock()
		hs.bodies = append(hs.bodies, body)
		hs.headers = append(hs.headers, r.Header.Clone())
		n := len(hs.bodies)
		block := hs.block
		hs.mu.Unlock()
		if block != nil {
			<-block
		}
		st := hs.statuses[min(n, len(hs.statuses))-1]
		w.WriteHeader(st)
	}))
	t.Cleanup(hs.Close)
	return hs
}

func (hs *hookServer) requests() int {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	return len(hs.bodies)
}

// webhookHarness is a store whose webhook points at hs and reports each
// notification's final result on the returned channel.
func webhookHarness(t *testing.T, hs *hookServer, path string, log io.Writer) (*harness, <-chan error) {
	cfg := holdsConfig()
	cfg.Webhook = hs.URL + path
	opts := Options{Webhook: WebhookOptions{Attempts: 3, Backoff: time.Millisecond, Timeout: 10 * time.Second}}
	if log != nil {
		opts.Logger = slog.New(slog.NewTextHandler(log, nil))
	}
	h := newHarness(t, cfg, opts)
	results := make(chan error, 10)
	h.s.hook.delivered = func(_ string, err error) { results <- err }
	return h, results
}

func TestWebhookPayloadAndRetries(t *testing.T) {
	hs := newHookServer(t, 500, 503, 204)
	h, results := webhookHarness(t, hs, "/hooks/pgmoat", nil)
	hold := h.create(t, sampleRequest())

	if err := <-results; err != nil {
		t.Fatalf("delivery failed: %v", err)
	}
	if n := hs.requests(); n != 3 {
		t.Errorf("%d requests, want 3 (two 5xx retried)", n)
	}
	if got := testutil.ToFloat64(h.m.WebhookFailures); got != 0 {
		t.Errorf("webhook failures = %v", got)
	}
	hs.mu.Lock()
	body, hdr := hs.bodies[2], hs.headers[2]
	hs.mu.Unlock()
	if ct := hdr.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	var p map[string]any
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatal(err)
	}
	id := hold.ID()
	want := map[string]any{
		"event":              "hold_created",
		"hold_id":            id,
		"statement":          "DROP TABLE billing.invoices",
		"user":               "alice",
		"database":           "app",
		"application":        "deploy-bot",
		"client":             "10.0.0.5:52344",
		"rule":               "protect-billing",
		"reason":             "DROP TABLE on protected table billing.invoices.",
		"approvals_required": float64(1),
		"hold_url":           "https://pgmoat.example.com/api/v1/holds/" + id,
		"approve_url":        "https://pgmoat.example.com/api/v1/holds/" + id + "/approve",
		"deny_url":           "https://pgmoat.example.com/api/v1/holds/" + id + "/deny",
	}
	for k, v := range want {
		if p[k] != v {
			t.Errorf("payload %s = %#v, want %#v", k, p[k], v)
		}
	}
	text, _ := p["text"].(string)
	for _, s := range []string{
		"pgmoat is holding DROP TABLE billing.invoices from alice@app (deploy-bot, 10.0.0.5:52344): DROP TABLE on protected table billing.invoices [rule protect-billing].",
		"pgmoat holds approve " + id + " --reason '…'",
		"pgmoat holds deny " + id,
		"2025-03-14 09:41:53 UTC",
	} {
		if !strings.Contains(text, s) {
			t.Errorf("text %q\nlacks %q", text, s)
		}
	}
	if strings.Contains(text, "\n") {
		t.Errorf("text is not one paragraph: %q", text)
	}
}

// A webhook that never works is logged and counted, and the hold is
// neither released nor refused because of it.
func TestWebhookFailureLeavesHoldPending(t *testing.T) {
	hs := newHookServer(t, 500)
	var log syncBuffer
	h, results := webhookHarness(t, hs, "/services/T000/B000/SECRETXYZ", &log)
	hold := h.create(t, sampleRequest())

	if err := <-results; err == nil || !strings.Contains(err.Error(), "500") {
		t.Fatalf("delivery result: %v, want the 500", err)
	}
	if n := hs.requests(); n != 3 {
		t.Errorf("%d requests, want 3 attempts", n)
	}
	if got := testutil.ToFloat64(h.m.WebhookFailures); got != 1 {
		t.Errorf("webhook failures = %v, want 1", got)
	}
	if ended(hold) {
		t.Fatal("a webhook failure ended the hold")
	}
	if info, _ := h.s.Get(hold.ID()); info.Status != StatusPending {
		t.Errorf("status %s", info.Status)
	}
	out := log.String()
	if !strings.Contains(out, "hold webhook not delivered") || !strings.Contains(out, hold.ID()) {
		t.Errorf("failure not logged:\n%s", out)
	}
	if strings.Contains(out, "SECRETXYZ") {
		t.Errorf("log reveals the webhook's secret path:\n%s", out)
	}
}

func TestWebhookClientErrorIsNotRetried(t *testing.T) {
	hs := newHookServer(t, 404)
	h, results := webhookHarness(t, hs, "/gone", nil)
	h.create(t, sampleRequest())
	if err := <-results; err == nil {
		t.Fatal("404 counted as delivered")
	}
	if n := hs.requests(); n != 1 {
		t.Errorf("%d requests, want 1", n)
	}
	if got := testutil.ToFloat64(h.m.WebhookFailures); got != 1 {
		t.Errorf("webhook failures = %v", got)
	}
}

// A webhook that hangs delays neither the hold's creation nor its
// approval: the request is still in flight while both happen.
func TestWebhookIsAsynchronous(t *testing.T) {
	hs := newHookServer(t, 200)
	hs.block = make(chan struct{})
	h, results := webhookHarness(t, hs, "/slow", nil)
	hold := h.create(t, sampleRequest())
	if _, err := h.s.Approve(hold.ID(), "bob", "lgtm"); err != nil {
		t.Fatal(err)
	}
	if out := h.s.Wait(t.Context(), hold); out.Status != StatusApproved {
		t.Errorf("outcome %+v", out)
	}
	close(hs.block)
	if err := <-results; err != nil {
		t.Errorf("delivery: %v", err)
	}
}

func TestWebhookPayloadWithoutPublicURL(t *testing.T) {
	info := HoldInfo{ID: "abc", Statement: "TRUNCATE\n   t", User: "u", Database: "d", ApprovalsRequired: 2}
	p := NewWebhookPayload(info, "")
	if p.ApproveURL != "" || p.DenyURL != "" {
		t.Errorf("URLs without public_url: %+v", p)
	}
	if !strings.HasPrefix(p.Text, "pgmoat is holding TRUNCATE t from u@d.") || !strings.Contains(p.Text, "2 approvals") {
		t.Errorf("text %q", p.Text)
	}
	info.Statement = strings.Repeat("é", 500)
	p = NewWebhookPayload(info, "")
	if want := "holding " + strings.Repeat("é", 199) + "… from"; !strings.Contains(p.Text, want) {
		t.Errorf("long statement not cut to 200 runes: %q", p.Text)
	}
}

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
