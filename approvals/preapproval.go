package approvals

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pgmoat/pgmoat/rules"
)

// MaxPreApprovalTTL bounds how long a pre-approval lasts: it is meant for
// one deploy, not as a standing exception to the policy.
const MaxPreApprovalTTL = 7 * 24 * time.Hour

// ParseTTL reads a pre-approval's lifetime: a Go duration ("2h", "90m")
// or whole or fractional days, alone or before one ("7d", "1.5d",
// "1d12h"), as people write TTLs.
func ParseTTL(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	orig := s
	var days time.Duration
	if i := strings.IndexByte(s, 'd'); i > 0 {
		n, err := strconv.ParseFloat(s[:i], 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("invalid TTL %q: want a duration such as 2h, 90m or 7d", orig)
		}
		days = time.Duration(n * float64(24*time.Hour))
		s = s[i+1:]
		if s == "" {
			return days, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid TTL %q: want a duration such as 2h, 90m or 7d", orig)
	}
	return days + d, nil
}

// Pre-approval statuses.
const (
	PreApprovalActive  = "active"
	PreApprovalExpired = "expired"
	PreApprovalRevoked = "revoked"
)

// PreApprovalRequest registers reviewed SQL (typically a migration file) so
// that its statements pass without waiting for a person.
type PreApprovalRequest struct {
	// SQL is one or more statements. Each statement's fingerprint is
	// registered, so literals may differ when it runs.
	SQL string
	// TTL is how long the pre-approval lasts, at most MaxPreApprovalTTL.
	TTL time.Duration
	// Reason is required: it goes to the audit log with every use.
	Reason string
	// Approver is the name of the token that asked for it.
	Approver string
	// Database and User, when set, limit it to sessions with that database
	// or that user.
	Database string
	User     string
}

// PreApproval is a snapshot of a pre-approval, as the admin API shows it.
type PreApproval struct {
	ID           string    `json:"id"`
	Status       string    `json:"status"` // active, expired, revoked
	SQL          string    `json:"sql"`
	Fingerprints []string  `json:"fingerprints"`
	Approver     string    `json:"approver"`
	Reason       string    `json:"reason"`
	Database     string    `json:"database,omitempty"`
	User         string    `json:"user,omitempty"`
	CreatedAt    time.Time `json:"created_at"`
	ExpiresAt    time.Time `json:"expires_at"`
	Uses         int       `json:"uses"`
	LastUsedAt   time.Time `json:"last_used_at,omitzero"`
	RevokedAt    time.Time `json:"revoked_at,omitzero"`
	RevokedBy    string    `json:"revoked_by,omitempty"`
}

// Usage is the statement a pre-approval let through, for the audit log.
type Usage struct {
	Fingerprint string
	Statement   string
	User        string
	Database    string
	Application string
	Client      string
	SessionID   string
	// Rule is the rule that would have held or blocked the statement.
	Rule string
}

type preApproval struct {
	// info's ID, SQL, Fingerprints, Approver, Reason, Database, User,
	// CreatedAt and ExpiresAt never change; the rest is guarded by mu.
	mu   sync.Mutex
	info PreApproval
}

// snapshotLocked returns a copy with the status as of now.
func (p *preApproval) snapshotLocked(now time.Time) PreApproval {
	c := p.info
	c.Fingerprints = slices.Clone(p.info.Fingerprints)
	switch {
	case !c.RevokedAt.IsZero():
		c.Status = PreApprovalRevoked
	case !now.Before(c.ExpiresAt):
		c.Status = PreApprovalExpired
	default:
		c.Status = PreApprovalActive
	}
	return c
}

func (p *preApproval) activeLocked(now time.Time) bool {
	return p.info.RevokedAt.IsZero() && now.Before(p.info.ExpiresAt)
}

// PreApprove registers req. Errors: ErrInvalid (missing approver or
// reason, TTL out of range, SQL that does not parse or holds no statement),
// ErrNotRecorded (the audit log refused it; nothing is registered).
func (s *Store) PreApprove(req PreApprovalRequest) (*PreApproval, error) {
	if err := checkActor(req.Approver, req.Reason); err != nil {
		return nil, err
	}
	if req.TTL <= 0 || req.TTL > MaxPreApprovalTTL {
		return nil, fmt.Errorf("%w: ttl must be between 1s and %s, got %s", ErrInvalid, MaxPreApprovalTTL, req.TTL)
	}
	fps, err := rules.Fingerprints(req.SQL)
	if err != nil {
		return nil, fmt.Errorf("%w: the SQL does not parse: %v", ErrInvalid, err)
	}
	slices.Sort(fps)
	fps = slices.Compact(fps)
	if len(fps) == 0 {
		return nil, fmt.Errorf("%w: the SQL holds no statement", ErrInvalid)
	}
	now := s.clock.Now()
	p := &preApproval{info: PreApproval{
		ID:           newID(),
		SQL:          req.SQL,
		Fingerprints: fps,
		Approver:     req.Approver,
		Reason:       req.Reason,
		Database:     req.Database,
		User:         req.User,
		CreatedAt:    now,
		ExpiresAt:    now.Add(req.TTL),
	}}
	snap := p.snapshotLocked(now)
	if err := s.emit(Event{Type: EventPreApprovalCreated, Time: now, PreApproval: &snap, Actor: req.Approver, Reason: req.Reason}); err != nil {
		return nil, fmt.Errorf("pre-approval %w (%v); nothing was registered", ErrNotRecorded, err)
	}

	s.pmu.Lock()
	s.purgeLocked(now)
	if _, dup := s.pre[p.info.ID]; dup {
		s.pmu.Unlock()
		return nil, fmt.Errorf("pre-approval id %s collides with an existing one", p.info.ID)
	}
	s.pre[p.info.ID] = p
	for _, fp := range fps {
		s.byFP[fp] = append(s.byFP[fp], p)
	}
	s.pmu.Unlock()

	s.log.Info("pre-approval created", "preapproval", snap.ID, "approver", snap.Approver,
		"statements", len(fps), "database", snap.Database, "user", snap.User, "expires_at", snap.ExpiresAt)
	return &snap, nil
}

// Match returns an active pre-approval for a statement with this
// fingerprint run by user in database: not revoked, not expired (by the
// Store's clock: it stops matching exactly at its expiry), its limits
// respected. When several match, the one that lasts longest is returned.
// Match records nothing: once the proxy has decided to let the statement
// (or the whole message) through, it must call MarkUsed.
func (s *Store) Match(fingerprint, user, database string) (*PreApproval, bool) {
	now := s.clock.Now()
	s.pmu.RLock()
	defer s.pmu.RUnlock()
	var best *PreApproval
	for _, p := range s.byFP[fingerprint] {
		if (p.info.User != "" && p.info.User != user) || (p.info.Database != "" && p.info.Database != database) {
			continue
		}
		p.mu.Lock()
		if p.activeLocked(now) && (best == nil || p.info.ExpiresAt.After(best.ExpiresAt)) {
			snap := p.snapshotLocked(now)
			best = &snap
		}
		p.mu.Unlock()
	}
	return best, best != nil
}

// MarkUsed records that pre-approval id let u through: the
// preapproval_used event and the metric. Call it before forwarding the
// statement. Errors: ErrNotFound, ErrNotPending (revoked or expired since
// Match), ErrNotRecorded (the audit log refused the event). On any error
// the statement must not run.
func (s *Store) MarkUsed(id string, u Usage) error {
	s.pmu.RLock()
	p := s.pre[id]
	s.pmu.RUnlock()
	if p == nil {
		return fmt.Errorf("pre-approval %s: %w", id, ErrNotFound)
	}
	p.mu.Lock()
	now := s.clock.Now()
	if !p.activeLocked(now) {
		st := p.snapshotLocked(now).Status
		p.mu.Unlock()
		return fmt.Errorf("pre-approval %s is %w: it is %s", id, ErrNotPending, st)
	}
	snap := p.snapshotLocked(now)
	snap.Uses++
	snap.LastUsedAt = now
	if err := s.emit(Event{Type: EventPreApprovalUsed, Time: now, PreApproval: &snap, Use: &u,
		Actor: snap.Approver, Reason: snap.Reason}); err != nil {
		p.mu.Unlock()
		return fmt.Errorf("use of pre-approval %s %w (%v)", id, ErrNotRecorded, err)
	}
	p.info.Uses++
	p.info.LastUsedAt = now
	p.mu.Unlock()
	s.m.PreapprovalsUsed.Inc()
	s.log.Info("pre-approval used", "preapproval", id, "approver", snap.Approver, "user", u.User,
		"database", u.Database, "session", u.SessionID, "fingerprint", u.Fingerprint)
	return nil
}

// ListPreApprovals returns active pre-approvals and those that expired or
// were revoked recently, oldest first.
func (s *Store) ListPreApprovals() []PreApproval {
	now := s.clock.Now()
	s.pmu.Lock()
	s.purgeLocked(now)
	ps := make([]*preApproval, 0, len(s.pre))
	for _, p := range s.pre {
		ps = append(ps, p)
	}
	s.pmu.Unlock()
	out := make([]PreApproval, len(ps))
	for i, p := range ps {
		p.mu.Lock()
		out[i] = p.snapshotLocked(now)
		p.mu.Unlock()
	}
	slices.SortFunc(out, func(a, b PreApproval) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

// GetPreApproval returns pre-approval id.
func (s *Store) GetPreApproval(id string) (*PreApproval, error) {
	s.pmu.RLock()
	p := s.pre[id]
	s.pmu.RUnlock()
	if p == nil {
		return nil, fmt.Errorf("pre-approval %s: %w", id, ErrNotFound)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	snap := p.snapshotLocked(s.clock.Now())
	return &snap, nil
}

// Revoke ends pre-approval id at once. Revoking only makes pgmoat
// stricter, so it stands even if the audit log refuses the event (that is
// logged). Errors: ErrInvalid (no name), ErrNotFound, ErrNotPending
// (already revoked or expired).
func (s *Store) Revoke(id, by string) (*PreApproval, error) {
	if by == "" {
		return nil, fmt.Errorf("%w: the revoker's name is required", ErrInvalid)
	}
	s.pmu.RLock()
	p := s.pre[id]
	s.pmu.RUnlock()
	if p == nil {
		return nil, fmt.Errorf("pre-approval %s: %w", id, ErrNotFound)
	}
	p.mu.Lock()
	now := s.clock.Now()
	if !p.activeLocked(now) {
		st := p.snapshotLocked(now).Status
		p.mu.Unlock()
		return nil, fmt.Errorf("pre-approval %s is %w: it is already %s", id, ErrNotPending, st)
	}
	p.info.RevokedAt = now
	p.info.RevokedBy = by
	snap := p.snapshotLocked(now)
	if err := s.emit(Event{Type: EventPreApprovalRevoked, Time: now, PreApproval: &snap, Actor: by}); err != nil {
		s.log.Error("pre-approval revoked but the event could not be recorded", "preapproval", id, "err", err)
	}
	p.mu.Unlock()
	s.log.Info("pre-approval revoked", "preapproval", id, "by", by)
	return &snap, nil
}

// purgeLocked forgets pre-approvals that ended more than KeepEndedFor ago.
func (s *Store) purgeLocked(now time.Time) {
	cutoff := now.Add(-s.keepEndedFor)
	for id, p := range s.pre {
		p.mu.Lock()
		end := p.info.ExpiresAt
		if !p.info.RevokedAt.IsZero() && p.info.RevokedAt.Before(end) {
			end = p.info.RevokedAt
		}
		p.mu.Unlock()
		if end.After(cutoff) {
			continue
		}
		delete(s.pre, id)
		for _, fp := range p.info.Fingerprints {
			rest := slices.DeleteFunc(s.byFP[fp], func(q *preApproval) bool { return q == p })
			if len(rest) == 0 {
				delete(s.byFP, fp)
			} else {
				s.byFP[fp] = rest
			}
		}
	}
}
