// Package enforce connects the policy (rules) to live sessions (proxy): it
// is the proxy.Interceptor that judges every statement a client sends and
// carries out the decision on the wire, records it in the audit log and
// counts it in the metrics.
//
// # Where statements are checked
//
//   - Query: every statement of the message; the message runs whole or not at all.
//   - Parse: the statement text (with $n parameters, whose values pgmoat
//     never sees and treats as possibly true).
//   - Bind of a statement prepared with SQL PREPARE: judged as EXECUTE of it,
//     under the policy in force now.
//   - FunctionCall: opaque.
//
// Messages reach enforcement decoded by proxy (ClientMessage's
// accessors), and each message type is handled in one place
// (sessionState.handle) for both of the proxy's paths: on its event loop
// (TryIntercept), where nothing may block, the statements the policy
// allows and the messages that need no decision are settled, and
// everything else (a statement to block, hold or log, a FunctionCall, a
// Bind to judge again) is given up, with nothing changed, to Intercept on
// the session's own goroutine.
//
// Session state that changes what later text means (search_path, role,
// prepared statements, transactions) is applied when the server confirms
// the statement ran: the CommandComplete of each statement of a Query,
// the CommandComplete of an Execute, the transaction status of every
// ReadyForQuery. A client that pipelines a message behind one whose state
// change is not yet confirmed has that message judged as if search_path
// were unknown, the strictest assumption, so that neither a SET that fails
// nor one that succeeds can be used to smuggle a statement past pgmoat.
//
// A prepared statement is what the server holds under its name, which a
// Parse or Close does not always change: a Parse of a name in use fails,
// and after an error the server skips everything up to the next Sync. So
// the statements a session has change at the server's ParseComplete and
// CloseComplete (statements.go); a Bind after a Parse or Close of its
// statement in the same batch is judged by that message's statement (if
// the message fails, the server skips the Bind too), and one after an
// earlier batch's, not yet answered, waits for the answer. Portals are
// the server's too: a cursor (DECLAREd, or opened by a function) is a
// portal an Execute message can run, so an Execute of a named portal that
// no Bind pgmoat saw made in the transaction is judged as opaque.
//
// # Decisions on the wire
//
//   - allow, log: forwarded (log is written to the audit log first; if it
//     cannot be written the statement is refused: fail closed).
//   - block: the server itself raises the error, through a DO block that
//     pgmoat sends instead of the statement (RAISE ... ERRCODE 42501, with
//     the statement, the protected object, the rule and a hint). So the
//     client sees exactly what PostgreSQL does after any error: an explicit
//     transaction is aborted (a later COMMIT rolls back), and in the
//     extended protocol everything up to the next Sync is discarded.
//   - hold: nothing is forwarded; the client gets a NoticeResponse with the
//     hold id and how to approve it, and the session waits. Approved: the
//     statement is forwarded. Denied or timed out: as block, with the
//     reason. Ctrl-C (CancelRequest): the hold is withdrawn and the client
//     gets 57014. Disconnect: the hold is withdrawn. A statement that would
//     be held inside a transaction block is blocked at once with a hint to
//     pre-approve (holds.in_transaction: block, the default), because it
//     may hold locks while it waits; or held with the shorter
//     holds.in_transaction_timeout (holds.in_transaction: hold).
//   - verify: the statement may reach a protected table in a way only
//     running it tells (rules.Verify). pgmoat runs it itself under guard
//     (guarded.go for the simple Query, statement run by statement run with
//     PostgreSQL's semantics for transaction control in a message kept;
//     guarded_ext.go for the Execute of an extended-protocol portal): in its
//     own transaction, or a savepoint in the client's, between two
//     snapshots of the protected tables (the guard package; snapshot.go
//     prepares the query once per session), with its reply held back. What
//     guard.Compare measures is judged by the policy: nothing refused,
//     it commits and the client gets its reply; else it is rolled back and
//     blocked, or held with the measured blast radius (approval runs it
//     again, unguarded). Afterwards the session's search_path is taken from
//     the server, since code pgmoat does not follow may have changed it.
//   - A statement that would be held, blocked or verified passes at once
//     when every such statement of the message matches an active
//     pre-approval; the use is audited before it is forwarded.
package enforce
