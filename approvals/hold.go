package approvals

import (
	"fmt"
	"strings"
	"sync"
	"time"
)

// Status is where a hold is in its life.
type Status string

// Hold statuses. Every status but StatusPending is final.
const (
	StatusPending   Status = "pending"
	StatusApproved  Status = "approved"
	StatusDenied    Status = "denied"
	StatusTimedOut  Status = "timed_out"
	StatusWithdrawn Status = "withdrawn"
)

// Request describes a statement the proxy holds.
type Request struct {
	// Statement is the SQL text as the client sent it.
	Statement string
	// Fingerprints are the statement's rules.Fingerprints, so that an
	// approver can pre-approve the same statement for next time.
	Fingerprints []string
	User         string
	Database     string
	Application  string
	// Client is the client's address (host or host:port).
	Client    string
	SessionID string
	// Rule is the name of the policy rule that held the statement, and
	// Reason the sentence explaining it ("DROP TABLE on protected table
	// billing.invoices").
	Rule   string
	Reason string
	// BlastRadius is what the statement would do, measured, as a sentence
	// ("would delete 1,204,331 of 1,204,331 rows of public.users"); empty
	// when unknown.
	BlastRadius string
	// Timeout, when positive, replaces holds.timeout for this hold; the
	// proxy passes holds.in_transaction_timeout inside a transaction.
	Timeout time.Duration
}

// Approval is one approver's yes.
type Approval struct {
	Approver string    `json:"approver"`
	Reason   string    `json:"reason"`
	At       time.Time `json:"at"`
}

// HoldInfo is a snapshot of a hold, as the admin API shows it.
type HoldInfo struct {
	ID           string   `json:"id"`
	Status       Status   `json:"status"`
	Statement    string   `json:"statement"`
	Fingerprints []string `json:"fingerprints"`
	User         string   `json:"user"`
	Database     string   `json:"database"`
	Application  string   `json:"application"`
	Client       string   `json:"client"`
	SessionID    string   `json:"session_id"`
	Rule         string   `json:"rule"`
	Reason       string   `json:"reason"`
	BlastRadius  string   `json:"blast_radius,omitempty"`
	// Instance is the pgmoat instance that holds the statement (the
	// client's connection), with state.dsn; empty otherwise.
	Instance          string     `json:"instance,omitempty"`
	CreatedAt         time.Time  `json:"created_at"`
	ExpiresAt         time.Time  `json:"expires_at"`
	Approvals         []Approval `json:"approvals"`
	ApprovalsRequired int        `json:"approvals_required"`
	// ResolvedAt, ResolvedBy and Resolution say how the hold ended:
	// who denied it and why, "timed out after 15m0s", the reason it was
	// withdrawn. Empty while pending.
	ResolvedAt time.Time `json:"resolved_at,omitzero"`
	ResolvedBy string    `json:"resolved_by,omitempty"`
	Resolution string    `json:"resolution,omitempty"`
}

// Outcome is how a hold ended, as Wait reports it.
type Outcome struct {
	Status Status
	// Approvals are the approvals given (all of them for StatusApproved;
	// for other outcomes, those given before the hold ended).
	Approvals []Approval
	// By is who denied the hold (StatusDenied).
	By string
	// Reason is the denier's reason, or why the hold timed out or was
	// withdrawn.
	Reason string
	// Waited is how long the hold was pending.
	Waited time.Duration
}

// Approvers returns the names of the approvers, in the order they approved.
func (o Outcome) Approvers() []string {
	names := make([]string, len(o.Approvals))
	for i, a := range o.Approvals {
		names[i] = a.Approver
	}
	return names
}

// String describes the outcome in a sentence fit for a client error message.
func (o Outcome) String() string {
	switch o.Status {
	case StatusApproved:
		return "approved by " + strings.Join(o.Approvers(), ", ")
	case StatusDenied:
		return fmt.Sprintf("denied by %s: %s", o.By, o.Reason)
	case StatusTimedOut:
		return o.Reason
	case StatusWithdrawn:
		return "withdrawn: " + o.Reason
	}
	return string(o.Status)
}

// Hold is a statement this process holds: the Store gets it from
// Store.Create and waits on it with Store.Wait. Its record (HoldInfo) is in
// the Store's Backend, where any instance may approve or end it; the Hold
// itself is where the waiting happens.
type Hold struct {
	id        string
	expiresAt time.Time
	required  int
	howTo     string
	// created is the record as it was created, for ending the hold here
	// when the Backend cannot be reached.
	created HoldInfo

	// done is closed when the hold leaves StatusPending; final is then
	// its record as it ended.
	done chan struct{}

	mu    sync.Mutex
	final HoldInfo
	timer Timer
}

// ID returns the hold's id: random, unguessable, 16 hex digits.
func (h *Hold) ID() string { return h.id }

// ExpiresAt returns when the hold times out.
func (h *Hold) ExpiresAt() time.Time { return h.expiresAt }

// ApprovalsRequired returns how many distinct approvers must approve it.
func (h *Hold) ApprovalsRequired() int { return h.required }

// HowToApprove returns a short instruction naming the hold, for the notice
// the proxy sends the waiting client, e.g.
// "pgmoat holds approve 3f2a… --reason '…' (or POST https://…/approve)".
func (h *Hold) HowToApprove() string { return h.howTo }

// end records the hold's final state and releases its waiter; it reports
// false when the hold had already ended.
func (h *Hold) end(info HoldInfo) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.final.Status != "" {
		return false
	}
	h.final = cloneHold(info)
	if h.timer != nil {
		h.timer.Stop()
	}
	close(h.done)
	return true
}

// outcome reads the final state; call only after done is closed.
func (h *Hold) outcome() Outcome {
	h.mu.Lock()
	defer h.mu.Unlock()
	f := h.final
	return Outcome{
		Status:    f.Status,
		Approvals: append([]Approval(nil), f.Approvals...),
		By:        f.ResolvedBy,
		Reason:    f.Resolution,
		Waited:    f.ResolvedAt.Sub(f.CreatedAt),
	}
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
