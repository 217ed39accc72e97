package approvals

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgmoat/pgmoat/config"
	"github.com/pgmoat/pgmoat/metrics"
)

// Defaults for Options.
const (
	DefaultKeepEnded    = 1000
	DefaultKeepEndedFor = 24 * time.Hour
	// DefaultSyncInterval is how often a Store with a shared Backend
	// retries storing the ends of holds it had to end on its own while
	// the backend was unreachable.
	DefaultSyncInterval = time.Second
)

// Options are a Store's dependencies. All are optional.
type Options struct {
	Logger *slog.Logger
	// Metrics receives holds pending/resolved/wait, pre-approvals used and
	// webhook failures. Nil: unregistered collectors.
	Metrics *metrics.Metrics
	// Clock drives hold expiry and pre-approval expiry. Nil: SystemClock.
	Clock Clock
	// OnEvent records events in the audit log; see Event for which errors
	// refuse a change.
	OnEvent func(Event) error
	// Webhook tunes delivery to holds.webhook.
	Webhook WebhookOptions
	// KeepEnded and KeepEndedFor bound how many ended holds (and for how
	// long ended pre-approvals) List, Get and ListPreApprovals still show.
	KeepEnded    int
	KeepEndedFor time.Duration
	// Backend keeps the records. Nil: this process's memory, for one
	// instance. A shared Backend (package state) lets several instances
	// see and decide each other's holds.
	Backend Backend
	// Instance names this pgmoat in the holds it creates
	// (HoldInfo.Instance); set it with a shared Backend.
	Instance string
	// SyncInterval overrides DefaultSyncInterval.
	SyncInterval time.Duration
}

// Store is pgmoat's approvals workflow: it creates holds and waits on
// them, decides approvals, denials, timeouts and withdrawals, and manages
// pre-approvals, recording each change (OnEvent) as the package
// documentation describes. The records themselves are in its Backend. It is
// safe for concurrent use.
type Store struct {
	log          *slog.Logger
	m            *metrics.Metrics
	clock        Clock
	onEvent      func(Event) error
	keepEnded    int
	keepEndedFor time.Duration
	cfg          atomic.Pointer[config.Holds]
	hook         *webhook
	b            Backend
	instance     string

	// mu guards the tables below and is never held while calling the
	// Backend or OnEvent.
	mu     sync.Mutex
	closed bool
	// local are the pending holds whose statements this process holds.
	local map[string]*Hold
	// unsynced are holds this process ended while its Backend could not
	// be reached; their ends are stored when it is back.
	unsynced map[string]HoldInfo

	subMu      sync.Mutex
	subs       map[*Subscription]struct{}
	subsClosed bool

	quit chan struct{}
	wg   sync.WaitGroup
}

// New creates a Store for the holds section of the configuration. Close it
// to stop the webhook sender and withdraw holds still pending.
func New(cfg config.Holds, opts Options) *Store {
	s := &Store{
		log:          opts.Logger,
		m:            opts.Metrics,
		clock:        opts.Clock,
		onEvent:      opts.OnEvent,
		keepEnded:    opts.KeepEnded,
		keepEndedFor: opts.KeepEndedFor,
		b:            opts.Backend,
		instance:     opts.Instance,
		local:        make(map[string]*Hold),
		unsynced:     make(map[string]HoldInfo),
		subs:         make(map[*Subscription]struct{}),
		quit:         make(chan struct{}),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.m == nil {
		s.m = metrics.New(nil)
	}
	if s.clock == nil {
		s.clock = SystemClock{}
	}
	if s.keepEnded <= 0 {
		s.keepEnded = DefaultKeepEnded
	}
	if s.keepEndedFor <= 0 {
		s.keepEndedFor = DefaultKeepEndedFor
	}
	if s.b == nil {
		s.b = newMemory(s.keepEnded)
	} else {
		every := opts.SyncInterval
		if every <= 0 {
			every = DefaultSyncInterval
		}
		s.wg.Add(1)
		go s.syncLoop(every)
	}
	s.SetConfig(cfg)
	s.hook = newWebhook(s, opts.Webhook)
	s.b.Watch(s.changed)
	return s
}

// SetConfig applies a reloaded holds section. Holds already pending keep
// their expiry and required approvals; new holds use the new values.
func (s *Store) SetConfig(cfg config.Holds) {
	cfg.PublicURL = strings.TrimRight(cfg.PublicURL, "/")
	s.cfg.Store(&cfg)
}

// Create registers a held statement and returns at once, so that the proxy
// can tell the client the hold id before waiting with Wait. The
// hold_created event is recorded first: if OnEvent fails, there is no hold
// and the error wraps ErrNotRecorded; if the Backend cannot store it, the
// error wraps ErrUnavailable. Either way the proxy must refuse the
// statement. The webhook, if configured, is notified in the background.
func (s *Store) Create(req Request) (*Hold, error) {
	cfg := s.cfg.Load()
	timeout := cfg.Timeout.Std()
	if req.Timeout > 0 {
		timeout = req.Timeout
	}
	now := s.clock.Now()
	info := HoldInfo{
		ID:                newID(),
		Status:            StatusPending,
		Statement:         req.Statement,
		Fingerprints:      nonNil(slices.Clone(req.Fingerprints)),
		User:              req.User,
		Database:          req.Database,
		Application:       req.Application,
		Client:            req.Client,
		SessionID:         req.SessionID,
		Rule:              req.Rule,
		Reason:            req.Reason,
		BlastRadius:       req.BlastRadius,
		Instance:          s.instance,
		CreatedAt:         now,
		ExpiresAt:         now.Add(timeout),
		Approvals:         []Approval{},
		ApprovalsRequired: cfg.ApprovalsRequired,
	}
	h := &Hold{
		id:        info.ID,
		expiresAt: info.ExpiresAt,
		required:  info.ApprovalsRequired,
		howTo:     howToApprove(info.ID, cfg.PublicURL),
		created:   info,
		done:      make(chan struct{}),
	}

	// Known as local before it is stored, so that an approval that comes
	// the moment it is visible finds its waiter.
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	s.local[h.id] = h
	s.mu.Unlock()
	s.m.HoldsPending.Inc()

	var recErr error
	recorded := false
	err := s.b.CreateHold(info, func() error {
		if err := s.emit(Event{Type: EventHoldCreated, Time: now, Hold: &info}); err != nil {
			recErr = err
			return err
		}
		recorded = true
		return nil
	})
	if err != nil {
		s.mu.Lock()
		delete(s.local, h.id)
		s.mu.Unlock()
		s.m.HoldsPending.Dec()
		if recErr != nil {
			return nil, fmt.Errorf("hold: %w: %v", ErrNotRecorded, recErr)
		}
		if recorded {
			// The audit log says it was created: say how it ended.
			w := info
			w.Status, w.ResolvedAt = StatusWithdrawn, s.clock.Now()
			w.Resolution = "it could not be stored: " + err.Error()
			if err := s.emit(Event{Type: EventHoldWithdrawn, Time: w.ResolvedAt, Hold: &w, Reason: w.Resolution}); err != nil {
				s.log.Error("hold withdrawn but the event could not be recorded", "hold", h.id, "err", err)
			}
		}
		return nil, err
	}

	h.mu.Lock()
	if h.final.Status == "" {
		h.timer = s.clock.AfterFunc(timeout, func() { s.expire(h) })
	}
	h.mu.Unlock()

	s.log.Info("statement held for approval", "hold", h.id, "user", req.User, "database", req.Database,
		"application", req.Application, "client", req.Client, "session", req.SessionID, "rule", req.Rule,
		"expires_at", h.expiresAt, "approvals_required", h.required)
	s.hook.notify(cfg, info)
	return h, nil
}

// Wait blocks until h ends and returns its one outcome. When ctx ends
// first, the hold is withdrawn with context.Cause(ctx) as the reason
// (ErrClientCancel, ErrClientDisconnect, …), unless an approval or denial
// won the race, in which case that outcome is returned: whatever Wait
// returns is what the audit log says happened.
func (s *Store) Wait(ctx context.Context, h *Hold) Outcome {
	select {
	case <-h.done:
	case <-ctx.Done():
		s.finish(h.id, StatusWithdrawn, "", causeText(ctx))
		<-h.done
	}
	return h.outcome()
}

// Approve records approver's approval of hold id. The hold is released
// once ApprovalsRequired distinct approvers have approved; the returned
// info shows its new state. Errors: ErrInvalid (no approver or reason),
// ErrNotFound, ErrNotPending (it ended, including by reaching its expiry),
// ErrAlreadyApproved (same approver twice), ErrNotRecorded (the audit log
// refused the approval; the hold stays pending and nothing is released),
// ErrUnavailable (the Backend cannot be reached; nothing changed).
func (s *Store) Approve(id, approver, reason string) (HoldInfo, error) {
	if err := checkActor(approver, reason); err != nil {
		return HoldInfo{}, err
	}
	info, err := s.b.UpdateHold(id, func(h *HoldInfo) (bool, error) {
		now := s.clock.Now()
		if changed, err := s.checkPending(h, now); err != nil {
			return changed, err
		}
		if slices.ContainsFunc(h.Approvals, func(a Approval) bool { return a.Approver == approver }) {
			return false, fmt.Errorf("hold %s: %w by %s", id, ErrAlreadyApproved, approver)
		}
		next := cloneHold(*h)
		next.Approvals = append(next.Approvals, Approval{Approver: approver, Reason: reason, At: now})
		typ := EventHoldApproval
		if len(next.Approvals) >= next.ApprovalsRequired {
			typ = EventHoldApproved
			next.Status = StatusApproved
			next.ResolvedAt = now
			next.ResolvedBy = approver
			next.Resolution = approvedText(next.Approvals)
		}
		// Record before releasing: the proxy forwards the statement as
		// soon as the hold ends, and an approved statement must be in
		// the audit log before it runs.
		if err := s.emit(Event{Type: typ, Time: now, Hold: &next, Actor: approver, Reason: reason}); err != nil {
			return false, fmt.Errorf("approval of hold %s %w (%v); the hold is still pending", id, ErrNotRecorded, err)
		}
		*h = next
		return true, nil
	})
	s.settled(info)
	if err == nil && info.Status == StatusPending {
		s.log.Info("hold approval recorded", "hold", id, "approver", approver,
			"approvals", len(info.Approvals), "approvals_required", info.ApprovalsRequired)
	}
	if errors.Is(err, ErrNotFound) {
		return HoldInfo{}, err
	}
	return info, err
}

// Deny ends hold id as denied; any one approver can deny. Errors:
// ErrInvalid, ErrNotFound, ErrNotPending, ErrUnavailable.
func (s *Store) Deny(id, approver, reason string) (HoldInfo, error) {
	if err := checkActor(approver, reason); err != nil {
		return HoldInfo{}, err
	}
	info, err := s.b.UpdateHold(id, func(h *HoldInfo) (bool, error) {
		now := s.clock.Now()
		if changed, err := s.checkPending(h, now); err != nil {
			return changed, err
		}
		s.endRecord(h, now, StatusDenied, approver, reason)
		return true, nil
	})
	s.settled(info)
	if err != nil {
		return HoldInfo{}, err
	}
	return info, nil
}

// checkPending returns ErrNotPending when h has ended. A hold whose expiry
// has passed is timed out here (changed), even if its timer has not fired
// yet, so that no approval is accepted at or after the expiry.
func (s *Store) checkPending(h *HoldInfo, now time.Time) (changed bool, err error) {
	if h.Status == StatusPending && !now.Before(h.ExpiresAt) {
		s.endRecord(h, now, StatusTimedOut, "", timedOutText(*h))
		return true, fmt.Errorf("hold %s is %w: it %s", h.ID, ErrNotPending, endedText(*h))
	}
	if h.Status != StatusPending {
		return false, fmt.Errorf("hold %s is %w: it %s", h.ID, ErrNotPending, endedText(*h))
	}
	return false, nil
}

// endRecord ends a pending h as denied, timed out or withdrawn and
// records the event. These outcomes only refuse, so they stand even when
// the audit log refuses the event; that failure is logged.
func (s *Store) endRecord(h *HoldInfo, now time.Time, st Status, by, reason string) {
	h.Status = st
	h.ResolvedAt = now
	h.ResolvedBy = by
	h.Resolution = reason
	typ := map[Status]EventType{
		StatusDenied:    EventHoldDenied,
		StatusTimedOut:  EventHoldTimedOut,
		StatusWithdrawn: EventHoldWithdrawn,
	}[st]
	info := cloneHold(*h)
	if err := s.emit(Event{Type: typ, Time: now, Hold: &info, Actor: by, Reason: reason}); err != nil {
		s.log.Error("hold ended but the event could not be recorded", "hold", h.ID, "status", st, "err", err)
	}
}

// expire is the hold's timer.
func (s *Store) expire(h *Hold) {
	s.finishWith(h.id, func(cur *HoldInfo) (Status, string) { return StatusTimedOut, timedOutText(*cur) })
}

// finish ends hold id with a status that lets nothing through, unless it
// already ended.
func (s *Store) finish(id string, st Status, by, reason string) {
	s.finishWith(id, func(*HoldInfo) (Status, string) { return st, reason }, by)
}

// finishWith ends hold id as how says, unless it already ended. When the
// Backend cannot be reached and the hold is this process's, it ends here
// anyway (these outcomes only refuse) and its end is stored later.
func (s *Store) finishWith(id string, how func(cur *HoldInfo) (Status, string), by ...string) {
	actor := ""
	if len(by) > 0 {
		actor = by[0]
	}
	info, err := s.b.UpdateHold(id, func(h *HoldInfo) (bool, error) {
		if h.Status != StatusPending {
			return false, nil
		}
		st, reason := how(h)
		s.endRecord(h, s.clock.Now(), st, actor, reason)
		return true, nil
	})
	if err == nil {
		s.settled(info)
		return
	}
	h := s.localHold(id)
	if h == nil {
		if !errors.Is(err, ErrNotFound) {
			s.log.Error("could not end hold", "hold", id, "err", err)
		}
		return
	}
	created := h.created
	st, reason := how(&created)
	s.endHere(h, st, actor, reason, err)
}

// endHere ends this process's hold h without its Backend, which could not
// be reached (cause), and queues its end to be stored.
func (s *Store) endHere(h *Hold, st Status, by, reason string, cause error) {
	info := cloneHold(h.created)
	s.endRecord(&info, s.clock.Now(), st, by, reason)
	s.log.Error("hold ended here; its end could not be stored and will be when the control database is back",
		"hold", h.id, "status", st, "err", cause)
	s.mu.Lock()
	s.unsynced[h.id] = info
	s.mu.Unlock()
	s.endLocal(h, info)
}

// settled releases this process's waiter of a hold that info shows ended,
// and reports whether it did so now.
func (s *Store) settled(info HoldInfo) bool {
	if info.Status == "" || info.Status == StatusPending {
		return false
	}
	if h := s.localHold(info.ID); h != nil {
		return s.endLocal(h, info)
	}
	return false
}

// endLocal ends this process's hold h with info, once; it reports whether
// this call ended it.
func (s *Store) endLocal(h *Hold, info HoldInfo) bool {
	if !h.end(info) {
		return false
	}
	s.mu.Lock()
	delete(s.local, h.id)
	s.mu.Unlock()
	waited := info.ResolvedAt.Sub(info.CreatedAt)
	s.m.HoldsPending.Dec()
	s.m.HoldsResolved.WithLabelValues(string(info.Status)).Inc()
	s.m.HoldWaitDuration.Observe(waited.Seconds())
	s.log.Info("hold ended", "hold", h.id, "status", info.Status, "by", info.ResolvedBy,
		"resolution", info.Resolution, "waited", waited)
	return true
}

func (s *Store) localHold(id string) *Hold {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.local[id]
}

func (s *Store) localHolds() []*Hold {
	s.mu.Lock()
	defer s.mu.Unlock()
	hs := make([]*Hold, 0, len(s.local))
	for _, h := range s.local {
		hs = append(hs, h)
	}
	return hs
}

// changed is the Backend's Watch function.
func (s *Store) changed(c Change) {
	switch c.Kind {
	case ChangeHold:
		if h := s.localHold(c.ID); h != nil {
			info := c.Hold
			if info == nil {
				got, err := s.b.GetHold(c.ID)
				if err != nil {
					s.log.Warn("could not read a changed hold", "hold", c.ID, "err", err)
					break
				}
				info = &got
			}
			s.settled(*info)
		}
	case ChangeResync:
		s.resync()
	case ChangeOrphaned:
		s.log.Warn("withdrawing the hold of an instance that stopped", "hold", c.ID, "why", c.Reason)
		s.finish(c.ID, StatusWithdrawn, "", c.Reason)
		return
	case ChangeLeaseLost:
		hs := s.localHolds()
		if len(hs) > 0 {
			s.log.Error("withdrawing this instance's holds: its lease in the control database lapsed", "holds", len(hs), "why", c.Reason)
		}
		for _, h := range hs {
			s.endHere(h, StatusWithdrawn, "", c.Reason, errors.New(c.Reason))
		}
		c = Change{Kind: ChangeResync}
	}
	s.publish(c)
}

// resync reads this process's pending holds again, for changes whose
// notifications were lost.
func (s *Store) resync() {
	if err := s.reread(); err != nil {
		s.log.Warn("could not read this instance's holds", "err", err)
	}
}

// reread releases this process's waiters of holds the Backend shows
// ended, and tells the subscribers of each: no notification of it came.
func (s *Store) reread() error {
	hs := s.localHolds()
	if len(hs) == 0 {
		return nil
	}
	ids := make([]string, len(hs))
	for i, h := range hs {
		ids[i] = h.id
	}
	infos, err := s.b.GetHolds(ids)
	if err != nil {
		return err
	}
	for _, info := range infos {
		if s.settled(info) {
			s.publish(Change{Kind: ChangeHold, ID: info.ID})
		}
	}
	return nil
}

// syncLoop stores the ends of holds ended while the Backend was down, and
// reads this process's pending holds again each time: a shared Backend
// may have missed a notification (one committed before its LISTEN took
// effect, or whose hold it could not read when it came), and a hold
// another instance approved must not wait here until it expires.
func (s *Store) syncLoop(every time.Duration) {
	defer s.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.quit:
			return
		case <-t.C:
			s.syncEnds()
			// Quietly: an unreachable Backend says so itself, and
			// the next tick tries again.
			s.reread()
		}
	}
}

func (s *Store) syncEnds() {
	s.mu.Lock()
	pending := make([]HoldInfo, 0, len(s.unsynced))
	for _, info := range s.unsynced {
		pending = append(pending, info)
	}
	s.mu.Unlock()
	for _, want := range pending {
		_, err := s.b.UpdateHold(want.ID, func(h *HoldInfo) (bool, error) {
			if h.Status != StatusPending {
				if h.Status != want.Status {
					s.log.Warn("a hold this instance ended while the control database was unreachable had ended differently there",
						"hold", want.ID, "here", want.Status, "there", h.Status, "resolution", h.Resolution)
				}
				return false, nil
			}
			h.Status, h.ResolvedAt, h.ResolvedBy, h.Resolution = want.Status, want.ResolvedAt, want.ResolvedBy, want.Resolution
			return true, nil
		})
		if err != nil && !errors.Is(err, ErrNotFound) {
			return // still unreachable: try again next time
		}
		s.mu.Lock()
		delete(s.unsynced, want.ID)
		s.mu.Unlock()
		s.log.Info("stored the end of a hold ended while the control database was unreachable", "hold", want.ID, "status", want.Status)
	}
}

// Get returns hold id, pending or recently ended.
func (s *Store) Get(id string) (HoldInfo, error) {
	return s.b.GetHold(id)
}

// List returns the pending and recently ended holds, oldest first.
func (s *Store) List() ([]HoldInfo, error) {
	infos, err := s.b.ListHolds(s.clock.Now().Add(-s.keepEndedFor), s.keepEnded)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(infos, func(a, b HoldInfo) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return infos, nil
}

// Instance returns the name this Store gives its holds ("" without a
// shared Backend).
func (s *Store) Instance() string { return s.instance }

// Close withdraws every pending hold of this process ("pgmoat is shutting
// down"), refuses new ones, stops the webhook sender after at most one
// in-flight attempt per worker, and closes the Backend.
func (s *Store) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.mu.Unlock()
	for _, h := range s.localHolds() {
		s.finish(h.id, StatusWithdrawn, "", "pgmoat is shutting down")
	}
	close(s.quit)
	s.wg.Wait()
	s.syncEnds()
	s.hook.close()
	s.subMu.Lock()
	s.subsClosed = true
	for sub := range s.subs {
		sub.closeLocked()
	}
	s.subMu.Unlock()
	if err := s.b.Close(); err != nil {
		s.log.Warn("closing the approvals backend", "err", err)
	}
}

func (s *Store) emit(ev Event) error {
	if s.onEvent == nil {
		return nil
	}
	return s.onEvent(ev)
}

func causeText(ctx context.Context) string {
	cause := context.Cause(ctx)
	switch {
	case cause == nil, cause == context.Canceled:
		return "the waiting session ended"
	case cause == context.DeadlineExceeded:
		return "the waiting session's deadline passed"
	}
	return cause.Error()
}

func checkActor(approver, reason string) error {
	if approver == "" {
		return fmt.Errorf("%w: the approver's name is required", ErrInvalid)
	}
	if strings.TrimSpace(reason) == "" {
		return fmt.Errorf("%w: a reason is required (it goes to the audit log)", ErrInvalid)
	}
	return nil
}

func endedText(info HoldInfo) string {
	at := info.ResolvedAt.UTC().Format(time.RFC3339)
	switch info.Status {
	case StatusApproved:
		return "was " + info.Resolution + " at " + at
	case StatusDenied:
		return fmt.Sprintf("was denied by %s at %s", info.ResolvedBy, at)
	case StatusTimedOut:
		return "timed out at " + at
	case StatusWithdrawn:
		return fmt.Sprintf("was withdrawn at %s (%s)", at, info.Resolution)
	}
	return string(info.Status)
}

func approvedText(as []Approval) string {
	names := make([]string, len(as))
	for i, a := range as {
		names[i] = a.Approver
	}
	return "approved by " + strings.Join(names, ", ")
}

func timedOutText(h HoldInfo) string {
	t := fmt.Sprintf("timed out after %s without a decision", h.ExpiresAt.Sub(h.CreatedAt))
	if n := len(h.Approvals); n > 0 {
		t += fmt.Sprintf(" (%d of %d approvals given)", n, h.ApprovalsRequired)
	}
	return t
}

// newID returns 16 hex digits from crypto/rand.
func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b[:])
}
