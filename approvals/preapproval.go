package approvals

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
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
	// PreApprovalExhausted: its use limit (max_uses) is reached.
	PreApprovalExhausted = "exhausted"
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
	// MaxUses, when positive, is how many statements it lets through in
	// all; each is counted once, across every instance.
	MaxUses int
}

// PreApproval is a snapshot of a pre-approval, as the admin API shows it.
type PreApproval struct {
	ID           string    `json:"id"`
	Status       string    `json:"status"` // active, expired, revoked, exhausted
	SQL          string    `json:"sql"`
	Fingerprints []string  `json:"fingerprints"`
	Approver     string    `json:"approver"`
	Reason       string    `json:"reason"`
	Database     string    `json:"database,omitempty"`
	User         string    `json:"user,omitempty"`
	CreatedAt    time.Time `json:"created_at"`
	ExpiresAt    time.Time `json:"expires_at"`
	Uses         int       `json:"uses"`
	MaxUses      int       `json:"max_uses,omitempty"`
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

// activeAt reports whether p lets statements through at now: not revoked,
// not expired (it stops matching exactly at its expiry), uses left.
func (p *PreApproval) activeAt(now time.Time) bool {
	return p.RevokedAt.IsZero() && now.Before(p.ExpiresAt) && (p.MaxUses == 0 || p.Uses < p.MaxUses)
}

// admits reports whether p's user and database limits admit a session.
func (p *PreApproval) admits(user, database string) bool {
	return (p.User == "" || p.User == user) && (p.Database == "" || p.Database == database)
}

// endedAt returns when p stopped or stops matching: revoked, used up, or
// expired, whichever came first.
func (p *PreApproval) endedAt() time.Time {
	end := p.ExpiresAt
	if !p.RevokedAt.IsZero() && p.RevokedAt.Before(end) {
		end = p.RevokedAt
	}
	if p.MaxUses > 0 && p.Uses >= p.MaxUses && !p.LastUsedAt.IsZero() && p.LastUsedAt.Before(end) {
		end = p.LastUsedAt
	}
	return end
}

// withStatus returns a copy of p with Status as of now.
func withStatus(p PreApproval, now time.Time) PreApproval {
	p = clonePre(p)
	switch {
	case !p.RevokedAt.IsZero():
		p.Status = PreApprovalRevoked
	case p.MaxUses > 0 && p.Uses >= p.MaxUses:
		p.Status = PreApprovalExhausted
	case !now.Before(p.ExpiresAt):
		p.Status = PreApprovalExpired
	default:
		p.Status = PreApprovalActive
	}
	return p
}

// PreApprove registers req. Errors: ErrInvalid (missing approver or
// reason, TTL or use limit out of range, SQL that does not parse or holds
// no statement), ErrNotRecorded (the audit log refused it; nothing is
// registered), ErrUnavailable.
func (s *Store) PreApprove(req PreApprovalRequest) (*PreApproval, error) {
	if err := checkActor(req.Approver, req.Reason); err != nil {
		return nil, err
	}
	if req.TTL <= 0 || req.TTL > MaxPreApprovalTTL {
		return nil, fmt.Errorf("%w: ttl must be between 1s and %s, got %s", ErrInvalid, MaxPreApprovalTTL, req.TTL)
	}
	if req.MaxUses < 0 {
		return nil, fmt.Errorf("%w: the use limit must be 0 (no limit) or more, got %d", ErrInvalid, req.MaxUses)
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
	p := PreApproval{
		ID:           newID(),
		SQL:          req.SQL,
		Fingerprints: fps,
		Approver:     req.Approver,
		Reason:       req.Reason,
		Database:     req.Database,
		User:         req.User,
		MaxUses:      req.MaxUses,
		CreatedAt:    now,
		ExpiresAt:    now.Add(req.TTL),
	}
	snap := withStatus(p, now)
	var recErr error
	err = s.b.CreatePreApproval(p, func() error {
		recErr = s.emit(Event{Type: EventPreApprovalCreated, Time: now, PreApproval: &snap, Actor: req.Approver, Reason: req.Reason})
		return recErr
	})
	if recErr != nil {
		return nil, fmt.Errorf("pre-approval %w (%v); nothing was registered", ErrNotRecorded, recErr)
	}
	if err != nil {
		return nil, err
	}
	s.log.Info("pre-approval created", "preapproval", snap.ID, "approver", snap.Approver,
		"statements", len(fps), "database", snap.Database, "user", snap.User, "max_uses", snap.MaxUses, "expires_at", snap.ExpiresAt)
	return &snap, nil
}

// Match returns an active pre-approval for a statement with this
// fingerprint run by user in database: not revoked, not expired (by the
// Store's clock: it stops matching exactly at its expiry), not used up,
// its limits respected. When several match, the one that lasts longest is
// returned. Match records nothing: once the proxy has decided to let the
// statement (or the whole message) through, it must call MarkUsed. When
// the Backend cannot be reached nothing matches (fail closed).
func (s *Store) Match(fingerprint, user, database string) (*PreApproval, bool) {
	now := s.clock.Now()
	p, ok, err := s.b.MatchPreApproval(fingerprint, user, database, now)
	if err != nil {
		s.log.Warn("pre-approvals could not be read; the statement is judged without them", "err", err)
		return nil, false
	}
	if !ok {
		return nil, false
	}
	snap := withStatus(p, now)
	return &snap, true
}

// MarkUsed records that pre-approval id let u through: the
// preapproval_used event and the metric. Call it before forwarding the
// statement. A pre-approval with a use limit is consumed exactly once per
// call, across every instance sharing the Backend. Errors: ErrNotFound,
// ErrNotPending (revoked, expired or used up since Match), ErrNotRecorded
// (the audit log refused the event), ErrUnavailable. On any error the
// statement must not run.
func (s *Store) MarkUsed(id string, u Usage) error {
	p, err := s.b.UpdatePreApproval(id, func(p *PreApproval) (bool, error) {
		now := s.clock.Now()
		if !p.activeAt(now) {
			return false, fmt.Errorf("pre-approval %s is %w: it is %s", id, ErrNotPending, withStatus(*p, now).Status)
		}
		p.Uses++
		p.LastUsedAt = now
		snap := withStatus(*p, now)
		if err := s.emit(Event{Type: EventPreApprovalUsed, Time: now, PreApproval: &snap, Use: &u,
			Actor: snap.Approver, Reason: snap.Reason}); err != nil {
			return false, fmt.Errorf("use of pre-approval %s %w (%v)", id, ErrNotRecorded, err)
		}
		return true, nil
	})
	if err != nil {
		return err
	}
	s.m.PreapprovalsUsed.Inc()
	s.log.Info("pre-approval used", "preapproval", id, "approver", p.Approver, "user", u.User,
		"database", u.Database, "session", u.SessionID, "fingerprint", u.Fingerprint, "uses", p.Uses, "max_uses", p.MaxUses)
	return nil
}

// ListPreApprovals returns active pre-approvals and those that ended
// recently, oldest first.
func (s *Store) ListPreApprovals() ([]PreApproval, error) {
	now := s.clock.Now()
	ps, err := s.b.ListPreApprovals(now.Add(-s.keepEndedFor))
	if err != nil {
		return nil, err
	}
	for i := range ps {
		ps[i] = withStatus(ps[i], now)
	}
	slices.SortFunc(ps, func(a, b PreApproval) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return ps, nil
}

// GetPreApproval returns pre-approval id.
func (s *Store) GetPreApproval(id string) (*PreApproval, error) {
	p, err := s.b.GetPreApproval(id)
	if err != nil {
		return nil, err
	}
	snap := withStatus(p, s.clock.Now())
	return &snap, nil
}

// Revoke ends pre-approval id at once. Revoking only makes pgmoat
// stricter, so it stands even if the audit log refuses the event (that is
// logged). Errors: ErrInvalid (no name), ErrNotFound, ErrNotPending
// (already revoked, expired or used up), ErrUnavailable.
func (s *Store) Revoke(id, by string) (*PreApproval, error) {
	if by == "" {
		return nil, fmt.Errorf("%w: the revoker's name is required", ErrInvalid)
	}
	var snap PreApproval
	_, err := s.b.UpdatePreApproval(id, func(p *PreApproval) (bool, error) {
		now := s.clock.Now()
		if !p.activeAt(now) {
			return false, fmt.Errorf("pre-approval %s is %w: it is already %s", id, ErrNotPending, withStatus(*p, now).Status)
		}
		p.RevokedAt = now
		p.RevokedBy = by
		snap = withStatus(*p, now)
		if err := s.emit(Event{Type: EventPreApprovalRevoked, Time: now, PreApproval: &snap, Actor: by}); err != nil {
			s.log.Error("pre-approval revoked but the event could not be recorded", "preapproval", id, "err", err)
		}
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	s.log.Info("pre-approval revoked", "preapproval", id, "by", by)
	return &snap, nil
}
