// Package approvals owns the state of pgmoat's human-approval workflow:
// statements held until people approve them, and pre-approvals that let a
// reviewed migration through without anyone watching. It does no I/O of its
// own besides the optional webhook; the proxy creates and waits on holds,
// and the admin package exposes them over HTTP.
//
// A hold goes through exactly one of these transitions, whichever happens
// first, and never another:
//
//	pending → approved   holds.approvals_required distinct approvers said yes
//	pending → denied     any one approver said no
//	pending → timed_out  its expiry passed (holds.timeout, or the shorter
//	                     timeout the proxy asks for inside a transaction)
//	pending → withdrawn  the waiting client cancelled or went away, the
//	                     store was closed, or (shared state) the instance
//	                     holding it stopped renewing its lease
//
// The final approval is handed to Options.OnEvent (the audit log) before the
// hold is released; if that fails, the approval is refused and the hold
// stays pending, so no statement runs unrecorded. An approval that arrives
// after the hold ended is an error, never a late release.
//
// Where the records live is a Backend: this process's memory by default
// (memory.go), or a control database shared by several instances (package
// state). Either way the Store decides every transition while the Backend
// holds the record's lock, so one decision wins, and the event is recorded
// before the change is stored. A statement waits in the process that holds
// its client (a Hold, with a done channel); a decision made elsewhere
// reaches it through the Backend's Watch. When the Backend cannot be
// reached, new holds, approvals and pre-approval uses are refused
// (ErrUnavailable); ends that only refuse happen anyway and are stored
// later. Subscribe streams changes to the console.
//
// Each record has its own lock and each hold a done channel: waiting holds
// no lock, and thousands of pending holds cost a map entry, a runtime timer
// and a blocked goroutine each, nothing that slows other sessions.
package approvals
