package state

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pgmoat/pgmoat/approvals"
	"github.com/pgmoat/pgmoat/config"
	"github.com/pgmoat/pgmoat/internal/pgtest"
	"github.com/pgmoat/pgmoat/metrics"
	"github.com/pgmoat/pgmoat/rules"
)

// controlDB returns the DSN of a fresh database for a test's control
// schema.
func controlDB(t *testing.T) string {
	t.Helper()
	c := pgtest.Get(t)
	return c.SuperConnString(c.NewDatabase(t), "sslmode=disable")
}

// events is an OnEvent that keeps what one instance recorded.
type events struct {
	mu  sync.Mutex
	evs []approvals.Event
}

func (e *events) record(ev approvals.Event) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.evs = append(e.evs, ev)
	return nil
}

func (e *events) find(typ approvals.EventType) (approvals.Event, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, ev := range e.evs {
		if ev.Type == typ {
			return ev, true
		}
	}
	return approvals.Event{}, false
}

// instance is one pgmoat's Store over a shared control database.
type instance struct {
	b   *Backend
	s   *approvals.Store
	ev  *events
	m   *metrics.Metrics
	cfg config.Holds
}

func open(t *testing.T, dsn, id string, lease time.Duration) *instance {
	t.Helper()
	in := &instance{ev: &events{}, m: metrics.New(prometheus.NewRegistry()), cfg: config.Default().Holds}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b, err := Open(ctx, Options{DSN: dsn, Instance: id, Lease: lease, PollInterval: 200 * time.Millisecond, Timeout: 3 * time.Second, Metrics: in.m})
	if err != nil {
		t.Fatalf("Open %s: %v", id, err)
	}
	in.b = b
	in.s = approvals.New(in.cfg, approvals.Options{Backend: b, Instance: id, OnEvent: in.ev.record, Metrics: in.m, SyncInterval: 200 * time.Millisecond})
	t.Cleanup(in.s.Close)
	return in
}

func request(app string) approvals.Request {
	return approvals.Request{
		Statement: "DROP TABLE public.users", Fingerprints: []string{"fp"}, User: "app", Database: "prod",
		Application: app, Client: "10.0.0.1:5000", SessionID: "s-1", Rule: "deploys",
		Reason: "DROP TABLE on protected table public.users", BlastRadius: "would drop public.users (1,204 rows)",
	}
}

func waitOutcome(t *testing.T, ch <-chan approvals.Outcome, within time.Duration) approvals.Outcome {
	t.Helper()
	select {
	case o := <-ch:
		return o
	case <-time.After(within):
		t.Fatalf("no outcome within %s", within)
		return approvals.Outcome{}
	}
}

// An approval given on B releases the statement A holds, through
// NOTIFY, well within a second; both see the same record.
func TestApprovalOnOtherInstanceReleases(t *testing.T) {
	dsn := controlDB(t)
	a, b := open(t, dsn, "pgmoat-a", 15*time.Second), open(t, dsn, "pgmoat-b", 15*time.Second)
	subA := a.s.Subscribe()
	defer subA.Close()

	h, err := a.s.Create(request("deployer"))
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan approvals.Outcome, 1)
	go func() { out <- a.s.Wait(context.Background(), h) }()

	seen, err := b.s.Get(h.ID())
	if err != nil || seen.Status != approvals.StatusPending || seen.Instance != "pgmoat-a" ||
		seen.BlastRadius != "would drop public.users (1,204 rows)" || seen.Statement != "DROP TABLE public.users" {
		t.Fatalf("B sees %+v, %v", seen, err)
	}
	list, err := b.s.List()
	if err != nil || len(list) != 1 {
		t.Fatalf("B lists %+v, %v", list, err)
	}
	start := time.Now()
	info, err := b.s.Approve(h.ID(), "alice", "reviewed")
	if err != nil || info.Status != approvals.StatusApproved {
		t.Fatalf("Approve on B: %+v, %v", info, err)
	}
	o := waitOutcome(t, out, time.Second)
	if o.Status != approvals.StatusApproved || o.Approvers()[0] != "alice" {
		t.Fatalf("outcome on A: %+v", o)
	}
	t.Logf("released on A %s after the approval on B", time.Since(start))
	if _, ok := b.ev.find(approvals.EventHoldApproved); !ok {
		t.Error("B did not record the approval")
	}
	if _, ok := a.ev.find(approvals.EventHoldApproved); ok {
		t.Error("A recorded B's approval too")
	}
	if got := testutil.ToFloat64(a.m.HoldsPending); got != 0 {
		t.Errorf("A holds pending = %v", got)
	}
	if got := testutil.ToFloat64(a.m.HoldsResolved.WithLabelValues("approved")); got != 1 {
		t.Errorf("A holds resolved approved = %v", got)
	}
	// A's console heard of the change: the hold's own, or a resync (read
	// everything again), which the listener asks for after its LISTEN
	// and which takes the place of what a subscriber has not read yet.
	select {
	case <-subA.C:
		if ch := subA.Next(); len(ch) == 0 || ch[len(ch)-1].ID != h.ID() && ch[len(ch)-1].Kind != approvals.ChangeResync {
			t.Errorf("A's subscription: %+v", ch)
		}
	case <-time.After(2 * time.Second):
		t.Error("A's subscription heard nothing")
	}
	if _, err := a.s.Approve(h.ID(), "bob", "late"); !errors.Is(err, approvals.ErrNotPending) {
		t.Errorf("late approval on A: %v", err)
	}
}

// decisionWait bounds the waits of tests about what is decided across
// instances, not how fast: on a loaded CI machine a NOTIFY has taken more
// than a second to arrive. How fast is TestApprovalOnOtherInstanceReleases'
// (a second).
const decisionWait = 10 * time.Second

// Two approvals required, one on each instance; the same approver twice is
// refused whichever instance it uses; a denial on B refuses on A.
func TestDecisionsAcrossInstances(t *testing.T) {
	dsn := controlDB(t)
	a, b := open(t, dsn, "a", 15*time.Second), open(t, dsn, "b", 15*time.Second)
	cfg := a.cfg
	cfg.ApprovalsRequired = 2
	a.s.SetConfig(cfg)

	h, err := a.s.Create(request("deployer"))
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan approvals.Outcome, 1)
	go func() { out <- a.s.Wait(context.Background(), h) }()
	if _, err := a.s.Approve(h.ID(), "alice", "one"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.s.Approve(h.ID(), "alice", "again"); !errors.Is(err, approvals.ErrAlreadyApproved) {
		t.Fatalf("same approver on B: %v", err)
	}
	if info, err := b.s.Approve(h.ID(), "bob", "two"); err != nil || info.Status != approvals.StatusApproved {
		t.Fatalf("second approval: %+v, %v", info, err)
	}
	if o := waitOutcome(t, out, decisionWait); o.Status != approvals.StatusApproved || len(o.Approvals) != 2 {
		t.Fatalf("outcome %+v", o)
	}

	h2, err := a.s.Create(request("deployer"))
	if err != nil {
		t.Fatal(err)
	}
	go func() { out <- a.s.Wait(context.Background(), h2) }()
	if _, err := b.s.Deny(h2.ID(), "carol", "not now"); err != nil {
		t.Fatal(err)
	}
	if o := waitOutcome(t, out, decisionWait); o.Status != approvals.StatusDenied || o.By != "carol" || o.Reason != "not now" {
		t.Fatalf("outcome %+v", o)
	}
}

// Many instances race to approve and deny one hold: exactly one decision.
func TestRacingDecisionsOneOutcome(t *testing.T) {
	dsn := controlDB(t)
	a, b := open(t, dsn, "a", 15*time.Second), open(t, dsn, "b", 15*time.Second)
	for round := range 10 {
		h, err := a.s.Create(request("deployer"))
		if err != nil {
			t.Fatal(err)
		}
		var wins atomic.Int32
		var wg sync.WaitGroup
		for i := range 6 {
			s := []*approvals.Store{a.s, b.s}[i%2]
			wg.Go(func() {
				var err error
				if i%3 == 0 {
					_, err = s.Deny(h.ID(), fmt.Sprint("u", i), "no")
				} else {
					_, err = s.Approve(h.ID(), fmt.Sprint("u", i), "yes")
				}
				if err == nil {
					wins.Add(1)
				} else if !errors.Is(err, approvals.ErrNotPending) {
					t.Errorf("round %d: %v", round, err)
				}
			})
		}
		wg.Wait()
		if wins.Load() != 1 {
			t.Fatalf("round %d: %d decisions succeeded, want 1", round, wins.Load())
		}
		o := a.s.Wait(context.Background(), h)
		if o.Status != approvals.StatusApproved && o.Status != approvals.StatusDenied {
			t.Fatalf("round %d: outcome %+v", round, o)
		}
	}
}

// A pre-approval with one use lets exactly one statement through, however
// many instances try at once.
func TestOneUsePreApprovalAcrossInstances(t *testing.T) {
	dsn := controlDB(t)
	a, b := open(t, dsn, "a", 15*time.Second), open(t, dsn, "b", 15*time.Second)
	p, err := b.s.PreApprove(approvals.PreApprovalRequest{SQL: "DROP TABLE legacy", TTL: time.Hour, Reason: "PR 7", Approver: "alice", MaxUses: 1})
	if err != nil {
		t.Fatal(err)
	}
	fps, _ := rules.Fingerprints("drop table legacy")
	var used atomic.Int32
	var wg sync.WaitGroup
	for i := range 8 {
		s := []*approvals.Store{a.s, b.s}[i%2]
		wg.Go(func() {
			m, ok := s.Match(fps[0], "app", "prod")
			if !ok {
				return
			}
			if err := s.MarkUsed(m.ID, approvals.Usage{Fingerprint: fps[0], Statement: "drop table legacy"}); err == nil {
				used.Add(1)
			} else if !errors.Is(err, approvals.ErrNotPending) {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if used.Load() != 1 {
		t.Fatalf("%d uses succeeded, want exactly 1", used.Load())
	}
	got, err := a.s.GetPreApproval(p.ID)
	if err != nil || got.Uses != 1 || got.Status != approvals.PreApprovalExhausted {
		t.Fatalf("after the race: %+v, %v", got, err)
	}
	if _, ok := b.s.Match(fps[0], "app", "prod"); ok {
		t.Error("an exhausted pre-approval still matches")
	}
	list, err := a.s.ListPreApprovals()
	if err != nil || len(list) != 1 || list[0].Status != approvals.PreApprovalExhausted {
		t.Errorf("list: %+v, %v", list, err)
	}
	// Revoking on A shows on B.
	p2, err := a.s.PreApprove(approvals.PreApprovalRequest{SQL: "TRUNCATE t", TTL: time.Hour, Reason: "r", Approver: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.s.Revoke(p2.ID, "bob"); err != nil {
		t.Fatal(err)
	}
	if got, _ := a.s.GetPreApproval(p2.ID); got.Status != approvals.PreApprovalRevoked || got.RevokedBy != "bob" {
		t.Errorf("revoked on B, seen on A: %+v", got)
	}
}

// An instance that dies without a word (its lease is no longer renewed)
// has its pending holds withdrawn by another, which records why.
func TestDeadInstanceHoldsWithdrawnAfterLease(t *testing.T) {
	dsn := controlDB(t)
	lease := 1500 * time.Millisecond
	a, b := open(t, dsn, "pgmoat-a", lease), open(t, dsn, "pgmoat-b", lease)
	h, err := a.s.Create(request("deployer"))
	if err != nil {
		t.Fatal(err)
	}
	// A "crashes": its background work stops, its row stays.
	a.b.cancel()
	a.b.wg.Wait()
	died := time.Now()

	deadline := time.Now().Add(10 * lease)
	for {
		info, err := b.s.Get(h.ID())
		if err != nil {
			t.Fatal(err)
		}
		if info.Status == approvals.StatusWithdrawn {
			if elapsed := time.Since(died); elapsed < lease/2 {
				t.Errorf("withdrawn %s after the crash, before the lease of %s could run out", elapsed, lease)
			}
			if !strings.Contains(info.Resolution, "instance pgmoat-a stopped renewing its lease") {
				t.Errorf("resolution %q", info.Resolution)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("hold still %s %s after A died", info.Status, time.Since(died))
		}
		time.Sleep(100 * time.Millisecond)
	}
	ev, ok := b.ev.find(approvals.EventHoldWithdrawn)
	if !ok || ev.Hold.ID != h.ID() || !strings.Contains(ev.Reason, "pgmoat-a") {
		t.Errorf("B's withdrawal event: %+v", ev)
	}
}

// A newer schema is refused with a clear error; a second process with a
// live instance id waits, then gives up.
func TestSchemaTooNewAndInstanceInUse(t *testing.T) {
	dsn := controlDB(t)
	a := open(t, dsn, "a", time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := Open(ctx, Options{DSN: dsn, Instance: "a", Lease: time.Second})
	var inUse *InUseError
	if !errors.As(err, &inUse) || !strings.Contains(err.Error(), `instance id "a" is in use`) {
		t.Fatalf("second process with id a: %v", err)
	}
	_ = a

	if _, err := a.b.pool.Exec(ctx, "UPDATE pgmoat.schema_version SET version = 99"); err != nil {
		t.Fatal(err)
	}
	_, err = Open(ctx, Options{DSN: dsn, Instance: "c"})
	var tooNew *TooNewError
	if !errors.As(err, &tooNew) || !strings.Contains(err.Error(), "version 99, newer than this pgmoat knows (1)") {
		t.Fatalf("newer schema: %v", err)
	}
}

// A clean stop gives up the lease: the same id starts again at once.
func TestRestartAfterCleanStop(t *testing.T) {
	dsn := controlDB(t)
	a := open(t, dsn, "a", 15*time.Second)
	a.s.Close()
	start := time.Now()
	open(t, dsn, "a", 15*time.Second)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("restart took %s", d)
	}
}
