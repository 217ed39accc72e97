package approvals

import (
	"errors"
	"time"
)

// Backend keeps the records of holds and pre-approvals: the Store's own
// memory (the default, one instance) or a control database shared by
// several pgmoat instances (package state). The Store decides every
// transition; a Backend only stores records and makes each change atomic:
// while fn runs on a record, no other change to that record, from this
// process or another, can start.
//
// Every method may fail with an error wrapping ErrUnavailable when the
// records cannot be reached; the Store then refuses what needs them (fail
// closed).
type Backend interface {
	// CreateHold stores a new pending hold. record is called once the
	// hold is ready to be stored and before anyone else can see it; an
	// error from it stores nothing and is returned as is.
	CreateHold(h HoldInfo, record func() error) error
	// UpdateHold locks hold id and calls fn with a copy of it. When fn
	// reports a change, the copy as fn left it is stored, even if fn also
	// returns an error; otherwise nothing is. It returns the hold as
	// stored after the call and fn's error. ErrNotFound when there is no
	// such hold.
	UpdateHold(id string, fn func(h *HoldInfo) (changed bool, err error)) (HoldInfo, error)
	// GetHold returns hold id, or ErrNotFound.
	GetHold(id string) (HoldInfo, error)
	// GetHolds returns those of the holds named that exist, in any order.
	GetHolds(ids []string) ([]HoldInfo, error)
	// ListHolds returns every pending hold and, of those that ended after
	// endedSince, the maxEnded that ended last; in any order.
	ListHolds(endedSince time.Time, maxEnded int) ([]HoldInfo, error)

	// CreatePreApproval stores p, calling record as CreateHold does.
	CreatePreApproval(p PreApproval, record func() error) error
	// UpdatePreApproval is UpdateHold for pre-approvals.
	UpdatePreApproval(id string, fn func(p *PreApproval) (changed bool, err error)) (PreApproval, error)
	// MatchPreApproval returns, of the pre-approvals that cover the
	// fingerprint, that are active at now (not revoked, not expired,
	// uses left) and whose user and database limits admit user and
	// database, the one that expires last.
	MatchPreApproval(fingerprint, user, database string, now time.Time) (PreApproval, bool, error)
	// GetPreApproval returns pre-approval id, or ErrNotFound.
	GetPreApproval(id string) (PreApproval, error)
	// ListPreApprovals returns the pre-approvals that are active or ended
	// after endedSince, in any order.
	ListPreApprovals(endedSince time.Time) ([]PreApproval, error)

	// Watch sets the function told of every change, whoever made it; the
	// Store calls it once, before any other method. It is called from the
	// goroutine that made the change (memory) or from the backend's own
	// (a shared one), never with a record locked.
	Watch(func(Change))
	// Close releases what the Backend holds (a shared one gives up its
	// instance's lease). The Store calls it last.
	Close() error
}

// ChangeKind says what a Change is about.
type ChangeKind string

// Change kinds.
const (
	// ChangeHold: hold ID changed (created, approved, ended, …).
	ChangeHold ChangeKind = "hold"
	// ChangePreApproval: pre-approval ID changed.
	ChangePreApproval ChangeKind = "preapproval"
	// ChangeResync: changes may have been missed (a shared backend lost
	// its notifications for a while): read again whatever matters.
	ChangeResync ChangeKind = "resync"
	// ChangeOrphaned: hold ID is pending but the instance that holds its
	// statement stopped renewing its lease, so its client is gone with
	// it; Reason says which instance and since when. The Store withdraws
	// it.
	ChangeOrphaned ChangeKind = "orphaned"
	// ChangeLeaseLost: this instance could not renew its own lease in
	// time, so other instances may withdraw its holds at any moment;
	// Reason says why. The Store withdraws them itself (fail closed).
	ChangeLeaseLost ChangeKind = "lease_lost"
)

// Change is one notification from a Backend, or from the Store to its
// subscribers.
type Change struct {
	Kind   ChangeKind
	ID     string
	Reason string
	// Hold is the hold as the change left it, when the backend has it at
	// hand (the memory backend does); nil otherwise.
	Hold *HoldInfo
}

// ErrUnavailable: the records could not be reached (the control database
// is down or unreachable). New holds, approvals and pre-approvals are
// refused until it is back. HTTP 503.
var ErrUnavailable = errors.New("the control database is unavailable")

// UnavailableError wraps the cause of an ErrUnavailable.
type UnavailableError struct {
	Op  string // what was attempted: "store the hold", "read the holds", …
	Err error
}

func (e *UnavailableError) Error() string {
	return "could not " + e.Op + ": " + ErrUnavailable.Error() + ": " + e.Err.Error()
}

// Unwrap returns both the sentinel and the cause.
func (e *UnavailableError) Unwrap() []error { return []error{ErrUnavailable, e.Err} }
