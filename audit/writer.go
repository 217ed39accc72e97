package audit

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

const (
	// flushBytes makes the writer write before the flush interval once
	// this much is buffered.
	flushBytes = 64 << 10
	// batchBytes bounds how much the writer takes from the queue before
	// writing, so one write(2) carries many events under load without the
	// buffer growing without bound.
	batchBytes = 1 << 20
)

// writer is the one goroutine that owns the audit file. Every line goes
// through it, in queue order, so the order of the hash chain is the order
// of the file.
type writer struct {
	l        *Logger
	open     func(path string) (sink, tailState, error)
	events   map[Kind]prometheus.Counter
	failWarn limiter

	out sink
	// head is the hash of the last line the sink accepted whole: the next
	// line chains from it. seq is that line's sequence number (0 when it
	// was written before sequence numbers existed, or there is none).
	head string
	seq  uint64
	// needNewline is set when the sink ends with a torn line that could
	// not be removed; the next write starts with a newline so that the
	// fragment stays on a line of its own, outside the chain.
	needNewline bool
	// reopenPending is set when a Reopen could not open the path; every
	// write tries again until it can.
	reopenPending bool

	buf     []byte       // sealed lines not yet written
	bufHead string       // hash of the last line in buf
	bufSeq  uint64       // its sequence number
	lines   []pending    // the lines in buf
	waiters []chan error // Flush calls waiting for the buffer to be written
	// urgent is set when someone waits for the buffer (Record, Flush):
	// it is written now rather than at the flush interval.
	urgent bool
	timer  *time.Timer
	armed  bool
}

// pending is a sealed line waiting in the writer's buffer.
type pending struct {
	end  int // offset in buf just past its newline
	hash string
	seq  uint64
	kind Kind
	done chan error // nil for an asynchronous event
}

func newWriter(l *Logger, open func(string) (sink, tailState, error)) (*writer, error) {
	out, st, err := open(l.path)
	if err != nil {
		return nil, fmt.Errorf("audit: open %s: %w", l.path, err)
	}
	w := &writer{
		l:           l,
		open:        open,
		events:      map[Kind]prometheus.Counter{},
		failWarn:    limiter{every: warnEvery},
		out:         out,
		head:        st.head,
		seq:         st.seq,
		needNewline: st.needNewline,
		timer:       time.NewTimer(time.Hour),
	}
	w.timer.Stop()
	for _, k := range kinds {
		w.events[k] = l.m.AuditEvents.WithLabelValues(string(k))
	}
	switch {
	case st.headErr != nil:
		l.log.Warn("the audit log's last line does not verify; continuing its chain from the hash it states, run `pgmoat audit verify`",
			"err", st.headErr, "prev_hash", st.head)
	case w.head != "":
		l.log.Info("audit log opened, continuing its hash chain", "prev_hash", w.head, "seq", w.seq)
	default:
		l.log.Info("audit log opened, starting a new hash chain")
	}
	if w.head == "" {
		w.head = Genesis
	}
	w.bufHead, w.bufSeq = w.head, w.seq
	w.exportHead()
	return w, nil
}

func (w *writer) run() {
	defer close(w.l.exited)
	for {
		select {
		case e := <-w.l.queue:
			w.take(e)
			// Take what else is queued, so that one write carries it all.
		batch:
			for len(w.buf) < batchBytes {
				select {
				case e := <-w.l.queue:
					w.take(e)
				default:
					break batch
				}
			}
			w.l.m.AuditQueueDepth.Set(float64(len(w.l.queue)))
			switch {
			case w.urgent || len(w.buf) >= flushBytes:
				w.flush()
			case len(w.lines) > 0 && !w.armed:
				w.timer.Reset(time.Duration(w.l.interval.Load()))
				w.armed = true
			}
		case <-w.timer.C:
			w.armed = false
			w.flush()
		case <-w.l.quit:
			for drained := false; !drained; {
				select {
				case e := <-w.l.queue:
					w.take(e)
				default:
					drained = true
				}
			}
			w.flush()
			w.l.m.AuditQueueDepth.Set(0)
			if err := w.out.Close(); err != nil {
				w.l.log.Error("closing the audit log", "err", err)
			}
			w.l.log.Info("audit log closed", "last_hash", w.head, "seq", w.seq)
			return
		}
	}
}

// take adds one request to the buffer.
func (w *writer) take(e entry) {
	switch {
	case e.reopen:
		w.flush()
		e.done <- w.reopen()
	case e.body == nil: // Flush
		w.waiters = append(w.waiters, e.done)
		w.urgent = true
	default:
		var h string
		seq := w.bufSeq + 1
		if w.bufHead == Genesis {
			seq = 1
		}
		w.buf, h = seal(w.buf, e.body, w.bufHead, seq)
		w.bufHead, w.bufSeq = h, seq
		w.lines = append(w.lines, pending{end: len(w.buf), hash: h, seq: seq, kind: e.kind, done: e.done})
		w.urgent = w.urgent || e.done != nil
	}
}

// flush writes the buffer and answers everyone waiting on it.
func (w *writer) flush() {
	if w.armed {
		w.timer.Stop()
		w.armed = false
	}
	if len(w.lines) == 0 && len(w.waiters) == 0 {
		return
	}
	n, err := 0, w.ready()
	if err == nil && w.needNewline {
		// End the fragment a failed write left, in the sink as it is now
		// (ready may have just reopened it).
		if _, err = w.out.Write([]byte{'\n'}); err == nil {
			w.needNewline = false
		}
	}
	if err == nil && len(w.buf) > 0 {
		n, err = w.out.Write(w.buf)
	}
	if err != nil {
		err = &WriteError{Path: w.l.path, Err: err}
	}

	// Lines that reached the sink whole are written, whatever came after.
	// A line missing only its newline is whole (the newline is not hashed):
	// the next write supplies it.
	good, k := 0, 0
	for k < len(w.lines) && w.lines[k].end-1 <= n {
		good = min(w.lines[k].end, n)
		k++
	}
	for _, p := range w.lines[:k] {
		w.events[p.kind].Inc()
		w.head, w.seq = p.hash, p.seq
	}
	if k > 0 {
		w.exportHead()
	}
	if err == nil {
		if !w.l.healthy.Swap(true) {
			w.l.log.Info("audit log writable again", "prev_hash", w.head)
		}
	} else {
		w.fail(err, n, good, k)
	}
	// Answer last, so that health, metrics and logs already tell what a
	// caller is told.
	for i, p := range w.lines {
		if p.done == nil {
			continue
		}
		if i < k {
			p.done <- nil
		} else {
			p.done <- err
		}
	}
	for _, c := range w.waiters {
		c <- err
	}
	w.buf, w.lines, w.waiters, w.urgent = w.buf[:0], w.lines[:0], w.waiters[:0], false
	w.bufHead, w.bufSeq = w.head, w.seq
	if cap(w.buf) > batchBytes+flushBytes {
		// One huge line (a long statement before audit.max_statement_bytes
		// existed, or a tiny cap raised) must not keep its buffer forever.
		w.buf = nil
	}
}

// exportHead puts the chain's head on /metrics
// (pgmoat_audit_chain_head_sequence{hash}), so that it can be recorded
// outside the file.
func (w *writer) exportHead() {
	if w.head != Genesis {
		w.l.m.AuditChainHead.Set(w.head, float64(w.seq))
	}
}

// fail handles a write that stopped after n bytes, good of which end
// complete lines (k of them). The rest of the line being written is torn:
// it is cut off the file if the sink allows, so the next line starts
// clean; otherwise the next write starts on a new line and the fragment
// stays outside the chain (Verify reports it, and the chain continues from
// the last whole line).
func (w *writer) fail(err error, n, good, k int) {
	w.l.healthy.Store(false)
	w.l.m.AuditWriteErrors.Inc()
	if k > 0 && good < w.lines[k-1].end {
		w.needNewline = true // the last whole line lacks its newline
	}
	var dropErr error
	if torn := n - good; torn > 0 {
		if dropErr = w.out.dropTail(int64(torn)); dropErr != nil {
			w.needNewline = true
		}
	}
	lost := 0
	for _, p := range w.lines[k:] {
		if p.done == nil {
			lost++
		}
	}
	if lost > 0 {
		w.l.dropped[dropWriteError].Add(float64(lost))
	}
	if suppressed, ok := w.failWarn.allow(time.Now()); ok {
		args := []any{"err", err, "events_lost", len(w.lines) - k, "earlier_warnings_suppressed", suppressed}
		if dropErr != nil {
			args = append(args, "torn_line_left", dropErr)
		}
		w.l.log.Error("audit log write failed: destructive statements are refused until it recovers", args...)
	}
}

// ready makes sure the sink is worth writing to: it retries a Reopen that
// failed, and reopens a file that was deleted, so that lines do not vanish
// into an unlinked file.
func (w *writer) ready() error {
	removed := w.out.removed()
	if !removed && !w.reopenPending {
		return nil
	}
	err := w.reopen()
	switch {
	case err != nil && removed:
		return fmt.Errorf("file was removed and cannot be created again: %w", err)
	case err != nil:
		if suppressed, ok := w.failWarn.allow(time.Now()); ok {
			w.l.log.Warn("audit log reopen still failing; writing to the old file",
				"err", err, "earlier_warnings_suppressed", suppressed)
		}
	case removed:
		w.l.log.Warn("the audit file had been removed; created it again, its first line chains from the last line written",
			"prev_hash", w.head)
	}
	return nil
}

// reopen swaps the sink for a fresh open of the path. On failure the old
// sink stays in use and reopenPending makes every write try again.
func (w *writer) reopen() error {
	out, st, err := w.open(w.l.path)
	if err != nil {
		w.reopenPending = true
		return fmt.Errorf("audit: reopen %s: %w", w.l.path, err)
	}
	w.reopenPending = false
	if cerr := w.out.Close(); cerr != nil {
		w.l.log.Warn("closing the rotated audit file", "err", cerr)
	}
	w.out = out
	w.needNewline = st.needNewline
	if st.head != "" && st.head != w.head {
		// The path already holds lines that are not ours last: the chain
		// continues from what this process wrote last, and Verify will
		// report the break, which is the truth.
		w.l.log.Warn("the reopened audit file ends with another chain; continuing from the last line written",
			"file_last_hash", st.head, "prev_hash", w.head)
	}
	w.l.log.Info("audit log reopened", "prev_hash", w.head, "seq", w.seq)
	return nil
}
