package approvals

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgmoat/pgmoat/config"
	"github.com/pgmoat/pgmoat/metrics"
)

// fakeClock moves only when a test says so; timers due run synchronously
// inside Advance, so a test knows a hold expired when Advance returns.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	c    *fakeClock
	at   time.Time
	f    func()
	done bool // fired or stopped
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2025, 3, 14, 9, 26, 53, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, at: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	return t
}

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := !t.done
	t.done = true
	return was
}

// Advance moves time by d and runs the timers that became due.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []*fakeTimer
	c.timers = slices.DeleteFunc(c.timers, func(t *fakeTimer) bool {
		if t.done {
			return true
		}
		if !t.at.After(c.now) {
			t.done = true
			due = append(due, t)
			return true
		}
		return false
	})
	c.mu.Unlock()
	for _, t := range due {
		t.f()
	}
}

// Jump moves time by d without running timers, as when a timer is late.
func (c *fakeClock) Jump(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// recorder is an OnEvent that keeps events and can refuse some types, as
// a failing audit log would.
type recorder struct {
	mu     sync.Mutex
	events []Event
	refuse map[EventType]bool
}

var errDiskFull = errors.New("write audit.log: no space left on device")

func (r *recorder) OnEvent(ev Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.refuse[ev.Type] {
		return errDiskFull
	}
	r.events = append(r.events, ev)
	return nil
}

func (r *recorder) setRefuse(types ...EventType) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.refuse = map[EventType]bool{}
	for _, t := range types {
		r.refuse[t] = true
	}
}

func (r *recorder) types() []EventType {
	r.mu.Lock()
	defer r.mu.Unlock()
	ts := make([]EventType, len(r.events))
	for i, ev := range r.events {
		ts[i] = ev.Type
	}
	return ts
}

func (r *recorder) last() Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.events[len(r.events)-1]
}

type harness struct {
	s     *Store
	clock *fakeClock
	rec   *recorder
	m     *metrics.Metrics
}

func holdsConfig() config.Holds {
	c := config.Default().Holds
	c.PublicURL = "https://pgmoat.example.com/"
	return c
}

func newHarness(t *testing.T, cfg config.Holds, opts Options) *harness {
	t.Helper()
	h := &harness{clock: newFakeClock(), rec: &recorder{}, m: metrics.New(prometheus.NewRegistry())}
	opts.Clock = h.clock
	opts.OnEvent = h.rec.OnEvent
	opts.Metrics = h.m
	h.s = New(cfg, opts)
	t.Cleanup(h.s.Close)
	return h
}

func sampleRequest() Request {
	return Request{
		Statement:    "DROP TABLE billing.invoices",
		Fingerprints: []string{"0123456789abcdef"},
		User:         "alice",
		Database:     "app",
		Application:  "deploy-bot",
		Client:       "10.0.0.5:52344",
		SessionID:    "s-42",
		Rule:         "protect-billing",
		Reason:       "DROP TABLE on protected table billing.invoices.",
	}
}

func (h *harness) create(t *testing.T, req Request) *Hold {
	t.Helper()
	hold, err := h.s.Create(req)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	return hold
}

// waitAsync starts Wait in a goroutine; the channel yields its outcome.
func (h *harness) waitAsync(ctx context.Context, hold *Hold) <-chan Outcome {
	ch := make(chan Outcome, 1)
	go func() { ch <- h.s.Wait(ctx, hold) }()
	return ch
}

// ended reports whether hold has ended, without waiting.
func ended(hold *Hold) bool {
	select {
	case <-hold.done:
		return true
	default:
		return false
	}
}

func (h *harness) list(t testing.TB) []HoldInfo {
	t.Helper()
	l, err := h.s.List()
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	return l
}

func (h *harness) listPre(t testing.TB) []PreApproval {
	t.Helper()
	l, err := h.s.ListPreApprovals()
	if err != nil {
		t.Fatalf("ListPreApprovals: %v", err)
	}
	return l
}
