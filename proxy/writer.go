package proxy

import "io"

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
type msgWriter struct {
	// from.buf[lo:hi] is queued in place (when hi > lo). When it is, n
	// is 0: the buffered bytes come before anything queued in place, so
	// a Write after a run in place copies the run first. from is kept
	// after a Flush (it is the session's own reader): setting it again
	// for every run would cost a write barrier.
	from   *msgReader
	buf    *[bufSize]byte
	n      int32 // buf[:n] is buffered
	lo, hi int32
	err    error
	w      io.Writer
}

func newMsgWriter(w io.Writer) *msgWriter {
	return &msgWriter{w: w, buf: new([bufSize]byte)}
}

// Buffered returns the number of bytes written but not yet flushed.
func (b *msgWriter) Buffered() int { return int(b.n + b.hi - b.lo) }

// Write copies p into the buffer, writing the buffer out whenever it
// fills; a p larger than an empty buffer goes out directly.
func (b *msgWriter) Write(p []byte) (int, error) {
	if b.hi > b.lo {
		b.spill()
	}
	nn := 0
	for len(p) > bufSize-int(b.n) && b.err == nil {
		var k int
		if b.n == 0 {
			k, b.err = b.w.Write(p)
		} else {
			k = copy(b.buf[b.n:], p)
			b.n += int32(k)
			b.Flush()
		}
		nn += k
		p = p[k:]
	}
	if b.err != nil {
		return nn, b.err
	}
	k := copy(b.buf[b.n:], p)
	b.n += int32(k)
	return nn + k, nil
}

// writeRef queues r.buf[lo:hi] in place. r's buffer must stay as it is
// (no read, no compaction) until the next Flush. A run that continues the
// one queued (same reader, lo where it ended) grows it; anything else is
// copied as Write would.
func (b *msgWriter) writeRef(r *msgReader, lo, hi int) error {
	if b.err != nil {
		return b.err
	}
	switch {
	case b.hi > b.lo && int32(lo) == b.hi && r == b.from:
		b.hi = int32(hi)
		return nil
	case b.hi == b.lo && b.n == 0:
		if b.from != r {
			b.from = r
		}
		b.lo, b.hi = int32(lo), int32(hi)
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
		b.n = int32(copy(b.buf[:], p))
		return
	}
	b.writeOut(p)
}

// writeOut writes p to w whole or records why it could not.
func (b *msgWriter) writeOut(p []byte) {
	k, err := b.w.Write(p)
	if err == nil && k < len(p) {
		err = io.ErrShortWrite
	}
	b.err = err
}

// Flush writes everything buffered or queued out. Its errors are sticky,
// as bufio.Writer's: the writer is broken from then on, and what was
// queued in place is dropped (its source may change once Flush returns).
func (b *msgWriter) Flush() error {
	if b.err != nil {
		return b.err
	}
	if b.hi > b.lo {
		b.writeOut(b.queued())
		if b.err != nil {
			b.from = nil
		}
		return b.err
	}
	if b.n == 0 {
		return nil
	}
	k, err := b.w.Write(b.buf[:b.n])
	if err == nil && k < int(b.n) {
		err = io.ErrShortWrite
	}
	if err != nil {
		if k > 0 && k < int(b.n) {
			copy(b.buf[:], b.buf[k:b.n])
		}
		b.n -= int32(k)
		b.err = err
		return err
	}
	b.n = 0
	return nil
}
