package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgmoat/pgmoat/config"
	"github.com/pgmoat/pgmoat/metrics"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// testConfig is the default audit configuration writing to a file in a
// fresh temporary directory.
func testConfig(t testing.TB) config.Audit {
	return cfgFor(filepath.Join(t.TempDir(), "audit.log"))
}

// cfgFor is the default audit configuration writing to path.
func cfgFor(path string) config.Audit {
	cfg := config.Default().Audit
	cfg.Path = path
	return cfg
}

func newTextLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// logBuffer collects what the writer goroutine logs while a test reads it.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// openTest opens a Logger on cfg with fresh metrics and closes it at the
// end of the test.
func openTest(t testing.TB, cfg config.Audit, opts Options) (*Logger, *metrics.Metrics) {
	t.Helper()
	if opts.Metrics == nil {
		opts.Metrics = metrics.New(nil)
	}
	l, err := Open(cfg, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l, opts.Metrics
}

func record(t testing.TB, l *Logger, ev Event) {
	t.Helper()
	if err := l.Record(context.Background(), ev); err != nil {
		t.Fatalf("Record(%s): %v", ev.Kind, err)
	}
}

// readLines returns the file's lines without their newlines.
func readLines(t testing.TB, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
}

func mustVerify(t testing.TB, paths ...string) Result {
	t.Helper()
	res, err := Verify(paths...)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if !res.OK() {
		t.Fatalf("Verify: chain broken: %v", res.Break)
	}
	return res
}

// fullEvent has every field set, so that a round trip shows each one.
func fullEvent(kind Kind) Event {
	return Event{
		Time:           time.Date(2025, 3, 4, 5, 6, 7, 123456789, time.FixedZone("CET", 3600)),
		Kind:           kind,
		SessionID:      "s-1",
		User:           "app",
		Database:       "shop",
		Application:    "psql",
		Client:         "10.0.0.7:51234",
		Statement:      "DROP TABLE orders; -- <&> \"quoted\"\n",
		Fingerprint:    "0123abcd",
		Operations:     []string{"drop"},
		Objects:        []string{"public.orders"},
		Decision:       "hold",
		Rule:           "protect-orders",
		Reason:         "DROP TABLE on protected table public.orders",
		HoldID:         "h-42",
		PreapprovalID:  "p-7",
		Fingerprints:   []string{"0123abcd", "4567ef01"},
		ExpiresAt:      time.Date(2025, 3, 4, 5, 21, 7, 0, time.UTC),
		Approvers:      []string{"alice", "bob"},
		ApprovalReason: "ticket OPS-1",
		Duration:       1234567 * time.Microsecond,
		EndReason:      "client_terminated",
		Error:          "connection reset by peer",
		PolicyHash:     "3f2a9c0d1e4b5a67",
		Changes:        []string{"protection removed: billing.* (lowers protection)"},
	}
}

func TestEventsRoundTripThroughFile(t *testing.T) {
	cfg := testConfig(t)
	l, m := openTest(t, cfg, Options{})
	for _, k := range kinds {
		if k == Statement {
			continue // needs audit.statements: all, see TestStatementsRecordedOnlyWithAll
		}
		record(t, l, fullEvent(k))
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	evs, err := ReadFile(cfg.Path)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != len(kinds)-1 {
		t.Fatalf("read %d events, want %d", len(evs), len(kinds)-1)
	}
	for i, ev := range evs {
		want := fullEvent(ev.Kind)
		want.Time = want.Time.UTC().Truncate(time.Microsecond)
		want.ExpiresAt = want.ExpiresAt.UTC()
		if i == 0 && ev.PrevHash != Genesis {
			t.Errorf("first line prev_hash = %q, want Genesis", ev.PrevHash)
		}
		if i > 0 && ev.PrevHash != evs[i-1].Hash {
			t.Errorf("line %d prev_hash = %q, want previous hash %q", i+1, ev.PrevHash, evs[i-1].Hash)
		}
		if ev.Seq != uint64(i+1) || ev.Genesis != (i == 0) {
			t.Errorf("line %d: seq %d, genesis %v; want seq %d, genesis only on the first line", i+1, ev.Seq, ev.Genesis, i+1)
		}
		want.PrevHash, want.Hash, want.Seq, want.Genesis = ev.PrevHash, ev.Hash, ev.Seq, ev.Genesis
		if !eventsEqual(ev, want) {
			t.Errorf("line %d:\n got  %+v\n want %+v", i+1, ev, want)
		}
		if got := testutil.ToFloat64(m.AuditEvents.WithLabelValues(string(ev.Kind))); got != 1 {
			t.Errorf("pgmoat_audit_events_total{event=%q} = %v, want 1", ev.Kind, got)
		}
	}
	mustVerify(t, cfg.Path)
}

func eventsEqual(a, b Event) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb) && a.Time.Equal(b.Time) && a.ExpiresAt.Equal(b.ExpiresAt)
}

// TestLineFormat pins what other tools parse: field names, their order,
// the time layout and the chain fields at the end.
func TestLineFormat(t *testing.T) {
	cfg := testConfig(t)
	l, _ := openTest(t, cfg, Options{})
	record(t, l, fullEvent(HoldApproved))
	record(t, l, Event{Kind: SessionEnd, SessionID: "s-2"})
	l.Close()

	lines := readLines(t, cfg.Path)
	wantOrder := []string{"time", "event", "session_id", "user", "database", "application", "client",
		"statement", "fingerprint", "operations", "objects", "decision", "rule", "reason", "hold_id",
		"preapproval_id", "fingerprints", "expires_at", "approvers", "approval_reason", "duration_ms",
		"end_reason", "error", "policy_hash", "changes", "genesis", "seq", "prev_hash", "hash"}
	last := -1
	for _, k := range wantOrder {
		i := strings.Index(lines[0], `"`+k+`":`)
		if i <= last {
			t.Fatalf("field %q missing or out of order in %s", k, lines[0])
		}
		last = i
	}
	var fields map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &fields); err != nil {
		t.Fatal(err)
	}
	if len(fields) != len(wantOrder) {
		t.Errorf("line has %d fields, want %d: %s", len(fields), len(wantOrder), lines[0])
	}
	if got, want := fields["time"], "2025-03-04T04:06:07.123456Z"; got != want {
		t.Errorf("time = %v, want %v (UTC, microseconds)", got, want)
	}
	if got := fields["duration_ms"]; got != 1234.567 {
		t.Errorf("duration_ms = %v, want 1234.567", got)
	}
	if !strings.Contains(lines[0], `-- <&> \"quoted\"\n"`) {
		t.Errorf("statement not written as plain JSON (no HTML escaping): %s", lines[0])
	}

	// Empty fields are left out; time and the chain fields never are
	// (genesis only on a chain's first line).
	re := regexp.MustCompile(`^\{"time":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z","event":"session_end","session_id":"s-2","seq":2,"prev_hash":"[0-9a-f]{64}","hash":"[0-9a-f]{64}"\}$`)
	if !re.MatchString(lines[1]) {
		t.Errorf("minimal line = %s", lines[1])
	}
}

func TestClockStampsEventsWithoutTime(t *testing.T) {
	cfg := testConfig(t)
	now := time.Date(2030, 1, 2, 3, 4, 5, 6000, time.UTC)
	l, _ := openTest(t, cfg, Options{Clock: func() time.Time { return now }})
	record(t, l, Event{Kind: ConfigLoaded})
	l.Close()
	evs, err := ReadFile(cfg.Path)
	if err != nil {
		t.Fatal(err)
	}
	if !evs[0].Time.Equal(now) {
		t.Errorf("time = %v, want the clock's %v", evs[0].Time, now)
	}
}

func TestRedact(t *testing.T) {
	cfg := testConfig(t)
	cfg.Redact = true
	cfg.Statements = "all"
	l, _ := openTest(t, cfg, Options{})
	record(t, l, Event{Kind: Decision, Statement: "DELETE FROM users WHERE email = 'alice@example.com' AND id = 42"})
	l.RecordAsync(Event{Kind: Statement, Statement: "SELECT * FROM cards WHERE number = '4111111111111111'"})
	record(t, l, Event{Kind: Decision, Statement: "DELETE FROM users WHERE secret = 'hunter2' AND (("})
	l.Close()

	data, err := os.ReadFile(cfg.Path)
	if err != nil {
		t.Fatal(err)
	}
	// (Numbers are checked through the statements below: the hashes are
	// full of digits.)
	for _, secret := range []string{"alice@example.com", "'4111111111111111'", "hunter2"} {
		if bytes.Contains(data, []byte(secret)) {
			t.Errorf("redacted log contains the literal %q:\n%s", secret, data)
		}
	}
	evs, err := ReadFile(cfg.Path)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"DELETE FROM users WHERE email = $1 AND id = $2",
		"SELECT * FROM cards WHERE number = $1",
		"<unparseable statement redacted>",
	}
	for i, ev := range evs {
		if ev.Statement != want[i] {
			t.Errorf("statement %d = %q, want %q", i, ev.Statement, want[i])
		}
	}
}

func TestStatementsRecordedOnlyWithAll(t *testing.T) {
	for _, mode := range []string{"decisions", "all"} {
		t.Run(mode, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.Statements = mode
			l, _ := openTest(t, cfg, Options{})
			if got := l.AllStatements(); got != (mode == "all") {
				t.Errorf("AllStatements() = %v", got)
			}
			l.RecordAsync(Event{Kind: Statement, Statement: "SELECT 1", Decision: "allow"})
			record(t, l, Event{Kind: Statement, Statement: "SELECT 2", Decision: "allow"})
			record(t, l, Event{Kind: Decision, Statement: "DROP TABLE t", Decision: "block"})
			l.Close()
			evs, err := ReadFile(cfg.Path)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, ev := range evs {
				got = append(got, string(ev.Kind)+":"+ev.Statement)
			}
			want := "decision:DROP TABLE t"
			if mode == "all" {
				want = "statement:SELECT 1,statement:SELECT 2,decision:DROP TABLE t"
			}
			if strings.Join(got, ",") != want {
				t.Errorf("events = %v, want %s", got, want)
			}
		})
	}
}

func TestUnknownKindRefused(t *testing.T) {
	l, _ := openTest(t, testConfig(t), Options{})
	if err := l.Record(context.Background(), Event{Kind: "dropped_table"}); err == nil {
		t.Fatal("Record accepted an unknown event kind")
	}
	if err := l.Record(context.Background(), Event{}); err == nil {
		t.Fatal("Record accepted an event without a kind")
	}
}

func TestDisabledLoggerAcceptsEverything(t *testing.T) {
	cfg := config.Default().Audit
	cfg.Path = ""
	cfg.Statements = "all" // nothing to write them to: still not recorded
	l, err := Open(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Apply(cfg); err != nil {
		t.Fatalf("Apply of the same settings: %v", err)
	}
	var nilLogger *Logger
	for _, l := range []*Logger{l, nilLogger} {
		if err := l.Record(context.Background(), Event{Kind: Decision, Decision: "block"}); err != nil {
			t.Errorf("Record on a disabled logger: %v", err)
		}
		l.RecordAsync(Event{Kind: SessionStart})
		if !l.Healthy() || l.AllStatements() {
			t.Errorf("disabled logger: Healthy=%v AllStatements=%v", l.Healthy(), l.AllStatements())
		}
		if err := l.Reopen(); err != nil {
			t.Error(err)
		}
		if err := l.Close(); err != nil {
			t.Error(err)
		}
	}
}

func TestRecordAfterClose(t *testing.T) {
	cfg := testConfig(t)
	l, m := openTest(t, cfg, Options{})
	l.Close()
	if err := l.Record(context.Background(), Event{Kind: Decision}); err != ErrClosed {
		t.Errorf("Record after Close = %v, want ErrClosed", err)
	}
	l.RecordAsync(Event{Kind: SessionEnd})
	if got := testutil.ToFloat64(m.AuditEventsDropped.WithLabelValues("closed")); got != 1 {
		t.Errorf("dropped{closed} = %v, want 1", got)
	}
}

func TestApplyReloadedConfig(t *testing.T) {
	cfg := testConfig(t)
	l, _ := openTest(t, cfg, Options{})
	l.RecordAsync(Event{Kind: Statement, Statement: "SELECT 'before'"})

	next := cfg
	next.Statements = "all"
	next.Redact = true
	if err := l.Apply(next); err != nil {
		t.Fatal(err)
	}
	l.RecordAsync(Event{Kind: Statement, Statement: "SELECT 'after'"})

	moved := next
	moved.Path += ".elsewhere"
	moved.QueueSize++
	moved.Redact = false
	err := l.Apply(moved)
	if err == nil || !strings.Contains(err.Error(), "audit.path and audit.queue_size") {
		t.Errorf("Apply with a new path and queue size = %v", err)
	}
	l.RecordAsync(Event{Kind: Statement, Statement: "SELECT 'unredacted'"})
	l.Close()

	if got := statements(t, cfg.Path); got != "SELECT $1,SELECT 'unredacted'" {
		t.Errorf("statements = %s", got)
	}
	if _, err := os.Stat(moved.Path); err == nil {
		t.Error("Apply opened the new path")
	}
}
