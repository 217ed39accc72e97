package proxy

import (
	"io"
	"math"
	"sync/atomic"
)

// msgWriter buffers what the relay writes to one connection, as a
// bufio.Writer does, and can also queue messages in place: bytes still in
// the read buffer of the other connection, which the caller promises not
// to change before the next Flush. The event loop relays that way: it
// reads a batch of messages, relays each, and flushes before it reads
// again, so a run of messages forwarded unchanged leaves in one write
// straight from the buffer it arrived in, without being copied (as
// PgBouncer sends from its read buffer). Anything else written meanwhile
// (a message pgmoat changed or made) first moves the queued run into the
// buffer, so the order of the bytes is always the order of the calls.
//
// It also counts what it writes, for the session's log and for
// pgmoat_relayed_bytes_total. Every relayed message touches the writer,
// so it is one cache line (64 bytes, TestMsgWriterFitsALine): offsets are
// 16 bits (buffers are bufSize), and the error of a broken writer is
// behind a pointer.
type msgWriter struct {
	// from.buf[lo:hi] is queued in place (when hi > lo). When it is, n
	// is 0: the buffered bytes come before anything queued in place, so
	// a Write after a run in place copies the run first. from is kept
	// after a Flush (it is the session's own reader): setting it again
	// for every run would cost a write barrier.
	from   *msgReader
	buf    *[bufSize]byte
	n      uint16 // buf[:n] is buffered
	lo, hi uint16
	w      io.Writer      // the connection, or its fdWriter while the session is in the event loop
	count  int64          // bytes written to w, for the session's log
	total  *atomic.Uint64 // all sessions' count for this direction (pgmoat_relayed_bytes_total)
	failed *error         // why the writer broke; nil while it works
}

// The buffer's offsets must fit the 16-bit fields.
const _ = uint16(bufSize)

func newMsgWriter(w io.Writer, total *atomic.Uint64) *msgWriter {
	return &msgWriter{w: w, buf: new([bufSize]byte), total: total}
}

// Buffered returns the number of bytes written but not yet flushed.
func (b *msgWriter) Buffered() int { return int(b.n) + int(b.hi) - int(b.lo) }

// fail breaks the writer for good.
func (b *msgWriter) fail(err error) {
	b.failed = &err
}

// Write copies p into the buffer, writing the buffer out whenever it
// fills; a p larger than an empty buffer goes out directly.
func (b *msgWriter) Write(p []byte) (int, error) {
	if b.hi > b.lo {
		b.spill()
	}
	nn := 0
	for len(p) > bufSize-int(b.n) && b.failed == nil {
		var k int
		if b.n == 0 {
			var err error
			if k, err = b.out(p); err != nil {
				b.fail(err)
			}
		} else {
			k = copy(b.buf[b.n:], p)
			b.n += uint16(k)
			b.Flush()
		}
		nn += k
		p = p[k:]
	}
	if b.failed != nil {
		return nn, *b.failed
	}
	k := copy(b.buf[b.n:], p)
	b.n += uint16(k)
	return nn + k, nil
}

// writeRef queues r.buf[lo:hi] in place. r's buffer must stay as it is
// (no read, no compaction) until the next Flush. A run that continues the
// one queued (same reader, lo where it ended) grows it; anything else is
// copied as Write would.
func (b *msgWriter) writeRef(r *msgReader, lo, hi int) error {
	if b.failed != nil {
		return *b.failed
	}
	switch {
	case hi > math.MaxUint16:
		// Beyond the offsets' range (a reader's buffer is bufSize in
		// the event loop): copied.
	case b.hi > b.lo && lo == int(b.hi) && r == b.from:
		b.hi = uint16(hi)
		return nil
	case b.hi == b.lo && b.n == 0:
		if b.from != r {
			b.from = r
		}
		b.lo, b.hi = uint16(lo), uint16(hi)
		return nil
	}
	_, err := b.Write(r.buf[lo:hi])
	return err
}

// queued returns what is queued in place and forgets it.
func (b *msgWriter) queued() []byte {
	p := b.from.buf[b.lo:b.hi]
	b.lo, b.hi = 0, 0
	return p
}

// spill moves what is queued in place into the buffer (or, when it does
// not fit, writes it out), ahead of a write that is not in place.
func (b *msgWriter) spill() {
	p := b.queued()
	if len(p) <= bufSize {
		b.n = uint16(copy(b.buf[:], p))
		return
	}
	b.writeOut(p)
}

// out writes p to w and counts what w took.
func (b *msgWriter) out(p []byte) (int, error) {
	k, err := b.w.Write(p)
	if k > 0 {
		b.count += int64(k)
		b.total.Add(uint64(k))
	}
	return k, err
}

// writeOut writes p to w whole or records why it could not.
func (b *msgWriter) writeOut(p []byte) {
	k, err := b.out(p)
	if err == nil && k < len(p) {
		err = io.ErrShortWrite
	}
	if err != nil {
		b.fail(err)
	}
}

// Flush writes everything buffered or queued out. Its errors are sticky,
// as bufio.Writer's: the writer is broken from then on, and what was
// queued in place is dropped (its source may change once Flush returns).
func (b *msgWriter) Flush() error {
	if b.failed != nil {
		return *b.failed
	}
	if b.hi > b.lo {
		b.writeOut(b.queued())
		if b.failed != nil {
			b.from = nil
			return *b.failed
		}
		return nil
	}
	if b.n == 0 {
		return nil
	}
	k, err := b.out(b.buf[:b.n])
	if err == nil && k < int(b.n) {
		err = io.ErrShortWrite
	}
	if err != nil {
		if k > 0 && k < int(b.n) {
			copy(b.buf[:], b.buf[k:b.n])
		}
		b.n -= uint16(k)
		b.fail(err)
		return err
	}
	b.n = 0
	return nil
}
