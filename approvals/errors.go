package approvals

import "errors"

// Errors returned by the Store. They are wrapped with the id concerned; test
// with errors.Is. The admin API maps them to HTTP status codes.
var (
	// ErrNotFound: no hold or pre-approval has this id (or it ended so long
	// ago that it was forgotten). HTTP 404.
	ErrNotFound = errors.New("not found")
	// ErrNotPending: the hold already ended, or the pre-approval expired or
	// was revoked. HTTP 409.
	ErrNotPending = errors.New("no longer pending")
	// ErrAlreadyApproved: this approver already approved this hold; a
	// second approval must come from someone else. HTTP 409.
	ErrAlreadyApproved = errors.New("already approved")
	// ErrInvalid: a required field is missing or out of range. HTTP 400.
	ErrInvalid = errors.New("invalid request")
	// ErrNotRecorded: Options.OnEvent (the audit log) refused the event, so
	// the change was not made: nothing pgmoat lets through goes unrecorded.
	// HTTP 503.
	ErrNotRecorded = errors.New("could not be recorded in the audit log")
	// ErrClosed: the store is shutting down.
	ErrClosed = errors.New("approvals store is closed")
)

// Causes the proxy passes to context.WithCancelCause when a waiting client
// gives up; they become the withdrawn hold's resolution text. Any other
// cause works too.
var (
	ErrClientCancel     = errors.New("client sent a cancel request")
	ErrClientDisconnect = errors.New("client disconnected")
)
