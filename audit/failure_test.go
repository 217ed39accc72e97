package audit

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// faults controls the sinks a test Logger writes to: how many bytes a
// write may put in the file before failing with ENOSPC, whether the torn
// part can be truncated, and whether writes block.
type faults struct {
	mu         sync.Mutex
	budget     int  // bytes accepted before ENOSPC; < 0 for no limit
	noTruncate bool // dropTail fails, as on stdout
	block      chan struct{}
	entered    chan struct{}
}

func newFaults() *faults { return &faults{budget: -1} }

func (f *faults) setBudget(n int) {
	f.mu.Lock()
	f.budget = n
	f.mu.Unlock()
}

// options returns Options whose sinks are the real files at the path,
// wrapped in f.
func (f *faults) options(opts Options) Options {
	opts.openSink = func(path string) (sink, tailState, error) {
		s, st, err := openPath(path)
		if err != nil {
			return nil, st, err
		}
		return &faultySink{sink: s, f: f}, st, nil
	}
	return opts
}

type faultySink struct {
	sink
	f *faults
}

func (s *faultySink) Write(p []byte) (int, error) {
	s.f.mu.Lock()
	block, entered := s.f.block, s.f.entered
	s.f.mu.Unlock()
	if block != nil {
		entered <- struct{}{}
		<-block
	}
	s.f.mu.Lock()
	defer s.f.mu.Unlock()
	if s.f.budget < 0 {
		return s.sink.Write(p)
	}
	if len(p) <= s.f.budget {
		s.f.budget -= len(p)
		return s.sink.Write(p)
	}
	n, _ := s.sink.Write(p[:s.f.budget])
	s.f.budget = 0
	return n, syscall.ENOSPC
}

func (s *faultySink) dropTail(n int64) error {
	if s.f.noTruncate {
		return errors.New("cannot truncate")
	}
	return s.sink.dropTail(n)
}

func fileSize(t testing.TB, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func statements(t testing.TB, path string) string {
	t.Helper()
	evs, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var s []string
	for _, ev := range evs {
		s = append(s, ev.Statement)
	}
	return strings.Join(s, ",")
}

func TestWriteFailureFailsClosedAndRecovers(t *testing.T) {
	cfg := testConfig(t)
	f := newFaults()
	var logs logBuffer
	l, m := openTest(t, cfg, f.options(Options{Logger: newTextLogger(&logs)}))
	ctx := context.Background()

	record(t, l, Event{Kind: Decision, Statement: "DROP TABLE a"})
	before := fileSize(t, cfg.Path)

	// The disk fills up in the middle of the next line.
	f.setBudget(10)
	err := l.Record(ctx, Event{Kind: Decision, Statement: "DROP TABLE b"})
	var we *WriteError
	if !errors.As(err, &we) || !errors.Is(err, syscall.ENOSPC) || we.Path != cfg.Path {
		t.Fatalf("Record on a full disk = %v, want a *WriteError for %s wrapping ENOSPC", err, cfg.Path)
	}
	if l.Healthy() {
		t.Error("Healthy() after a failed write")
	}
	if got := testutil.ToFloat64(m.AuditWriteErrors); got != 1 {
		t.Errorf("pgmoat_audit_write_errors_total = %v, want 1", got)
	}
	if got := fileSize(t, cfg.Path); got != before {
		t.Errorf("file is %d bytes after the failed write, want %d: the torn bytes were not removed", got, before)
	}
	if !strings.Contains(logs.String(), "audit log write failed") || !strings.Contains(logs.String(), "no space left on device") {
		t.Errorf("the failure was not logged:\n%s", &logs)
	}

	// Asynchronous events are lost while the disk is full, and counted.
	l.RecordAsync(Event{Kind: SessionEnd, Statement: "lost"})
	if err := l.Flush(ctx); err == nil {
		t.Error("Flush on a full disk succeeded")
	}
	if got := testutil.ToFloat64(m.AuditEventsDropped.WithLabelValues("write_error")); got != 1 {
		t.Errorf("dropped{write_error} = %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.AuditWriteErrors); got != 2 {
		t.Errorf("pgmoat_audit_write_errors_total = %v, want 2", got)
	}

	// Space is freed: the next event is written, chained to the last good line.
	f.setBudget(-1)
	record(t, l, Event{Kind: Decision, Statement: "DROP TABLE c"})
	if !l.Healthy() {
		t.Error("Healthy() false after a successful write")
	}
	if !strings.Contains(logs.String(), "audit log writable again") {
		t.Errorf("recovery was not logged:\n%s", &logs)
	}
	l.Close()
	if got := statements(t, cfg.Path); got != "DROP TABLE a,DROP TABLE c" {
		t.Errorf("statements in the log = %s", got)
	}
	if res := mustVerify(t, cfg.Path); res.Lines != 2 || res.UnchainedCount != 0 {
		t.Errorf("Verify = %+v", res)
	}
	if got := testutil.ToFloat64(m.AuditEvents.WithLabelValues("decision")); got != 2 {
		t.Errorf("pgmoat_audit_events_total{event=decision} = %v, want 2 (failed lines are not counted)", got)
	}
}

// TestTornLineThatCannotBeTruncated is the stdout case: the fragment stays,
// on a line of its own, and the chain continues across it.
func TestTornLineThatCannotBeTruncated(t *testing.T) {
	cfg := testConfig(t)
	f := newFaults()
	f.noTruncate = true
	l, _ := openTest(t, cfg, f.options(Options{}))
	ctx := context.Background()

	record(t, l, Event{Kind: Decision, Statement: "DROP TABLE a"})
	f.setBudget(30)
	if err := l.Record(ctx, Event{Kind: Decision, Statement: "DROP TABLE b"}); err == nil {
		t.Fatal("Record succeeded on a full disk")
	}
	f.setBudget(-1)
	record(t, l, Event{Kind: Decision, Statement: "DROP TABLE c"})
	l.Close()

	lines := readLines(t, cfg.Path)
	if len(lines) != 3 || len(lines[1]) != 30 {
		t.Fatalf("want the 30-byte fragment alone on line 2:\n%s", strings.Join(lines, "\n"))
	}
	res := mustVerify(t, cfg.Path)
	if res.Lines != 2 || res.UnchainedCount != 1 || res.Unchained[0].Line != 2 {
		t.Errorf("Verify = %+v, want line 2 outside the chain", res)
	}
}

// TestWriteThatLosesOnlyTheNewline: the line itself is in the file, so it
// counts as written; the next write supplies the newline.
func TestWriteThatLosesOnlyTheNewline(t *testing.T) {
	cfg := testConfig(t)
	f := newFaults()
	f.noTruncate = true
	l, _ := openTest(t, cfg, f.options(Options{}))
	record(t, l, Event{Kind: Decision, Statement: "DROP TABLE a"})
	size := fileSize(t, cfg.Path)
	record(t, l, Event{Kind: Decision, Statement: "DROP TABLE b"})
	lineLen := int(fileSize(t, cfg.Path) - size)

	f.setBudget(lineLen - 1)
	if err := l.Record(context.Background(), Event{Kind: Decision, Statement: "DROP TABLE c"}); err != nil {
		t.Fatalf("Record whose line lacks only its newline: %v", err)
	}
	f.setBudget(-1)
	record(t, l, Event{Kind: Decision, Statement: "DROP TABLE d"})
	l.Close()
	if got := statements(t, cfg.Path); got != "DROP TABLE a,DROP TABLE b,DROP TABLE c,DROP TABLE d" {
		t.Errorf("statements = %s", got)
	}
	if res := mustVerify(t, cfg.Path); res.Lines != 4 || res.UnchainedCount != 0 {
		t.Errorf("Verify = %+v", res)
	}
}

func TestDevFull(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full")
	}
	path := filepath.Join(t.TempDir(), "audit.log")
	if err := os.Symlink("/dev/full", path); err != nil {
		t.Fatal(err)
	}
	l, m := openTest(t, cfgFor(path), Options{})
	err := l.Record(context.Background(), Event{Kind: Decision, Decision: "block"})
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Record to /dev/full = %v, want ENOSPC", err)
	}
	if l.Healthy() || testutil.ToFloat64(m.AuditWriteErrors) != 1 {
		t.Errorf("Healthy=%v write errors=%v", l.Healthy(), testutil.ToFloat64(m.AuditWriteErrors))
	}
	// The proxy keeps relaying allowed traffic: RecordAsync never blocks or fails.
	l.RecordAsync(Event{Kind: SessionStart})
}

func TestRemovedFileIsCreatedAgain(t *testing.T) {
	cfg := testConfig(t)
	var logs logBuffer
	l, _ := openTest(t, cfg, Options{Logger: newTextLogger(&logs)})
	record(t, l, Event{Kind: Decision, Statement: "DROP TABLE a"})
	first := readLines(t, cfg.Path)[0]
	if err := os.Remove(cfg.Path); err != nil {
		t.Fatal(err)
	}
	record(t, l, Event{Kind: Decision, Statement: "DROP TABLE b"})
	l.Close()

	if got := statements(t, cfg.Path); got != "DROP TABLE b" {
		t.Errorf("statements in the new file = %s", got)
	}
	_, firstHash, _ := parseLine([]byte(first))
	if res := mustVerify(t, cfg.Path); res.FirstPrevHash != firstHash {
		t.Errorf("new file chains from %s, want the removed file's last hash %s", res.FirstPrevHash, firstHash)
	}
	if !strings.Contains(logs.String(), "had been removed") {
		t.Errorf("not logged:\n%s", &logs)
	}
}

func TestRemovedFileAndDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "audit")
	os.Mkdir(dir, 0o700)
	cfg := cfgFor(filepath.Join(dir, "audit.log"))
	l, m := openTest(t, cfg, Options{})
	record(t, l, Event{Kind: Decision, Statement: "DROP TABLE a"})
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	err := l.Record(context.Background(), Event{Kind: Decision, Statement: "DROP TABLE b"})
	var we *WriteError
	if !errors.As(err, &we) || !strings.Contains(err.Error(), "removed") {
		t.Fatalf("Record after the file and its directory were removed = %v, want a *WriteError", err)
	}
	if l.Healthy() || testutil.ToFloat64(m.AuditWriteErrors) != 1 {
		t.Errorf("Healthy=%v write errors=%v", l.Healthy(), testutil.ToFloat64(m.AuditWriteErrors))
	}
	os.Mkdir(dir, 0o700)
	record(t, l, Event{Kind: Decision, Statement: "DROP TABLE c"})
	l.Close()
	if got := statements(t, cfg.Path); got != "DROP TABLE c" {
		t.Errorf("statements = %s", got)
	}
}

func TestReopenFailureKeepsWritingToTheOldFile(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "audit")
	os.Mkdir(dir, 0o700)
	cfg := cfgFor(filepath.Join(dir, "audit.log"))
	l, _ := openTest(t, cfg, Options{})
	record(t, l, Event{Kind: Decision, Statement: "DROP TABLE a"})

	// The directory moves away: the path cannot be opened.
	moved := filepath.Join(base, "audit.old")
	if err := os.Rename(dir, moved); err != nil {
		t.Fatal(err)
	}
	if err := l.Reopen(); err == nil {
		t.Fatal("Reopen succeeded without a directory")
	}
	record(t, l, Event{Kind: Decision, Statement: "DROP TABLE b"})
	if !l.Healthy() {
		t.Error("unhealthy while the old file takes the lines")
	}
	// The directory is back: the next write reopens the path.
	os.Mkdir(dir, 0o700)
	record(t, l, Event{Kind: Decision, Statement: "DROP TABLE c"})
	l.Close()

	old := filepath.Join(moved, "audit.log")
	if got := statements(t, old); got != "DROP TABLE a,DROP TABLE b" {
		t.Errorf("old file: %s", got)
	}
	if got := statements(t, cfg.Path); got != "DROP TABLE c" {
		t.Errorf("new file: %s", got)
	}
	if res := mustVerify(t, old, cfg.Path); res.Lines != 3 {
		t.Errorf("Verify = %+v", res)
	}
}

func TestQueueOverflowDropsAndCounts(t *testing.T) {
	cfg := testConfig(t)
	cfg.QueueSize = 2
	cfg.FlushInterval = 3600_000_000_000 // an hour: only Flush and Close write
	f := newFaults()
	var logs logBuffer
	l, m := openTest(t, cfg, f.options(Options{Logger: newTextLogger(&logs)}))

	// Hold the writer inside a write, with the queue empty.
	f.mu.Lock()
	f.block, f.entered = make(chan struct{}), make(chan struct{}, 1)
	release := f.block
	f.mu.Unlock()
	l.RecordAsync(Event{Kind: SessionStart, SessionID: "0"})
	flushed := make(chan error, 1)
	go func() { flushed <- l.Flush(context.Background()) }()
	<-f.entered
	f.mu.Lock()
	f.block = nil
	f.mu.Unlock()

	for i := 1; i <= 5; i++ {
		l.RecordAsync(Event{Kind: SessionStart, SessionID: fmt.Sprint(i)})
	}
	if got := testutil.ToFloat64(m.AuditEventsDropped.WithLabelValues("queue_full")); got != 3 {
		t.Errorf("dropped{queue_full} = %v, want 3", got)
	}
	if got := testutil.ToFloat64(m.AuditQueueDepth); got != 2 {
		t.Errorf("pgmoat_audit_queue_depth = %v, want 2", got)
	}
	if n := strings.Count(logs.String(), "audit events dropped"); n != 1 {
		t.Errorf("%d drop warnings for 3 drops in a row, want 1 (rate-limited):\n%s", n, &logs)
	}
	// A durable event does not drop: it waits for room, until its context ends.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := l.Record(ctx, Event{Kind: Decision}); !errors.Is(err, context.Canceled) {
		t.Errorf("Record with a full queue and a cancelled context = %v", err)
	}

	close(release)
	if err := <-flushed; err != nil {
		t.Fatal(err)
	}
	l.Close()
	evs, err := ReadFile(cfg.Path)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, ev := range evs {
		ids = append(ids, ev.SessionID)
	}
	if got := strings.Join(ids, ","); got != "0,1,2" {
		t.Errorf("sessions written = %s, want 0,1,2", got)
	}
	mustVerify(t, cfg.Path)
}

func TestAsyncEventsFlushedWithinInterval(t *testing.T) {
	cfg := testConfig(t)
	cfg.FlushInterval = 10_000_000 // 10ms
	l, _ := openTest(t, cfg, Options{})
	l.RecordAsync(Event{Kind: SessionStart, SessionID: "s"})
	// Neither Flush nor Close: the writer's timer must write it.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if fileSize(t, cfg.Path) > 0 {
			mustVerify(t, cfg.Path)
			return
		}
	}
	t.Fatal("an asynchronous event was not written without Flush or Close")
}

func TestConcurrentRecord(t *testing.T) {
	cfg := testConfig(t)
	cfg.QueueSize = 10000
	l, m := openTest(t, cfg, Options{})
	const writers, each = 8, 250
	var wg sync.WaitGroup
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				ev := Event{Kind: Decision, SessionID: fmt.Sprint(g), Reason: fmt.Sprint(i), Operations: []string{"drop"}}
				if i%2 == 0 {
					l.RecordAsync(ev)
					ev.Operations[0] = "reused" // the caller may reuse its slices at once
				} else if err := l.Record(context.Background(), ev); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	l.Close()

	res := mustVerify(t, cfg.Path)
	if res.Lines != writers*each {
		t.Errorf("%d lines, want %d", res.Lines, writers*each)
	}
	if got := testutil.ToFloat64(m.AuditEvents.WithLabelValues("decision")); got != writers*each {
		t.Errorf("pgmoat_audit_events_total{event=decision} = %v", got)
	}
	evs, err := ReadFile(cfg.Path)
	if err != nil {
		t.Fatal(err)
	}
	next := map[string]int{}
	for _, ev := range evs {
		// Each goroutine's events are in the file in the order it recorded them.
		if want := fmt.Sprint(next[ev.SessionID]); ev.Reason != want {
			t.Fatalf("session %s: event %s written where %s was expected", ev.SessionID, ev.Reason, want)
		}
		next[ev.SessionID]++
		if ev.Operations[0] != "drop" {
			t.Fatalf("operations = %v: the line changed after RecordAsync returned", ev.Operations)
		}
	}
}

// TestTornLineThenNewFile: the newline that ends a fragment belongs to
// the file holding the fragment; a file opened after it (rotation, or the
// file removed and created again on the next write) starts clean.
func TestTornLineThenNewFile(t *testing.T) {
	for _, how := range []string{"rotated", "removed"} {
		t.Run(how, func(t *testing.T) {
			cfg := testConfig(t)
			f := newFaults()
			f.noTruncate = true
			l, _ := openTest(t, cfg, f.options(Options{}))
			record(t, l, Event{Kind: Decision, Statement: "DROP TABLE a"})
			f.setBudget(30)
			if err := l.Record(context.Background(), Event{Kind: Decision, Statement: "DROP TABLE b"}); err == nil {
				t.Fatal("Record succeeded on a full disk")
			}
			f.setBudget(-1)
			if err := os.Rename(cfg.Path, cfg.Path+".1"); err != nil {
				t.Fatal(err)
			}
			if how == "rotated" {
				if err := l.Reopen(); err != nil {
					t.Fatal(err)
				}
			} else if err := os.Remove(cfg.Path + ".1"); err != nil {
				t.Fatal(err)
			}
			record(t, l, Event{Kind: Decision, Statement: "DROP TABLE c"})
			l.Close()

			if got := statements(t, cfg.Path); got != "DROP TABLE c" {
				t.Errorf("new file: %s", got)
			}
			if res := mustVerify(t, cfg.Path); res.UnchainedCount != 0 || res.Lines != 1 {
				t.Errorf("new file alone: %+v", res)
			}
			if how == "rotated" {
				if res := mustVerify(t, cfg.Path+".1", cfg.Path); res.Lines != 2 || res.UnchainedCount != 1 {
					t.Errorf("both files: %+v, want 2 lines and the fragment outside the chain", res)
				}
			}
		})
	}
}
