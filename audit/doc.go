// Package audit owns pgmoat's audit log: the record of what every session
// tried and what pgmoat decided, written so that it can be trusted after
// the fact. It owns the line format, the hash chain that makes edits
// evident, the single writer that puts lines in the file, rotation, and
// Verify (`pgmoat audit verify`).
//
// # Format
//
// JSON Lines: one event per line, fields in a fixed order, empty fields
// left out. For example (wrapped here):
//
//	{"time":"2025-01-02T03:04:05.123456Z","event":"decision","session_id":"7f3a…",
//	 "user":"app","database":"shop","application":"psql","client":"10.0.0.7:51234",
//	 "statement":"DROP TABLE orders","fingerprint":"…","operations":["drop"],
//	 "objects":["public.orders"],"decision":"block","rule":"protect-orders",
//	 "reason":"DROP TABLE on protected table public.orders",
//	 "prev_hash":"9c1e…","hash":"04b7…"}
//
// time is RFC 3339 in UTC with microseconds. event is one of the Kind
// constants: session_start, session_end (end_reason says why, error with
// what), decision (every log, block or hold verdict), statement (every
// allowed statement, only with audit.statements: all), hold_created,
// hold_approval_added (one approval of several required), hold_approved,
// hold_denied, hold_timed_out, hold_withdrawn,
// preapproval_created, preapproval_used, preapproval_revoked,
// config_loaded, config_changed (how a reload changes protection, in
// changes, written before it takes effect) and config_reload_failed. The
// other fields are those of Event. No field can carry a password, a
// password hash or a cancel key:
// Event has none, and the proxy never puts protocol secrets in the others.
// With audit.redact, statement holds pg_query's normalized text (literals
// replaced by $1, $2, …); a statement that does not parse is recorded as
// "<unparseable statement redacted>", never raw.
//
// # Hash chain
//
// Every line ends with ,"seq":N,"prev_hash":"…","hash":"…"}. hash is the
// hex SHA-256 of the line's bytes from its opening brace up to and
// including the closing quote of prev_hash — everything but the hash field
// itself and the newline. prev_hash is the hash of the line before; the
// first line of a chain has Genesis (64 zeros), and also "genesis":true
// (just before seq) and seq 1; seq counts the chain's lines. The hash is
// taken over the bytes as written, not over a re-encoding, so Verify needs
// no JSON canonicalization and any byte changed anywhere in a line changes
// its hash: editing, removing, inserting or reordering lines breaks the
// chain at the first line concerned, and `verify --from-genesis`
// (VerifyOptions.FromGenesis) also catches lines cut from the start.
// Lines written before sequence numbers have neither seq nor the genesis
// mark and still verify; the first line written after them has seq 1.
//
// The chain is not a signature: someone who can rewrite the file can
// recompute every hash after the point they change. Its head (the last
// line's seq and hash) is on /metrics as pgmoat_audit_chain_head_sequence
// {hash="…"}, in verify's report, and in pgmoat's operational log when the
// file is reopened or closed; recording it somewhere else (a Prometheus
// server scraping it does), or shipping lines off the host as they are
// written, anchors the chain: a log rewritten, or cut off at the end, no
// longer reaches a head recorded earlier, which no chain can show by
// itself (nor a last line turned into a fragment before a restart, which
// amounts to the same).
//
// # Bounds
//
// A client controls its statements' text, up to limits.max_message_size.
// Statement text longer than audit.max_statement_bytes (16 KiB by default)
// is cut at a character boundary, with statement_bytes and
// statement_sha256 recording the whole text's length and hash (of the
// normalized text with audit.redact, which normalizes at most 1 MiB and
// records a placeholder beyond); objects and fingerprints are cut to the
// same size (objects_total, fingerprints_total give the counts); reason,
// error and approval_reason to 4 KiB. So one event costs the audit disk a
// few tens of KiB at most.
//
// The chain survives restarts and rotation. Open reads the existing
// file's last complete line and continues from its hash. Reopen (on SIGHUP
// or SIGUSR1, after logrotate renamed the file; use logrotate's create
// mode, not copytruncate, which loses lines) opens the path again and the
// new file's first line chains from the old file's last line, kept in
// memory. Verify checks several files in order as one chain. A log
// rotated while pgmoat is stopped starts again from Genesis and Verify
// reports that restart. With audit.path "-" (stdout) the chain starts
// from Genesis at each start.
//
// # Writing and flush policy
//
// One goroutine owns the file. Events are encoded (and redacted) on the
// caller's goroutine, queued in a bounded FIFO (audit.queue_size), then
// sealed into the chain and buffered by the writer, in queue order, so the
// chain's order is the file's order. The writer hands its buffer to the
// operating system with a single write(2):
//
//   - at once when a Record, Flush or Reopen call is waiting: Record
//     returns only after its line, and every line queued before it, has
//     been written. Concurrent Records share one write (group commit);
//   - when 64 KiB are buffered;
//   - otherwise audit.flush_interval (default 200ms) after the first
//     buffered event, so an asynchronous event reaches the file within
//     that time;
//   - and on Close.
//
// There is no fsync. A line handed to the kernel survives pgmoat crashing,
// panicking or being killed, which are the failures the audit log must
// outlive; only a kernel crash or power loss can lose it. Syncing each
// durable event would put a disk flush (milliseconds, far more on network
// disks) in front of every block and hold, and a per-interval sync would
// not change what a power loss loses. Where a power loss must not lose
// audit lines, ship them off the host (stdout to a log collector).
//
// An event's time is when it was recorded (Record or RecordAsync was
// called); lines are in the order the writer took them from the queue,
// which for one goroutine is the order of its calls.
//
// Record is for events that must be in the log before something happens:
// a block or hold decision before the client hears of it, an approval
// before the held statement is forwarded. RecordAsync is for events that
// must not slow traffic (allowed statements, session start and end): it
// never waits, and when the queue is full it drops the event, counts it in
// pgmoat_audit_events_dropped_total{reason="queue_full"} and warns (at
// most every ten seconds).
//
// On a configuration reload, Apply changes audit.statements, audit.redact,
// audit.max_statement_bytes and audit.flush_interval for the next event;
// audit.path and audit.queue_size need a restart.
//
// # Failures
//
// When a write fails (disk full, I/O error, the file deleted and its
// directory gone), Record returns a *WriteError and the caller refuses the
// statement (fail closed); pgmoat_audit_write_errors_total counts the
// failure, it is logged (at most every ten seconds), and Healthy reports
// false until a write succeeds again. Asynchronous events in the failed
// write are lost and counted with reason write_error. Every later event
// retries, so the log recovers as soon as the disk has room.
//
// A failed write must not break the chain. Lines that reached the file
// whole stay written and chained; the chain continues from the last of
// them. The torn rest of a line is cut off the file (truncating by the
// number of bytes the failed write put there), so the next line starts
// clean. Where that is impossible (stdout), the next write starts with a
// newline: the fragment sits on a line of its own that no line chains
// from, and Verify lists it as outside the chain without failing, because
// the chain demonstrably continues across it. A file deleted while open is
// noticed before the next write and created again, chaining on.
package audit
