package approvals

import "time"

// EventType names an approvals event for the audit log.
type EventType string

// Event types passed to Options.OnEvent.
const (
	EventHoldCreated   EventType = "hold_created"
	EventHoldApproval  EventType = "hold_approval_added" // one of several required approvals; the hold stays pending
	EventHoldApproved  EventType = "hold_approved"       // the last required approval: the statement is released
	EventHoldDenied    EventType = "hold_denied"
	EventHoldTimedOut  EventType = "hold_timed_out"
	EventHoldWithdrawn EventType = "hold_withdrawn"

	EventPreApprovalCreated EventType = "preapproval_created"
	EventPreApprovalUsed    EventType = "preapproval_used"
	EventPreApprovalRevoked EventType = "preapproval_revoked"
)

// Event is one change to a hold or a pre-approval, handed to
// Options.OnEvent synchronously, before the change takes effect for
// hold_created, hold_approval_added, hold_approved, preapproval_created and
// preapproval_used: an error from OnEvent for those refuses the change
// (ErrNotRecorded). Denials, timeouts, withdrawals and revocations only make
// pgmoat stricter, so they happen even when OnEvent fails; the failure is
// logged.
type Event struct {
	Type EventType
	Time time.Time
	// Hold is the hold as this event leaves it (hold events only).
	Hold *HoldInfo
	// PreApproval is the pre-approval concerned (pre-approval events only).
	PreApproval *PreApproval
	// Use is the statement a pre-approval let through (preapproval_used).
	Use *Usage
	// Actor is the token name of who acted: approver, denier, creator or
	// revoker of a pre-approval. Empty for timeouts and withdrawals.
	Actor string
	// Reason is the actor's reason, or why the hold timed out or was
	// withdrawn.
	Reason string
}
