package approvals

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// flaky is the memory Backend with a switch that makes every call fail as
// an unreachable control database does.
type flaky struct {
	*memory
	down atomic.Bool
}

var errConnRefused = errors.New("dial tcp 10.0.0.9:5432: connection refused")

func (f *flaky) err(op string) error {
	if f.down.Load() {
		return &UnavailableError{Op: op, Err: errConnRefused}
	}
	return nil
}

func (f *flaky) CreateHold(h HoldInfo, record func() error) error {
	if err := f.err("store the hold"); err != nil {
		return err
	}
	return f.memory.CreateHold(h, record)
}

func (f *flaky) UpdateHold(id string, fn func(*HoldInfo) (bool, error)) (HoldInfo, error) {
	if err := f.err("change the hold"); err != nil {
		return HoldInfo{}, err
	}
	return f.memory.UpdateHold(id, fn)
}

func (f *flaky) MatchPreApproval(fp, user, db string, now time.Time) (PreApproval, bool, error) {
	if err := f.err("read the pre-approvals"); err != nil {
		return PreApproval{}, false, err
	}
	return f.memory.MatchPreApproval(fp, user, db, now)
}

// With the records unreachable, new holds and approvals are refused with
// ErrUnavailable, pre-approvals match nothing, and a hold this process
// holds can still end (refusing its statement); its end is stored once
// the records are back.
func TestBackendDownFailsClosed(t *testing.T) {
	f := &flaky{memory: newMemory(DefaultKeepEnded)}
	h := newHarness(t, holdsConfig(), Options{Backend: f, Instance: "a", SyncInterval: 10 * time.Millisecond})
	hold := h.create(t, sampleRequest())
	p, err := h.s.PreApprove(PreApprovalRequest{SQL: "DROP TABLE t", TTL: time.Hour, Reason: "r", Approver: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	f.down.Store(true)

	if _, err := h.s.Create(sampleRequest()); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("Create while down: %v", err)
	}
	if got := testutil.ToFloat64(h.m.HoldsPending); got != 1 {
		t.Errorf("holds pending = %v, want 1", got)
	}
	if _, err := h.s.Approve(hold.ID(), "bob", "lgtm"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Approve while down: %v", err)
	}
	if _, ok := h.s.Match(p.Fingerprints[0], "u", "d"); ok {
		t.Error("a pre-approval matched while the records were unreachable")
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	done := h.waitAsync(ctx, hold)
	cancel(ErrClientCancel)
	if out := <-done; out.Status != StatusWithdrawn || out.Reason != ErrClientCancel.Error() {
		t.Fatalf("outcome while down: %+v", out)
	}
	if ev := h.rec.last(); ev.Type != EventHoldWithdrawn {
		t.Errorf("last event %s", ev.Type)
	}

	f.down.Store(false)
	deadline := time.Now().Add(5 * time.Second)
	for {
		info, err := h.s.Get(hold.ID())
		if err == nil && info.Status == StatusWithdrawn {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the withdrawal was not stored once the records were back: %+v, %v", info, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A pre-approval with a use limit stops matching once used up.
func TestPreApprovalUseLimit(t *testing.T) {
	h := newHarness(t, holdsConfig(), Options{})
	p := preApprove(t, h, PreApprovalRequest{SQL: "TRUNCATE t", TTL: time.Hour, Reason: "r", Approver: "a", MaxUses: 2})
	fp := fingerprint(t, "TRUNCATE t")
	for i := range 2 {
		m, ok := h.s.Match(fp, "u", "d")
		if !ok {
			t.Fatalf("use %d: no match", i+1)
		}
		if err := h.s.MarkUsed(m.ID, Usage{Fingerprint: fp}); err != nil {
			t.Fatalf("use %d: %v", i+1, err)
		}
	}
	if _, ok := h.s.Match(fp, "u", "d"); ok {
		t.Error("matches after its two uses")
	}
	if err := h.s.MarkUsed(p.ID, Usage{Fingerprint: fp}); !errors.Is(err, ErrNotPending) || !strings.Contains(err.Error(), "exhausted") {
		t.Errorf("third use: %v", err)
	}
	if got, _ := h.s.GetPreApproval(p.ID); got.Status != PreApprovalExhausted || got.Uses != 2 || got.MaxUses != 2 {
		t.Errorf("after its uses: %+v", got)
	}
	if _, err := h.s.PreApprove(PreApprovalRequest{SQL: "TRUNCATE t", TTL: time.Hour, Reason: "r", Approver: "a", MaxUses: -1}); !errors.Is(err, ErrInvalid) {
		t.Errorf("negative use limit: %v", err)
	}
}

// Subscribers hear of every change, merged per record; a slow one gets a
// single resync instead of an unbounded queue.
func TestSubscribe(t *testing.T) {
	h := newHarness(t, holdsConfig(), Options{})
	sub := h.s.Subscribe()
	defer sub.Close()
	hold := h.create(t, sampleRequest())
	if _, err := h.s.Deny(hold.ID(), "carol", "no"); err != nil {
		t.Fatal(err)
	}
	<-sub.C
	if got := sub.Next(); len(got) != 1 || got[0] != (Change{Kind: ChangeHold, ID: hold.ID()}) {
		t.Fatalf("changes %+v, want one for the hold", got)
	}
	for range maxQueued + 1 {
		h.create(t, sampleRequest())
	}
	if got := sub.Next(); len(got) != 1 || got[0].Kind != ChangeResync {
		t.Fatalf("after a burst: %d changes, first %+v; want one resync", len(got), got[0])
	}
	h.s.Close()
	if _, open := <-sub.C; open {
		if _, open := <-sub.C; open {
			t.Error("subscription still open after Close")
		}
	}
}

// The measured blast radius travels with the hold: API snapshot, event,
// webhook text.
func TestBlastRadiusCarried(t *testing.T) {
	h := newHarness(t, holdsConfig(), Options{})
	req := sampleRequest()
	req.BlastRadius = "would delete 1,204,331 of 1,204,331 rows of billing.invoices"
	hold := h.create(t, req)
	info, _ := h.s.Get(hold.ID())
	if info.BlastRadius != req.BlastRadius || h.rec.last().Hold.BlastRadius != req.BlastRadius {
		t.Errorf("info %q, event %q", info.BlastRadius, h.rec.last().Hold.BlastRadius)
	}
	p := NewWebhookPayload(info, "https://pgmoat.example.com")
	if p.BlastRadius != req.BlastRadius || !strings.Contains(p.Text, "Measured: it would delete 1,204,331") {
		t.Errorf("webhook %+v", p)
	}
}
