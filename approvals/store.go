package approvals

import (
	"context"
	"crypto/rand"
	"encoding/hex"
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
}

// Store holds pending and recently ended holds, and pre-approvals. It is
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

	// mu guards the tables below, never a hold's own state, and is never
	// held while waiting or while calling OnEvent.
	mu     sync.Mutex
	closed bool
	holds  map[string]*Hold
	ended  []endedHold // oldest first

	pmu  sync.RWMutex
	pre  map[string]*preApproval
	byFP map[string][]*preApproval
}

type endedHold struct {
	id string
	at time.Time
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
		holds:        make(map[string]*Hold),
		pre:          make(map[string]*preApproval),
		byFP:         make(map[string][]*preApproval),
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
	s.SetConfig(cfg)
	s.hook = newWebhook(s, opts.Webhook)
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
// and the error wraps ErrNotRecorded (the proxy should then refuse the
// statement). The webhook, if configured, is notified in the background.
func (s *Store) Create(req Request) (*Hold, error) {
	cfg := s.cfg.Load()
	timeout := cfg.Timeout.Std()
	if req.Timeout > 0 {
		timeout = req.Timeout
	}
	req.Fingerprints = slices.Clone(req.Fingerprints)
	now := s.clock.Now()
	h := &Hold{
		id:        newID(),
		req:       req,
		createdAt: now,
		expiresAt: now.Add(timeout),
		required:  cfg.ApprovalsRequired,
		status:    StatusPending,
		done:      make(chan struct{}),
	}
	h.howTo = howToApprove(h.id, cfg.PublicURL)
	info := h.infoLocked()
	if err := s.emit(Event{Type: EventHoldCreated, Time: now, Hold: &info}); err != nil {
		return nil, fmt.Errorf("hold: %w: %v", ErrNotRecorded, err)
	}

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	if _, dup := s.holds[h.id]; dup {
		// 64 random bits: unreachable in practice, but never merge two holds.
		s.mu.Unlock()
		return nil, fmt.Errorf("hold id %s collides with an existing hold", h.id)
	}
	s.m.HoldsPending.Inc()
	s.holds[h.id] = h
	s.mu.Unlock()

	h.mu.Lock()
	if h.status == StatusPending {
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
		s.finish(h, StatusWithdrawn, "", causeText(ctx))
		<-h.done
	}
	return h.outcome()
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

// Approve records approver's approval of hold id. The hold is released
// once ApprovalsRequired distinct approvers have approved; the returned
// info shows its new state. Errors: ErrInvalid (no approver or reason),
// ErrNotFound, ErrNotPending (it ended, including by reaching its expiry),
// ErrAlreadyApproved (same approver twice), ErrNotRecorded (the audit log
// refused the approval; the hold stays pending and nothing is released).
func (s *Store) Approve(id, approver, reason string) (HoldInfo, error) {
	if err := checkActor(approver, reason); err != nil {
		return HoldInfo{}, err
	}
	h, err := s.hold(id)
	if err != nil {
		return HoldInfo{}, err
	}
	h.mu.Lock()
	now := s.clock.Now()
	if info, err := s.checkPendingLocked(h, now); err != nil {
		h.mu.Unlock()
		s.retire(h, info)
		return info, err
	}
	if i := slices.IndexFunc(h.approvals, func(a Approval) bool { return a.Approver == approver }); i >= 0 {
		info := h.infoLocked()
		h.mu.Unlock()
		return info, fmt.Errorf("hold %s: %w by %s", id, ErrAlreadyApproved, approver)
	}
	a := Approval{Approver: approver, Reason: reason, At: now}
	final := len(h.approvals)+1 >= h.required

	next := h.infoLocked()
	next.Approvals = append(next.Approvals, a)
	typ := EventHoldApproval
	if final {
		typ = EventHoldApproved
		next.Status = StatusApproved
		next.ResolvedAt = now
		next.ResolvedBy = approver
		next.Resolution = approvedText(next.Approvals)
	}
	// Record before releasing: the proxy forwards the statement as soon as
	// done is closed, and an approved statement must be in the audit log
	// before it runs.
	if err := s.emit(Event{Type: typ, Time: now, Hold: &next, Actor: approver, Reason: reason}); err != nil {
		info := h.infoLocked()
		h.mu.Unlock()
		return info, fmt.Errorf("approval of hold %s %w (%v); the hold is still pending", id, ErrNotRecorded, err)
	}
	h.approvals = append(h.approvals, a)
	if !final {
		info := h.infoLocked()
		h.mu.Unlock()
		s.log.Info("hold approval recorded", "hold", id, "approver", approver,
			"approvals", len(info.Approvals), "approvals_required", h.required)
		return info, nil
	}
	h.endLocked(StatusApproved, now, approver, next.Resolution)
	info := h.infoLocked()
	h.mu.Unlock()
	s.retire(h, info)
	return info, nil
}

// Deny ends hold id as denied; any one approver can deny. Errors:
// ErrInvalid, ErrNotFound, ErrNotPending.
func (s *Store) Deny(id, approver, reason string) (HoldInfo, error) {
	if err := checkActor(approver, reason); err != nil {
		return HoldInfo{}, err
	}
	h, err := s.hold(id)
	if err != nil {
		return HoldInfo{}, err
	}
	h.mu.Lock()
	now := s.clock.Now()
	if info, err := s.checkPendingLocked(h, now); err != nil {
		h.mu.Unlock()
		s.retire(h, info)
		return info, err
	}
	info := s.finishLocked(h, now, StatusDenied, approver, reason)
	h.mu.Unlock()
	s.retire(h, info)
	return info, nil
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

// checkPendingLocked returns ErrNotPending when h has ended. A hold whose
// expiry has passed is timed out here, even if its timer has not fired
// yet, so that no approval is accepted at or after the expiry. When it
// times h out, the caller must retire h with the returned info.
func (s *Store) checkPendingLocked(h *Hold, now time.Time) (HoldInfo, error) {
	if h.status == StatusPending && !now.Before(h.expiresAt) {
		info := s.finishLocked(h, now, StatusTimedOut, "", timedOutText(h))
		return info, fmt.Errorf("hold %s is %w: it %s", h.id, ErrNotPending, endedText(info))
	}
	if h.status != StatusPending {
		info := h.infoLocked()
		return HoldInfo{}, fmt.Errorf("hold %s is %w: it %s", h.id, ErrNotPending, endedText(info))
	}
	return HoldInfo{}, nil
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

func timedOutText(h *Hold) string {
	t := fmt.Sprintf("timed out after %s without a decision", h.expiresAt.Sub(h.createdAt))
	if n := len(h.approvals); n > 0 {
		t += fmt.Sprintf(" (%d of %d approvals given)", n, h.required)
	}
	return t
}

// expire is the hold's timer.
func (s *Store) expire(h *Hold) {
	h.mu.Lock()
	if h.status != StatusPending {
		h.mu.Unlock()
		return
	}
	info := s.finishLocked(h, s.clock.Now(), StatusTimedOut, "", timedOutText(h))
	h.mu.Unlock()
	s.retire(h, info)
}

// finish ends h with a status that lets nothing through, unless it already
// ended.
func (s *Store) finish(h *Hold, st Status, by, reason string) {
	h.mu.Lock()
	if h.status != StatusPending {
		h.mu.Unlock()
		return
	}
	info := s.finishLocked(h, s.clock.Now(), st, by, reason)
	h.mu.Unlock()
	s.retire(h, info)
}

// finishLocked ends a pending h as denied, timed out or withdrawn and
// records the event. These outcomes only refuse, so they stand even when
// the audit log refuses the event; that failure is logged.
func (s *Store) finishLocked(h *Hold, now time.Time, st Status, by, reason string) HoldInfo {
	h.endLocked(st, now, by, reason)
	info := h.infoLocked()
	typ := map[Status]EventType{
		StatusDenied:    EventHoldDenied,
		StatusTimedOut:  EventHoldTimedOut,
		StatusWithdrawn: EventHoldWithdrawn,
	}[st]
	if err := s.emit(Event{Type: typ, Time: now, Hold: &info, Actor: by, Reason: reason}); err != nil {
		s.log.Error("hold ended but the event could not be recorded", "hold", h.id, "status", st, "err", err)
	}
	return info
}

func (h *Hold) endLocked(st Status, now time.Time, by, reason string) {
	h.status = st
	h.resolvedAt = now
	h.resolvedBy = by
	h.resolution = reason
	if h.timer != nil {
		h.timer.Stop()
	}
	close(h.done)
}

// retire does the bookkeeping after a hold ended: metrics, log, and the
// ended list that bounds how long it stays visible. A zero info (nothing
// ended) is ignored.
func (s *Store) retire(h *Hold, info HoldInfo) {
	if info.Status == "" || info.Status == StatusPending {
		return
	}
	waited := info.ResolvedAt.Sub(info.CreatedAt)
	s.m.HoldsPending.Dec()
	s.m.HoldsResolved.WithLabelValues(string(info.Status)).Inc()
	s.m.HoldWaitDuration.Observe(waited.Seconds())
	s.log.Info("hold ended", "hold", h.id, "status", info.Status, "by", info.ResolvedBy,
		"resolution", info.Resolution, "waited", waited)

	s.mu.Lock()
	s.ended = append(s.ended, endedHold{id: h.id, at: info.ResolvedAt})
	s.trimLocked(s.clock.Now())
	s.mu.Unlock()
}

// trimLocked forgets ended holds beyond KeepEnded or older than
// KeepEndedFor.
func (s *Store) trimLocked(now time.Time) {
	cutoff := now.Add(-s.keepEndedFor)
	n := 0
	for n < len(s.ended) && (len(s.ended)-n > s.keepEnded || !s.ended[n].at.After(cutoff)) {
		delete(s.holds, s.ended[n].id)
		n++
	}
	if n > 0 {
		clear(s.ended[:n])
		s.ended = s.ended[n:]
	}
}

func (s *Store) hold(id string) (*Hold, error) {
	s.mu.Lock()
	h := s.holds[id]
	s.mu.Unlock()
	if h == nil {
		return nil, fmt.Errorf("hold %s: %w", id, ErrNotFound)
	}
	return h, nil
}

// Get returns hold id, pending or recently ended.
func (s *Store) Get(id string) (HoldInfo, error) {
	h, err := s.hold(id)
	if err != nil {
		return HoldInfo{}, err
	}
	return h.Info(), nil
}

// List returns the pending and recently ended holds, oldest first.
func (s *Store) List() []HoldInfo {
	s.mu.Lock()
	s.trimLocked(s.clock.Now())
	hs := make([]*Hold, 0, len(s.holds))
	for _, h := range s.holds {
		hs = append(hs, h)
	}
	s.mu.Unlock()
	infos := make([]HoldInfo, len(hs))
	for i, h := range hs {
		infos[i] = h.Info()
	}
	slices.SortFunc(infos, func(a, b HoldInfo) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return infos
}

// Close withdraws every pending hold ("pgmoat is shutting down"), refuses
// new ones, and stops the webhook sender after at most one in-flight
// attempt per worker.
func (s *Store) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	hs := make([]*Hold, 0, len(s.holds))
	for _, h := range s.holds {
		hs = append(hs, h)
	}
	s.mu.Unlock()
	for _, h := range hs {
		s.finish(h, StatusWithdrawn, "", "pgmoat is shutting down")
	}
	s.hook.close()
}

func (s *Store) emit(ev Event) error {
	if s.onEvent == nil {
		return nil
	}
	return s.onEvent(ev)
}

// newID returns 16 hex digits from crypto/rand.
func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b[:])
}
