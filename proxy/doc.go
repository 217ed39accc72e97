// Package proxy owns pgmoat's wire: the listener, one ClientSession per
// client, the startup, TLS and authentication relay, cancel routing,
// message framing and decoding, and the seam (Interceptor) where
// enforcement inspects client messages before they reach PostgreSQL.
//
// A session, from accept to close:
//
//	client                      pgmoat                          PostgreSQL
//	  |-- GSSENCRequest -------->|  'N' (no GSSAPI)                   |
//	  |-- SSLRequest ----------->|  'S' + TLS handshake (tls.cert),   |
//	  |                          |  or 'N' when none is configured    |
//	  |-- StartupMessage ------->|  admit (limits.max_connections)    |
//	  |                          |-- dial, SSLRequest per sslmode --->|
//	  |                          |-- StartupMessage (all params) ---->|
//	  |<-- Authentication* ------|<-----------------------------------|  relayed; -PLUS
//	  |-- password / SASL ------>|---------------------------------->|  mechanisms removed
//	  |<-- ParameterStatus, BackendKeyData (registered), ReadyForQuery
//	  |                          |                                    |
//	  |== clientToServer: frame, check size, [Interceptor], forward ==>|
//	  |<= serverToClient: relay raw bytes, track ReadyForQuery ========|
//	  |-- Terminate ------------>|-- Terminate ---------------------->|
//
// Everything from accept to the first ReadyForQuery must finish within
// limits.startup_timeout; the dial and upstream TLS handshake within
// limits.connect_timeout. A CancelRequest arrives on a connection of its
// own: pgmoat looks the key up among its sessions (the key is the server's
// BackendKeyData, passed through unchanged) and forwards it to that
// session's upstream; the secret is never logged.
//
// In the steady state a session with plain sockets on both sides runs in
// one of the Server's event loops (loop_linux.go): a level-triggered epoll
// shared by many sessions, limits.event_loops threads (by default one per
// two CPUs pgmoat may use: internal/cpulimit), started with the first
// session and stopped by Shutdown. Each turn reads once from every socket
// that is readable, then relays every whole message with the same
// per-message code as the goroutines below (servers' replies first, then
// clients' messages: clientToServer.step, serverToClient.step), then
// writes once per session and direction, sending the messages it forwards unchanged from
// the read buffer they arrived in (msgWriter, writer.go). While its sessions are busy a loop waits for them
// in epoll_wait on a thread of its own; after 50 ms with nothing to do it
// parks in the Go runtime's poller. It asks the Interceptor through
// TryIntercept, which must not block. A
// message larger than the buffer, a message TryIntercept gives up on, a
// peer that stops reading, or the end of the session takes the session
// out of the loop for good: its net.Conns are restored and the goroutines
// carry on from the same buffers.
//
// Otherwise (TLS, not Linux, the loop turned off with limits.event_loops:
// 0, or after the loop handed the session over) each direction has its own
// goroutine (clientToServer, serverToClient). Both write into buffered
// writers and flush only when their reader has no more buffered input, so
// a pipelined batch leaves in one write. Messages larger than the read
// buffer are streamed through, not assembled, unless the interceptor must
// see them whole: then they are read into a buffer of their own, the only
// copy (ClientMessage.Text), bounded by limits.max_message_size each and
// by limits.message_memory for all sessions together (budget.go: a session
// past it waits, then ends with 53200; the memory is returned to the
// system afterwards). A smaller message stays in the read buffer while the
// interceptor handles it, which may read its text there without a copy
// (ClientMessage.Borrow) and copies only what it keeps. Only
// ReadyForQuery, ParameterStatus and ErrorResponse are decoded on the way
// back.
//
// Every connection ends with exactly one EndReason, logged at info:
//
//   - client_terminate: the client sent Terminate; it is forwarded.
//   - client_disconnect: the client closed or broke the connection; the
//     server gets a Terminate (as it does after protocol_violation,
//     interceptor_error and refused).
//   - server_fatal: the server sent a FATAL error (relayed) and closed.
//   - upstream_lost: the upstream connection failed without a FATAL; the
//     client gets FATAL 08006 "upstream connection lost".
//   - protocol_violation: the client sent an oversized, malformed or
//     unknown message, or broke the startup rules; it gets FATAL 08P01.
//     Other sessions are not affected.
//   - upstream_protocol: the server sent something pgmoat cannot frame;
//     the client gets FATAL 08P01.
//   - interceptor_error: the Interceptor failed; the client gets FATAL
//     XX000 and the message is not forwarded.
//   - refused: the Interceptor refused the session or a message with
//     Refuse; the client gets the FATAL error it chose.
//   - shutdown: Shutdown's drain timeout expired; the client gets FATAL
//     57P01, a query still running is cancelled and the server gets a
//     Terminate.
//   - startup_timeout: startup or authentication outlasted
//     limits.startup_timeout (the client gets FATAL 08006 when it was the
//     server that stalled).
//   - tls_error: the client's TLS handshake failed.
//   - too_many_connections: limits.max_connections sessions are open; the
//     client gets FATAL 53300.
//   - draining: the client finished its startup after Shutdown began; it
//     gets FATAL 57P01.
//   - upstream_unreachable: dialling the upstream or its TLS handshake
//     failed; the client gets FATAL 08006 within limits.connect_timeout.
//   - auth_failed: the server refused the session (bad password, no such
//     database, ...); its own FATAL error is relayed as is.
//   - auth_unsupported: GSSAPI/SSPI, or SCRAM channel binding that cannot
//     cross pgmoat's TLS termination; the client gets FATAL 28000 with a
//     hint.
//   - cancel_request: the connection carried a CancelRequest.
//   - replication: the startup packet asked for a replication connection
//     (replication=true or database), whose commands and streams pgmoat
//     cannot judge; the client gets FATAL 0A000 at once, before pgmoat
//     dials the upstream.
//
// Enforcement plugs in through Options.Interceptor, so that the wire knows
// nothing of policy: every client message except CopyData passes through
// Interceptor.Intercept on the client→server goroutine, which may forward,
// drop or replace it (a MessageVerdict) and discard the client's messages
// up to its next Sync. ClientMessage decodes what enforcement reads (a
// statement's text, a Bind's names) without copying. Messages pgmoat
// injects have their replies kept from the client by replyQueue, a FIFO of
// outstanding replies that the client→server side pushes and the
// server→client side pops; without an interceptor neither costs anything.
// An Interceptor may also observe the replies to the messages it tagged
// (ReplyObserver), hook session start and end (SessionHooks, with
// ClientSession.StartupQuery before the client's first ReadyForQuery),
// hold a message while ClientSession.WatchClient notices a disconnect,
// and take over a CancelRequest with ClientSession.SetCancelHook.
//
// From Intercept, an Interceptor may also hold a conversation of its own
// with the server on the session's connection (ClientSession.NewExchange,
// exchange.go): requests whose replies are hidden, collected for it, held
// back for the client until it releases them, or passed on, each routed
// by the same replyQueue. Enforcement runs guarded statements this way
// (a savepoint, snapshots before and after, the client's statement with
// its reply held back); the client sees only what the Interceptor lets
// through, and the ReadyForQuery it sends.
package proxy
