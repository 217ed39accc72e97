package audit

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"time"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// Kind names what an audit line records; it is the line's "event" field.
type Kind string

// The kinds of audit event. Every line carries one of these.
const (
	SessionStart Kind = "session_start"
	SessionEnd   Kind = "session_end"
	// Decision records a non-allow verdict (log, block or hold) on a statement.
	Decision Kind = "decision"
	// Statement records an allowed statement; it is written only with
	// audit.statements: all, and discarded otherwise.
	Statement Kind = "statement"

	HoldCreated Kind = "hold_created"
	// HoldApprovalAdded records one approval of a hold that needs more
	// (holds.approvals_required > 1); the hold stays pending.
	HoldApprovalAdded Kind = "hold_approval_added"
	// HoldApproved records the approval that releases the statement.
	HoldApproved  Kind = "hold_approved"
	HoldDenied    Kind = "hold_denied"
	HoldTimedOut  Kind = "hold_timed_out"
	HoldWithdrawn Kind = "hold_withdrawn"

	PreapprovalCreated Kind = "preapproval_created"
	PreapprovalUsed    Kind = "preapproval_used"
	PreapprovalRevoked Kind = "preapproval_revoked"

	ConfigLoaded Kind = "config_loaded"
	// ConfigChanged records how a reload changes protection (Changes),
	// written before the new configuration takes effect.
	ConfigChanged      Kind = "config_changed"
	ConfigReloadFailed Kind = "config_reload_failed"
)

// kinds lists every Kind, in the order the package documentation gives them.
var kinds = [...]Kind{
	SessionStart, SessionEnd, Decision, Statement,
	HoldCreated, HoldApprovalAdded, HoldApproved, HoldDenied, HoldTimedOut, HoldWithdrawn,
	PreapprovalCreated, PreapprovalUsed, PreapprovalRevoked,
	ConfigLoaded, ConfigChanged, ConfigReloadFailed,
}

func (k Kind) valid() bool {
	for _, v := range kinds {
		if k == v {
			return true
		}
	}
	return false
}

// Event is one audit record. Fields left at their zero value are omitted
// from the line, except Time (filled from the Logger's clock when zero) and
// Kind (required).
//
// There is deliberately no field for a password, a password hash, or the
// secret key of a CancelRequest: nothing the proxy learns during
// authentication or cancellation can reach the audit log through this type.
// Callers must not put statement text or its literals in fields other than
// Statement either, because only Statement is redacted.
type Event struct {
	Time time.Time // written as RFC 3339 in UTC with microseconds
	Kind Kind      // "event"
	// Instance names the pgmoat instance that wrote the event; the
	// Logger fills it from Options.Instance (set with state.dsn).
	Instance string

	// The session the event concerns (empty for config and pre-approval
	// management events).
	SessionID   string
	User        string
	Database    string
	Application string
	Client      string // client address, host:port

	// Statement is the SQL text; with audit.redact its literals are
	// replaced by $n placeholders (pg_query's Normalize). Bytes that are
	// not UTF-8 are written as U+FFFD, as JSON requires. Text longer than
	// audit.max_statement_bytes is cut (at a character boundary), and
	// StatementBytes and StatementSHA256 then describe the whole text.
	Statement string
	// StatementBytes and StatementSHA256 (hex) are the length and hash of
	// the whole statement text when Statement was cut; the Logger sets
	// them, and ignores what the caller puts there.
	StatementBytes  int
	StatementSHA256 string

	Fingerprint string   // pg_query fingerprint of Statement
	Operations  []string // e.g. drop, truncate, delete_all
	Objects     []string // qualified names the operations touch
	// ObjectsTotal is how many objects there were when the Logger cut
	// Objects (their names would exceed audit.max_statement_bytes).
	ObjectsTotal int
	Decision     string // allow, log, block, hold
	Rule         string // the policy rule that decided
	Reason       string // human sentence: why the rule matched, why a hold was withdrawn, ...

	HoldID string
	// BlastRadius is what a held statement would do, measured
	// ("would delete 1,204,331 of 1,204,331 rows of public.users").
	BlastRadius   string
	PreapprovalID string
	Fingerprints  []string // the fingerprints a pre-approval covers
	// FingerprintsTotal is how many fingerprints there were when the
	// Logger cut Fingerprints, as it cuts Objects.
	FingerprintsTotal int
	ExpiresAt         time.Time // when a hold or pre-approval expires
	Approvers         []string  // names of the tokens that approved, denied, created or revoked
	ApprovalReason    string    // the reason the approver gave

	// Duration is the session's length (session_end), the time a hold
	// waited (hold_*), or the statement's run time when known.
	Duration  time.Duration
	EndReason string // why a session ended (session_end)
	Error     string // the error that ended a session, or that a reload failed with

	// PolicyHash fingerprints the protection in force after a
	// config_loaded or config_changed event (pgmoat_policy_info's hash).
	PolicyHash string
	// Changes lists how a reload changes protection (config_changed), one
	// sentence each; those that lower it end with "(lowers protection)".
	Changes []string

	// Genesis, Seq, PrevHash and Hash are set by ReadFile from the line's
	// chain fields; the Logger computes them and ignores what the caller
	// puts here. Seq is 0 on lines written before sequence numbers.
	Genesis  bool
	Seq      uint64
	PrevHash string
	Hash     string
}

// TimeFormat is the layout of the time and expires_at fields: RFC 3339 in
// UTC with exactly six fractional digits.
const TimeFormat = "2006-01-02T15:04:05.000000Z07:00"

// wireEvent is Event as it appears on a line, in line order. Its field
// names are the audit log's public format: changing one breaks every reader.
type wireEvent struct {
	Time              string   `json:"time"`
	Event             Kind     `json:"event"`
	Instance          string   `json:"instance,omitempty"`
	SessionID         string   `json:"session_id,omitempty"`
	User              string   `json:"user,omitempty"`
	Database          string   `json:"database,omitempty"`
	Application       string   `json:"application,omitempty"`
	Client            string   `json:"client,omitempty"`
	Statement         string   `json:"statement,omitempty"`
	StatementBytes    int      `json:"statement_bytes,omitempty"`
	StatementHash     string   `json:"statement_sha256,omitempty"`
	Fingerprint       string   `json:"fingerprint,omitempty"`
	Operations        []string `json:"operations,omitempty"`
	Objects           []string `json:"objects,omitempty"`
	ObjectsTotal      int      `json:"objects_total,omitempty"`
	Decision          string   `json:"decision,omitempty"`
	Rule              string   `json:"rule,omitempty"`
	Reason            string   `json:"reason,omitempty"`
	HoldID            string   `json:"hold_id,omitempty"`
	BlastRadius       string   `json:"blast_radius,omitempty"`
	PreapprovalID     string   `json:"preapproval_id,omitempty"`
	Fingerprints      []string `json:"fingerprints,omitempty"`
	FingerprintsTotal int      `json:"fingerprints_total,omitempty"`
	ExpiresAt         string   `json:"expires_at,omitempty"`
	Approvers         []string `json:"approvers,omitempty"`
	ApprovalReason    string   `json:"approval_reason,omitempty"`
	DurationMS        float64  `json:"duration_ms,omitempty"`
	EndReason         string   `json:"end_reason,omitempty"`
	Error             string   `json:"error,omitempty"`
	PolicyHash        string   `json:"policy_hash,omitempty"`
	Changes           []string `json:"changes,omitempty"`
	// The chain fields are appended by seal, never marshalled: they stay
	// empty (and so omitted) when encoding and are filled when decoding.
	Genesis  bool   `json:"genesis,omitempty"`
	Seq      uint64 `json:"seq,omitempty"`
	PrevHash string `json:"prev_hash,omitempty"`
	Hash     string `json:"hash,omitempty"`
}

// unparseableRedacted replaces a statement that audit.redact could not
// normalize: recording the raw text would leak the literals redaction
// exists to hide.
const unparseableRedacted = "<unparseable statement redacted>"

// redact returns sql with its literals replaced by $n placeholders.
func redact(sql string) string {
	n, err := pg_query.Normalize(sql)
	if err != nil {
		return unparseableRedacted
	}
	return n
}

// encode marshals ev as a JSON object without the chain fields. It runs on
// the caller's goroutine, so the queue holds bytes the caller can no longer
// change (Operations and the other slices may be reused after Record returns).
func encode(ev *Event) ([]byte, error) {
	w := wireEvent{
		Time:              ev.Time.UTC().Format(TimeFormat),
		Event:             ev.Kind,
		Instance:          ev.Instance,
		SessionID:         ev.SessionID,
		User:              ev.User,
		Database:          ev.Database,
		Application:       ev.Application,
		Client:            ev.Client,
		Statement:         ev.Statement,
		StatementBytes:    ev.StatementBytes,
		StatementHash:     ev.StatementSHA256,
		Fingerprint:       ev.Fingerprint,
		Operations:        ev.Operations,
		Objects:           ev.Objects,
		ObjectsTotal:      ev.ObjectsTotal,
		Decision:          ev.Decision,
		Rule:              ev.Rule,
		Reason:            ev.Reason,
		HoldID:            ev.HoldID,
		BlastRadius:       ev.BlastRadius,
		PreapprovalID:     ev.PreapprovalID,
		Fingerprints:      ev.Fingerprints,
		FingerprintsTotal: ev.FingerprintsTotal,
		Approvers:         ev.Approvers,
		ApprovalReason:    ev.ApprovalReason,
		DurationMS:        float64(ev.Duration.Microseconds()) / 1000,
		EndReason:         ev.EndReason,
		Error:             ev.Error,
		PolicyHash:        ev.PolicyHash,
		Changes:           ev.Changes,
	}
	if !ev.ExpiresAt.IsZero() {
		w.ExpiresAt = ev.ExpiresAt.UTC().Format(TimeFormat)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	// Statements are full of < > &; \u003c in an audit line helps no one.
	enc.SetEscapeHTML(false)
	if err := enc.Encode(&w); err != nil {
		return nil, fmt.Errorf("audit: encode %s event: %w", ev.Kind, err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// decode parses one line (without its newline) into an Event. It does not
// check the chain: Verify does.
func decode(line []byte) (Event, error) {
	var w wireEvent
	if err := json.Unmarshal(line, &w); err != nil {
		return Event{}, err
	}
	ev := Event{
		Kind:              w.Event,
		Instance:          w.Instance,
		SessionID:         w.SessionID,
		User:              w.User,
		Database:          w.Database,
		Application:       w.Application,
		Client:            w.Client,
		Statement:         w.Statement,
		StatementBytes:    w.StatementBytes,
		StatementSHA256:   w.StatementHash,
		Fingerprint:       w.Fingerprint,
		Operations:        w.Operations,
		Objects:           w.Objects,
		ObjectsTotal:      w.ObjectsTotal,
		Decision:          w.Decision,
		Rule:              w.Rule,
		Reason:            w.Reason,
		HoldID:            w.HoldID,
		BlastRadius:       w.BlastRadius,
		PreapprovalID:     w.PreapprovalID,
		Fingerprints:      w.Fingerprints,
		FingerprintsTotal: w.FingerprintsTotal,
		Approvers:         w.Approvers,
		ApprovalReason:    w.ApprovalReason,
		Duration:          time.Duration(math.Round(w.DurationMS*1000)) * time.Microsecond,
		EndReason:         w.EndReason,
		Error:             w.Error,
		PolicyHash:        w.PolicyHash,
		Changes:           w.Changes,
		Genesis:           w.Genesis,
		Seq:               w.Seq,
		PrevHash:          w.PrevHash,
		Hash:              w.Hash,
	}
	var err error
	if ev.Time, err = time.Parse(time.RFC3339Nano, w.Time); err != nil {
		return Event{}, fmt.Errorf("time: %w", err)
	}
	if w.ExpiresAt != "" {
		if ev.ExpiresAt, err = time.Parse(time.RFC3339Nano, w.ExpiresAt); err != nil {
			return Event{}, fmt.Errorf("expires_at: %w", err)
		}
	}
	return ev, nil
}

// ReadFile returns the events of an audit file, in order, with their
// chain fields. It does not verify the chain (Verify does); it fails on a
// line that is not an event, such as a fragment left by a failed write.
// Tests and tools that inspect the log use it.
func ReadFile(path string) ([]Event, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var evs []Event
	err = forEachLine(f, func(no int, line []byte) error {
		ev, err := decode(line)
		if err != nil {
			return &LineError{File: path, Line: no, Err: err}
		}
		evs = append(evs, ev)
		return nil
	})
	return evs, err
}
