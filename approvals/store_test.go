package approvals

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pgmoat/pgmoat/config"
	"github.com/pgmoat/pgmoat/metrics"
)

func TestApproveReleasesAfterRecording(t *testing.T) {
	h := newHarness(t, holdsConfig(), Options{})
	hold := h.create(t, sampleRequest())

	if len(hold.ID()) != 16 || strings.Trim(hold.ID(), "0123456789abcdef") != "" {
		t.Errorf("id %q: want 16 hex digits", hold.ID())
	}
	if want := h.clock.Now().Add(15 * time.Minute); !hold.ExpiresAt().Equal(want) {
		t.Errorf("expires at %v, want %v", hold.ExpiresAt(), want)
	}
	if got := hold.HowToApprove(); !strings.Contains(got, "pgmoat holds approve "+hold.ID()) ||
		!strings.Contains(got, "https://pgmoat.example.com/api/v1/holds/"+hold.ID()+"/approve") {
		t.Errorf("HowToApprove = %q", got)
	}
	if got := testutil.ToFloat64(h.m.HoldsPending); got != 1 {
		t.Errorf("holds pending = %v, want 1", got)
	}
	done := h.waitAsync(context.Background(), hold)

	h.clock.Advance(90 * time.Second)
	info, err := h.s.Approve(hold.ID(), "bob", "reviewed in PR 1234")
	if err != nil {
		t.Fatalf("Approve: %v", err)
	}
	if info.Status != StatusApproved || len(info.Approvals) != 1 || info.Approvals[0].Approver != "bob" {
		t.Errorf("Approve returned %+v", info)
	}
	out := <-done
	if out.Status != StatusApproved || !slices.Equal(out.Approvers(), []string{"bob"}) ||
		out.Approvals[0].Reason != "reviewed in PR 1234" || out.Waited != 90*time.Second {
		t.Errorf("outcome %+v", out)
	}
	if got, want := h.rec.types(), []EventType{EventHoldCreated, EventHoldApproved}; !slices.Equal(got, want) {
		t.Errorf("events %v, want %v", got, want)
	}
	ev := h.rec.last()
	if ev.Actor != "bob" || ev.Reason != "reviewed in PR 1234" || ev.Hold.Status != StatusApproved ||
		ev.Hold.Statement != "DROP TABLE billing.invoices" || ev.Hold.User != "alice" {
		t.Errorf("approved event %+v / %+v", ev, ev.Hold)
	}
	if got := testutil.ToFloat64(h.m.HoldsPending); got != 0 {
		t.Errorf("holds pending = %v, want 0", got)
	}
	if got := testutil.ToFloat64(h.m.HoldsResolved.WithLabelValues("approved")); got != 1 {
		t.Errorf("holds resolved{approved} = %v, want 1", got)
	}
	if got := testutil.CollectAndCount(h.m.HoldWaitDuration); got != 1 {
		t.Errorf("wait histogram has %d series", got)
	}
	got, err := h.s.Get(hold.ID())
	if err != nil || got.Status != StatusApproved || got.ResolvedBy != "bob" || got.Resolution != "approved by bob" {
		t.Errorf("Get = %+v, %v", got, err)
	}
}

func TestDeny(t *testing.T) {
	h := newHarness(t, holdsConfig(), Options{})
	hold := h.create(t, sampleRequest())
	done := h.waitAsync(context.Background(), hold)

	if _, err := h.s.Deny(hold.ID(), "carol", "  "); !errors.Is(err, ErrInvalid) {
		t.Fatalf("deny without reason: %v, want ErrInvalid", err)
	}
	if _, err := h.s.Deny(hold.ID(), "carol", "not during business hours"); err != nil {
		t.Fatal(err)
	}
	out := <-done
	if out.Status != StatusDenied || out.By != "carol" || out.Reason != "not during business hours" {
		t.Errorf("outcome %+v", out)
	}
	if s := out.String(); s != "denied by carol: not during business hours" {
		t.Errorf("String() = %q", s)
	}
	// A late approval is refused and changes nothing.
	_, err := h.s.Approve(hold.ID(), "bob", "lgtm")
	if !errors.Is(err, ErrNotPending) || !strings.Contains(err.Error(), "was denied by carol") {
		t.Errorf("late approve: %v", err)
	}
	if info, _ := h.s.Get(hold.ID()); info.Status != StatusDenied || len(info.Approvals) != 0 {
		t.Errorf("after late approve: %+v", info)
	}
	if got, want := h.rec.types(), []EventType{EventHoldCreated, EventHoldDenied}; !slices.Equal(got, want) {
		t.Errorf("events %v, want %v", got, want)
	}
	if got := testutil.ToFloat64(h.m.HoldsResolved.WithLabelValues("denied")); got != 1 {
		t.Errorf("holds resolved{denied} = %v", got)
	}
}

func TestTimeout(t *testing.T) {
	h := newHarness(t, holdsConfig(), Options{})
	hold := h.create(t, sampleRequest())
	short := sampleRequest()
	short.Timeout = 30 * time.Second // as inside a transaction
	inTx := h.create(t, short)
	done := h.waitAsync(context.Background(), hold)
	doneTx := h.waitAsync(context.Background(), inTx)

	h.clock.Advance(30*time.Second - time.Nanosecond)
	if ended(inTx) {
		t.Fatal("hold with a 30s timeout ended before 30s")
	}
	h.clock.Advance(time.Nanosecond)
	if out := <-doneTx; out.Status != StatusTimedOut || !strings.Contains(out.Reason, "timed out after 30s") {
		t.Errorf("in-transaction hold: %+v", out)
	}
	h.clock.Advance(15*time.Minute - 30*time.Second - time.Nanosecond)
	if ended(hold) {
		t.Fatal("hold ended before holds.timeout")
	}
	h.clock.Advance(time.Nanosecond)
	out := <-done
	if out.Status != StatusTimedOut || out.Reason != "timed out after 15m0s without a decision" {
		t.Errorf("outcome %+v", out)
	}
	if _, err := h.s.Approve(hold.ID(), "bob", "sorry, was at lunch"); !errors.Is(err, ErrNotPending) ||
		!strings.Contains(err.Error(), "timed out at") {
		t.Errorf("late approve: %v", err)
	}
	if got := testutil.ToFloat64(h.m.HoldsResolved.WithLabelValues("timed_out")); got != 2 {
		t.Errorf("holds resolved{timed_out} = %v", got)
	}
}

// An approval arriving at the expiry is refused even when the expiry timer
// is late: the clock, not the timer, decides.
func TestApproveAtExpiryWithLateTimer(t *testing.T) {
	h := newHarness(t, holdsConfig(), Options{})
	hold := h.create(t, sampleRequest())
	done := h.waitAsync(context.Background(), hold)
	h.clock.Jump(15 * time.Minute)

	if _, err := h.s.Approve(hold.ID(), "bob", "lgtm"); !errors.Is(err, ErrNotPending) {
		t.Fatalf("approve at expiry: %v, want ErrNotPending", err)
	}
	if out := <-done; out.Status != StatusTimedOut {
		t.Errorf("outcome %+v", out)
	}
	h.clock.Advance(0) // the late timer fires: nothing changes
	if got, want := h.rec.types(), []EventType{EventHoldCreated, EventHoldTimedOut}; !slices.Equal(got, want) {
		t.Errorf("events %v, want %v", got, want)
	}
	if got := testutil.ToFloat64(h.m.HoldsPending); got != 0 {
		t.Errorf("holds pending = %v", got)
	}
}

func TestWithdrawOnClientCancel(t *testing.T) {
	h := newHarness(t, holdsConfig(), Options{})
	for _, cause := range []error{ErrClientCancel, ErrClientDisconnect} {
		hold := h.create(t, sampleRequest())
		ctx, cancel := context.WithCancelCause(context.Background())
		done := h.waitAsync(ctx, hold)
		cancel(cause)
		out := <-done
		if out.Status != StatusWithdrawn || out.Reason != cause.Error() {
			t.Errorf("cause %v: outcome %+v", cause, out)
		}
		if _, err := h.s.Approve(hold.ID(), "bob", "lgtm"); !errors.Is(err, ErrNotPending) ||
			!strings.Contains(err.Error(), cause.Error()) {
			t.Errorf("approve after withdrawal: %v", err)
		}
		if ev := h.rec.last(); ev.Type != EventHoldWithdrawn || ev.Reason != cause.Error() {
			t.Errorf("last event %+v", ev)
		}
	}
	if got := testutil.ToFloat64(h.m.HoldsResolved.WithLabelValues("withdrawn")); got != 2 {
		t.Errorf("holds resolved{withdrawn} = %v", got)
	}
}

func TestTwoDistinctApprovers(t *testing.T) {
	cfg := holdsConfig()
	cfg.ApprovalsRequired = 2
	h := newHarness(t, cfg, Options{})
	hold := h.create(t, sampleRequest())
	done := h.waitAsync(context.Background(), hold)

	info, err := h.s.Approve(hold.ID(), "bob", "lgtm")
	if err != nil || info.Status != StatusPending || len(info.Approvals) != 1 || info.ApprovalsRequired != 2 {
		t.Fatalf("first approval: %+v, %v", info, err)
	}
	if ended(hold) {
		t.Fatal("released after one of two approvals")
	}
	_, err = h.s.Approve(hold.ID(), "bob", "really lgtm")
	if !errors.Is(err, ErrAlreadyApproved) || !strings.Contains(err.Error(), "already approved by bob") {
		t.Fatalf("same approver twice: %v", err)
	}
	if ended(hold) {
		t.Fatal("released by the same approver twice")
	}
	if _, err := h.s.Approve(hold.ID(), "dave", "second pair of eyes"); err != nil {
		t.Fatal(err)
	}
	out := <-done
	if out.Status != StatusApproved || !slices.Equal(out.Approvers(), []string{"bob", "dave"}) {
		t.Errorf("outcome %+v", out)
	}
	want := []EventType{EventHoldCreated, EventHoldApproval, EventHoldApproved}
	if got := h.rec.types(); !slices.Equal(got, want) {
		t.Errorf("events %v, want %v", got, want)
	}
	if ev := h.rec.last(); len(ev.Hold.Approvals) != 2 || ev.Hold.Resolution != "approved by bob, dave" {
		t.Errorf("approved event hold %+v", ev.Hold)
	}
}

// An approval the audit log cannot record releases nothing; the hold stays
// pending and can be approved once the log works again.
func TestApprovalNotRecordedReleasesNothing(t *testing.T) {
	h := newHarness(t, holdsConfig(), Options{})
	hold := h.create(t, sampleRequest())
	h.rec.setRefuse(EventHoldApproved)

	info, err := h.s.Approve(hold.ID(), "bob", "lgtm")
	if !errors.Is(err, ErrNotRecorded) || !strings.Contains(err.Error(), "no space left") {
		t.Fatalf("Approve: %v, want ErrNotRecorded", err)
	}
	if ended(hold) || info.Status != StatusPending || len(info.Approvals) != 0 {
		t.Fatalf("hold after refused approval: %+v", info)
	}
	h.rec.setRefuse()
	if _, err := h.s.Approve(hold.ID(), "bob", "lgtm"); err != nil {
		t.Fatal(err)
	}
	if out := h.s.Wait(context.Background(), hold); out.Status != StatusApproved {
		t.Errorf("outcome %+v", out)
	}
}

// Refusals stand even when they cannot be recorded.
func TestDenyStandsWhenNotRecorded(t *testing.T) {
	h := newHarness(t, holdsConfig(), Options{})
	hold := h.create(t, sampleRequest())
	h.rec.setRefuse(EventHoldDenied)
	if _, err := h.s.Deny(hold.ID(), "carol", "no"); err != nil {
		t.Fatal(err)
	}
	if out := h.s.Wait(context.Background(), hold); out.Status != StatusDenied {
		t.Errorf("outcome %+v", out)
	}
}

func TestCreateNotRecorded(t *testing.T) {
	h := newHarness(t, holdsConfig(), Options{})
	h.rec.setRefuse(EventHoldCreated)
	if _, err := h.s.Create(sampleRequest()); !errors.Is(err, ErrNotRecorded) {
		t.Fatalf("Create: %v, want ErrNotRecorded", err)
	}
	if n := len(h.list(t)); n != 0 {
		t.Errorf("%d holds listed", n)
	}
	if got := testutil.ToFloat64(h.m.HoldsPending); got != 0 {
		t.Errorf("holds pending = %v", got)
	}
}

func TestErrors(t *testing.T) {
	h := newHarness(t, holdsConfig(), Options{})
	hold := h.create(t, sampleRequest())
	for _, tc := range []struct {
		name            string
		id, who, reason string
		deny            bool
		want            error
	}{
		{"unknown id", "0000000000000000", "bob", "x", false, ErrNotFound},
		{"unknown id deny", "nope", "bob", "x", true, ErrNotFound},
		{"no reason", hold.ID(), "bob", "", false, ErrInvalid},
		{"no approver", hold.ID(), "", "x", false, ErrInvalid},
		{"deny no reason", hold.ID(), "bob", "", true, ErrInvalid},
	} {
		var err error
		if tc.deny {
			_, err = h.s.Deny(tc.id, tc.who, tc.reason)
		} else {
			_, err = h.s.Approve(tc.id, tc.who, tc.reason)
		}
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	if _, err := h.s.Get("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get: %v", err)
	}
	if ended(hold) {
		t.Error("a failed call ended the hold")
	}
}

func TestListAndRetention(t *testing.T) {
	h := newHarness(t, holdsConfig(), Options{KeepEnded: 2})
	var ids []string
	for range 4 {
		ids = append(ids, h.create(t, sampleRequest()).ID())
		h.clock.Advance(time.Second)
	}
	for _, id := range ids[:3] {
		if _, err := h.s.Deny(id, "carol", "no"); err != nil {
			t.Fatal(err)
		}
	}
	list := h.list(t)
	var got []string
	for _, i := range list {
		got = append(got, i.ID+":"+string(i.Status))
	}
	want := []string{ids[1] + ":denied", ids[2] + ":denied", ids[3] + ":pending"}
	if !slices.Equal(got, want) {
		t.Errorf("List = %v, want %v (oldest first; only the last 2 ended holds kept)", got, want)
	}
	if _, err := h.s.Get(ids[0]); !errors.Is(err, ErrNotFound) {
		t.Errorf("forgotten hold: %v", err)
	}
	h.clock.Jump(DefaultKeepEndedFor + time.Second)
	list = h.list(t)
	if len(list) != 1 || list[0].ID != ids[3] {
		t.Errorf("after a day, List = %+v; want only the pending hold", list)
	}
}

func TestCloseWithdrawsPending(t *testing.T) {
	h := newHarness(t, holdsConfig(), Options{})
	hold := h.create(t, sampleRequest())
	done := h.waitAsync(context.Background(), hold)
	h.s.Close()
	if out := <-done; out.Status != StatusWithdrawn || out.Reason != "pgmoat is shutting down" {
		t.Errorf("outcome %+v", out)
	}
	if _, err := h.s.Create(sampleRequest()); !errors.Is(err, ErrClosed) {
		t.Errorf("Create after Close: %v", err)
	}
}

func TestSetConfigAppliesToNewHolds(t *testing.T) {
	h := newHarness(t, holdsConfig(), Options{})
	old := h.create(t, sampleRequest())
	cfg := holdsConfig()
	cfg.ApprovalsRequired = 3
	cfg.Timeout = config.Duration(5 * time.Minute)
	h.s.SetConfig(cfg)
	fresh := h.create(t, sampleRequest())
	if old.ApprovalsRequired() != 1 || fresh.ApprovalsRequired() != 3 {
		t.Errorf("approvals required: old %d, new %d", old.ApprovalsRequired(), fresh.ApprovalsRequired())
	}
	if d := fresh.ExpiresAt().Sub(h.clock.Now()); d != 5*time.Minute {
		t.Errorf("new hold expires in %v", d)
	}
}

// deafBackend is a shared Backend whose notifications never arrive.
type deafBackend struct{ *memory }

func (deafBackend) Watch(func(Change)) {}

// TestMissedNotification: a hold another instance approved, whose
// notification this one never got, is released by the Store's periodic
// read of its pending holds, not left to expire, and the console hears of
// it.
func TestMissedNotification(t *testing.T) {
	mem := newMemory(DefaultKeepEnded)
	s := New(holdsConfig(), Options{Backend: deafBackend{mem}, SyncInterval: 20 * time.Millisecond, Metrics: metrics.New(prometheus.NewRegistry())})
	t.Cleanup(s.Close)
	h, err := s.Create(sampleRequest())
	if err != nil {
		t.Fatal(err)
	}
	sub := s.Subscribe()
	defer sub.Close()
	// Another instance approves it: straight in the shared records.
	if _, err := mem.UpdateHold(h.ID(), func(info *HoldInfo) (bool, error) {
		info.Status, info.ResolvedBy, info.Resolution = StatusApproved, "bob", "approved by bob"
		info.ResolvedAt = time.Now()
		return true, nil
	}); err != nil {
		t.Fatal(err)
	}
	out := make(chan Outcome, 1)
	go func() { out <- s.Wait(context.Background(), h) }()
	select {
	case o := <-out:
		if o.Status != StatusApproved || o.By != "bob" {
			t.Fatalf("outcome %+v, want approved by bob", o)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the approval was never seen: the hold waits for its expiry")
	}
	select {
	case <-sub.C:
		if ch := sub.Next(); !slices.ContainsFunc(ch, func(c Change) bool { return c.Kind == ChangeHold && c.ID == h.ID() }) {
			t.Errorf("the subscription heard %+v, not the hold", ch)
		}
	case <-time.After(2 * time.Second):
		t.Error("the subscription heard nothing of the approval")
	}
}
