package approvals

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// Many holds pending at once: each costs a blocked goroutine and a timer,
// and deciding one neither waits for nor disturbs the others.
func TestManyPendingHolds(t *testing.T) {
	n := 1000
	if raceEnabled {
		n = 100
	}
	h := newHarness(t, holdsConfig(), Options{KeepEnded: 2 * n})
	holds := make([]*Hold, n)
	cancels := make([]context.CancelCauseFunc, n)
	outs := make([]<-chan Outcome, n)
	for i := range n {
		req := sampleRequest()
		req.SessionID = fmt.Sprint("s-", i)
		holds[i] = h.create(t, req)
		var ctx context.Context
		ctx, cancels[i] = context.WithCancelCause(context.Background())
		outs[i] = h.waitAsync(ctx, holds[i])
	}
	if got := testutil.ToFloat64(h.m.HoldsPending); got != float64(n) {
		t.Fatalf("holds pending = %v, want %d", got, n)
	}

	mid := n / 2
	if _, err := h.s.Approve(holds[mid].ID(), "bob", "lgtm"); err != nil {
		t.Fatal(err)
	}
	if out := <-outs[mid]; out.Status != StatusApproved || holdSession(h, holds[mid]) != fmt.Sprint("s-", mid) {
		t.Fatalf("approved hold: %+v", out)
	}
	for i, hold := range holds {
		if i != mid && ended(hold) {
			t.Fatalf("hold %d ended when hold %d was approved", i, mid)
		}
	}
	if l := h.list(t); len(l) != n {
		t.Fatalf("List has %d holds, want %d", len(l), n)
	}

	// End the rest concurrently: even ones denied, odd ones cancelled.
	var wg sync.WaitGroup
	for i := range n {
		if i == mid {
			continue
		}
		wg.Go(func() {
			if i%2 == 0 {
				if _, err := h.s.Deny(holds[i].ID(), "carol", "no"); err != nil {
					t.Error(err)
				}
			} else {
				cancels[i](ErrClientDisconnect)
			}
		})
	}
	wg.Wait()
	for i := range n {
		if i == mid {
			continue // its outcome was read above
		}
		out := <-outs[i]
		want := map[bool]Status{true: StatusDenied, false: StatusWithdrawn}[i%2 == 0]
		if out.Status != want {
			t.Errorf("hold %d: %s, want %s", i, out.Status, want)
		}
	}
	if got := testutil.ToFloat64(h.m.HoldsPending); got != 0 {
		t.Errorf("holds pending = %v after all ended", got)
	}
}

func holdSession(h *harness, hold *Hold) string {
	info, _ := h.s.Get(hold.ID())
	return info.SessionID
}

// Approvals, a denial, a cancellation and the expiry race for each hold:
// exactly one of them decides it, the audit log has exactly one final
// event for it, and that event agrees with what Wait returned.
func TestRacingDecisionsHaveOneOutcome(t *testing.T) {
	rounds := 200
	if raceEnabled {
		rounds = 30
	}
	cfg := holdsConfig()
	cfg.ApprovalsRequired = 2
	h := newHarness(t, cfg, Options{})
	final := map[EventType]Status{
		EventHoldApproved: StatusApproved, EventHoldDenied: StatusDenied,
		EventHoldTimedOut: StatusTimedOut, EventHoldWithdrawn: StatusWithdrawn,
	}
	for r := range rounds {
		req := sampleRequest()
		req.Timeout = time.Minute
		hold := h.create(t, req)
		ctx, cancel := context.WithCancelCause(context.Background())
		out := h.waitAsync(ctx, hold)
		var wg sync.WaitGroup
		for _, who := range []string{"ann", "ben", "cat"} {
			wg.Go(func() {
				_, err := h.s.Approve(hold.ID(), who, "ok")
				if err != nil && !errors.Is(err, ErrNotPending) {
					t.Errorf("approve: %v", err)
				}
			})
		}
		if r%2 == 0 {
			wg.Go(func() {
				_, err := h.s.Deny(hold.ID(), "dan", "no")
				if err != nil && !errors.Is(err, ErrNotPending) {
					t.Errorf("deny: %v", err)
				}
			})
		}
		if r%3 == 0 {
			wg.Go(func() { cancel(ErrClientCancel) })
		}
		if r%5 == 0 {
			wg.Go(func() { h.clock.Advance(time.Minute) })
		}
		wg.Wait()
		cancel(nil)
		got := <-out

		var finals []Status
		h.rec.mu.Lock()
		for _, ev := range h.rec.events {
			if st, ok := final[ev.Type]; ok && ev.Hold.ID == hold.ID() {
				finals = append(finals, st)
			}
		}
		h.rec.mu.Unlock()
		if len(finals) != 1 || finals[0] != got.Status {
			t.Fatalf("round %d: Wait said %s, final events %v", r, got.Status, finals)
		}
		if got.Status == StatusApproved && len(got.Approvals) != 2 {
			t.Fatalf("round %d: approved with %d approvals", r, len(got.Approvals))
		}
	}
	if got := testutil.ToFloat64(h.m.HoldsPending); got != 0 {
		t.Errorf("holds pending = %v", got)
	}
}

// BenchmarkDecideWithManyPending measures creating and approving one hold
// while 10,000 others are pending: it should not depend on their number.
func BenchmarkDecideWithManyPending(b *testing.B) {
	s := New(holdsConfig(), Options{KeepEnded: 100})
	defer s.Close()
	for range 10000 {
		if _, err := s.Create(sampleRequest()); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for b.Loop() {
		hold, err := s.Create(sampleRequest())
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.Approve(hold.ID(), "bob", "lgtm"); err != nil {
			b.Fatal(err)
		}
		s.Wait(context.Background(), hold)
	}
}

func BenchmarkMatch(b *testing.B) {
	s := New(holdsConfig(), Options{})
	defer s.Close()
	for i := range 100 {
		if _, err := s.PreApprove(PreApprovalRequest{SQL: fmt.Sprintf("DROP TABLE t%d", i), TTL: time.Hour, Reason: "r", Approver: "a"}); err != nil {
			b.Fatal(err)
		}
	}
	fp := fingerprint(b, "DROP TABLE t50")
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, ok := s.Match(fp, "u", "d"); !ok {
				b.Error("no match")
			}
		}
	})
}
