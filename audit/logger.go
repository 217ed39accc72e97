package audit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgmoat/pgmoat/config"
	"github.com/pgmoat/pgmoat/metrics"
)

// ErrClosed is returned by Record, Flush and Reopen after Close.
var ErrClosed = errors.New("audit: logger closed")

// WriteError is returned by Record and Flush when the event's line could
// not be written to the audit log. The caller must then refuse whatever the
// event was meant to vouch for (fail closed).
type WriteError struct {
	Path string // "-" for stdout
	Err  error
}

func (e *WriteError) Error() string { return "audit: write " + e.Path + ": " + e.Err.Error() }
func (e *WriteError) Unwrap() error { return e.Err }

// Options are the Logger's dependencies.
type Options struct {
	// Logger receives pgmoat's own messages about the audit log (write
	// failures, drops, rotation), never audit events. Nil discards them.
	Logger *slog.Logger
	// Metrics is updated with audit write errors, queue depth, events
	// written and events dropped. Nil uses unregistered collectors.
	Metrics *metrics.Metrics
	// Clock stamps events whose Time is zero. Nil means time.Now.
	Clock func() time.Time
	// Instance, when set, is written as the instance field of every
	// event, so that the logs of several pgmoat instances sharing one
	// control database (state.dsn) say which wrote what.
	Instance string

	// openSink replaces how the log is opened and reopened; tests use it
	// to inject write failures.
	openSink func(path string) (sink, tailState, error)
}

// Logger writes the audit log. Its methods are safe for concurrent use. A
// nil *Logger, like one opened with an empty path, records nothing and
// reports success.
type Logger struct {
	path      string
	queueSize int
	disabled  bool
	// The settings Apply may change while running.
	all      atomic.Bool // audit.statements: all (and a path to write to)
	redact   atomic.Bool
	interval atomic.Int64 // audit.flush_interval, in nanoseconds
	// maxStatement is audit.max_statement_bytes.
	maxStatement atomic.Int64
	log          *slog.Logger
	m            *metrics.Metrics
	clock        func() time.Time
	instance     string

	queue  chan entry
	quit   chan struct{} // closed by Close
	exited chan struct{} // closed when the writer goroutine has returned
	once   sync.Once
	closed atomic.Bool

	healthy  atomic.Bool
	dropWarn limiter
	dropped  map[string]prometheus.Counter
}

// entry is one request to the writer goroutine.
type entry struct {
	kind Kind
	body []byte     // the encoded event; nil for a flush or reopen request
	done chan error // answered once written (or not); nil for RecordAsync
	// reopen asks the writer to close the file and open the path again.
	reopen bool
}

// Open starts the audit log described by cfg.
//
// cfg.Path is a file (created with mode 0600 if missing, appended to
// otherwise, its hash chain continued from its last line), "-" for
// standard output (the chain starts from Genesis at every start), or "" to
// disable auditing: the Logger then discards events, Record returns nil and
// Healthy reports true, so a proxy without an audit log still decides
// destructive statements instead of refusing them all.
func Open(cfg config.Audit, opts Options) (*Logger, error) {
	l := &Logger{
		path:      cfg.Path,
		queueSize: cfg.QueueSize,
		disabled:  cfg.Path == "",
		log:       opts.Logger,
		m:         opts.Metrics,
		clock:     opts.Clock,
		instance:  opts.Instance,
		quit:      make(chan struct{}),
		exited:    make(chan struct{}),
		dropWarn:  limiter{every: warnEvery},
	}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	l.log = l.log.With("audit_path", cfg.Path)
	if l.m == nil {
		l.m = metrics.New(nil)
	}
	if l.clock == nil {
		l.clock = time.Now
	}
	l.healthy.Store(true)
	l.all.Store(cfg.Statements == "all" && !l.disabled)
	l.redact.Store(cfg.Redact)
	l.interval.Store(int64(cfg.FlushInterval))
	l.maxStatement.Store(int64(cfg.MaxStatementBytes))
	if cfg.MaxStatementBytes <= 0 {
		l.maxStatement.Store(int64(config.Default().Audit.MaxStatementBytes))
	}
	if l.disabled {
		close(l.exited)
		return l, nil
	}
	if cfg.QueueSize < 1 {
		return nil, fmt.Errorf("audit: queue_size must be at least 1, got %d", cfg.QueueSize)
	}
	if cfg.FlushInterval <= 0 {
		return nil, fmt.Errorf("audit: flush_interval must be positive, got %s", cfg.FlushInterval)
	}
	l.dropped = map[string]prometheus.Counter{}
	for _, r := range []string{dropQueueFull, dropWriteError, dropClosed} {
		l.dropped[r] = l.m.AuditEventsDropped.WithLabelValues(r)
	}
	open := opts.openSink
	if open == nil {
		open = openPath
	}
	w, err := newWriter(l, open)
	if err != nil {
		return nil, err
	}
	l.queue = make(chan entry, cfg.QueueSize)
	go w.run()
	return l, nil
}

// Reasons an asynchronous event is dropped (the reason label of
// pgmoat_audit_events_dropped_total).
const (
	dropQueueFull  = "queue_full"
	dropWriteError = "write_error"
	dropClosed     = "closed"
)

// warnEvery is the least time between two warnings of the same sort
// (write failure, dropped events), so a full disk does not flood the log.
const warnEvery = 10 * time.Second

// AllStatements reports whether allowed statements are recorded
// (audit.statements: all). A caller may skip building Statement events
// when it is false; they would be discarded anyway.
func (l *Logger) AllStatements() bool { return l != nil && l.all.Load() }

// Healthy reports whether the last attempt to write the audit log
// succeeded. It turns false on a failed write and true again on the next
// write that succeeds.
func (l *Logger) Healthy() bool { return l == nil || l.healthy.Load() }

// Record writes ev durably: it returns nil only once ev's line, and every
// line queued before it, has been handed to the operating system (write(2)
// has returned); see the package documentation for why there is no fsync.
//
// Record is for events that vouch for something about to happen: a block
// or hold decision before the client hears of it, an approval before the
// statement is forwarded. When it returns an error (*WriteError, ErrClosed,
// or ctx's error) the caller must not go ahead: the event may be missing
// from the log. Record waits while the queue is full, until ctx is done.
func (l *Logger) Record(ctx context.Context, ev Event) error {
	if l == nil || l.disabled || (ev.Kind == Statement && !l.all.Load()) {
		return nil
	}
	if l.closed.Load() {
		return ErrClosed
	}
	body, err := l.prepare(&ev)
	if err != nil {
		return err
	}
	return l.request(ctx, entry{kind: ev.Kind, body: body, done: make(chan error, 1)})
}

// RecordAsync queues ev and returns at once; the writer writes it within
// audit.flush_interval. It is for events that must not slow traffic:
// allowed statements, session start and end. When the queue is full the
// event is dropped, counted in pgmoat_audit_events_dropped_total and
// warned about (at most every ten seconds). Statement events are discarded
// unless audit.statements is "all".
func (l *Logger) RecordAsync(ev Event) {
	if l == nil || l.disabled || (ev.Kind == Statement && !l.all.Load()) {
		return
	}
	if l.closed.Load() {
		l.drop(dropClosed, 1)
		return
	}
	body, err := l.prepare(&ev)
	if err != nil {
		l.log.Error("audit event not recorded", "event", ev.Kind, "err", err)
		return
	}
	select {
	case l.queue <- entry{kind: ev.Kind, body: body}:
		l.m.AuditQueueDepth.Set(float64(len(l.queue)))
	default:
		l.drop(dropQueueFull, 1)
	}
}

// Flush returns once every event queued before it has been written, with
// the error of that write. Tests that read the file use it; so does
// shutdown, through Close.
func (l *Logger) Flush(ctx context.Context) error {
	if l == nil || l.disabled {
		return nil
	}
	return l.request(ctx, entry{done: make(chan error, 1)})
}

// Reopen closes the audit file and opens its path again, for log rotation:
// after logrotate has renamed the file, SIGHUP (or SIGUSR1) makes pgmoat
// call Reopen, and the new file's first line chains from the old file's
// last line. Events queued before Reopen go to the old file. If the path
// cannot be opened, Reopen returns the error, pgmoat keeps writing to the
// old file, and every later write tries the path again. With "-" or an
// empty path, Reopen does nothing.
func (l *Logger) Reopen() error {
	if l == nil || l.disabled || l.path == "-" {
		return nil
	}
	return l.request(context.Background(), entry{reopen: true, done: make(chan error, 1)})
}

// Apply takes the audit section of a reloaded configuration: statements,
// redact, max_statement_bytes and flush_interval apply from the next event
// on. path and
// queue_size cannot change while pgmoat runs; when they differ, Apply
// keeps the current ones and returns an error naming them, so that the
// reload can say a restart is needed.
func (l *Logger) Apply(cfg config.Audit) error {
	if l == nil {
		return nil
	}
	var fixed []string
	if cfg.Path != l.path {
		fixed = append(fixed, "audit.path")
	}
	if cfg.QueueSize != l.queueSize && !l.disabled {
		fixed = append(fixed, "audit.queue_size")
	}
	l.all.Store(cfg.Statements == "all" && !l.disabled)
	l.redact.Store(cfg.Redact)
	if cfg.MaxStatementBytes > 0 {
		l.maxStatement.Store(int64(cfg.MaxStatementBytes))
	}
	if cfg.FlushInterval > 0 {
		l.interval.Store(int64(cfg.FlushInterval))
	}
	if len(fixed) > 0 {
		return fmt.Errorf("audit: %s changed: takes effect after a restart", strings.Join(fixed, " and "))
	}
	return nil
}

// Close writes every queued event, closes the file and stops the writer.
// Events recorded after Close are dropped (RecordAsync) or refused (Record).
func (l *Logger) Close() error {
	if l == nil || l.disabled {
		return nil
	}
	l.once.Do(func() {
		l.closed.Store(true)
		close(l.quit)
	})
	<-l.exited
	return nil
}

// prepare fills in what the caller may leave out, redacts, validates and
// encodes ev, on the caller's goroutine so that the writer only seals.
func (l *Logger) prepare(ev *Event) ([]byte, error) {
	if !ev.Kind.valid() {
		return nil, fmt.Errorf("audit: unknown event kind %q", ev.Kind)
	}
	if ev.Time.IsZero() {
		ev.Time = l.clock()
	}
	ev.Instance = l.instance
	if l.redact.Load() && ev.Statement != "" {
		ev.Statement = redactBounded(ev.Statement)
	}
	bound(ev, int(l.maxStatement.Load()))
	return encode(ev)
}

// request queues e, waiting for room until ctx is done, and waits for the
// writer's answer.
func (l *Logger) request(ctx context.Context, e entry) error {
	select {
	case l.queue <- e:
		l.m.AuditQueueDepth.Set(float64(len(l.queue)))
	case <-ctx.Done():
		return fmt.Errorf("audit: event not queued: %w", context.Cause(ctx))
	case <-l.quit:
		return ErrClosed
	}
	select {
	case err := <-e.done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("audit: write not confirmed: %w", context.Cause(ctx))
	case <-l.exited:
		// The writer answers everything it took before exiting; an entry
		// it never took was not written.
		select {
		case err := <-e.done:
			return err
		default:
			return ErrClosed
		}
	}
}

// drop counts n lost asynchronous events and warns, rate-limited.
func (l *Logger) drop(reason string, n int) {
	l.dropped[reason].Add(float64(n))
	if suppressed, ok := l.dropWarn.allow(time.Now()); ok {
		l.log.Warn("audit events dropped: the audit trail has a gap",
			"reason", reason, "dropped", n, "earlier_warnings_suppressed", suppressed)
	}
}

// limiter lets a message through at most once per period and counts what
// it held back.
type limiter struct {
	every      time.Duration
	mu         sync.Mutex
	next       time.Time
	suppressed int
}

func (r *limiter) allow(now time.Time) (suppressed int, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now.Before(r.next) {
		r.suppressed++
		return 0, false
	}
	r.next = now.Add(r.every)
	suppressed, r.suppressed = r.suppressed, 0
	return suppressed, true
}
