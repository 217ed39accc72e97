// Package state owns pgmoat's control database (state.dsn): the
// PostgreSQL schema where several pgmoat instances keep the records of
// holds, their approvals, and pre-approvals with their uses, so that any
// instance can show and decide what any other holds. Backend implements
// approvals.Backend over it.
//
// What is shared, and what is not: a held statement waits on the client's
// connection, inside the instance that accepted it. The record of the hold
// is shared; an approval given on instance B changes the record, and
// instance A, which holds the statement, learns of it and releases it.
//
//	instance A (holds the client)         control database            instance B (approver)
//	Create: INSERT hold, audit, COMMIT ──▶ holds row (pending)
//	                                                              ◀── UPDATE … FOR UPDATE, audit, COMMIT
//	                                       NOTIFY pgmoat_<schema> ──▶ (B sees its own change too)
//	LISTEN ◀────────────────────────────── hold:<id>
//	re-read the row: approved → forward the statement
//
// Every change is one transaction that locks the row it changes (SELECT
// … FOR UPDATE) for the whole decision, including the audit write, and
// sends a notification on commit. So two instances never both decide one
// hold, and a pre-approval with a use limit is consumed exactly once.
//
// Notifications: each instance keeps one connection that LISTENs. When it
// is lost, the instance reads its pending holds again every
// state.poll_interval until it is back, and once more then, so that no
// approval is missed, only delayed.
//
// Leases: each instance has a row in instances and renews its lease every
// third of state.lease. An instance whose lease has expired is taken for
// dead: the others withdraw its pending holds (its clients' connections
// died with it), and say so in their audit logs. An instance that cannot
// renew its own lease in time withdraws its own holds, since the others
// will. A new process with the instance id of a live lease waits for the
// lease to expire (a restart after a crash) and gives up with an error if
// it is renewed meanwhile (two instances configured with one id).
//
// Schema: created and migrated at start, under an advisory lock so that
// instances starting together migrate once. schema_version holds the
// version; a pgmoat that finds a newer version than it knows refuses to
// start rather than write records it does not understand.
//
// Failures: an operation that cannot reach the database within
// state.timeout returns an error wrapping approvals.ErrUnavailable, counted
// in pgmoat_state_errors_total{op}; pgmoat_state_up is 0 until an
// operation succeeds again. The approvals Store then refuses new holds and
// approvals (fail closed); statements the policy allows never touch the
// control database.
package state
