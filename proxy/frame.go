package proxy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// bufSize is the size of each connection's read and write buffer. PostgreSQL
// sends in 8 KiB chunks; twice that lets one read pick up a whole batch of
// small messages while keeping an idle session at 64 KiB of buffers.
const bufSize = 16 << 10

// msgReader frames PostgreSQL protocol messages from one side of a session.
// It is a bufio.Reader that knows the protocol's framing: messages that fit
// in its buffer are handed out whole without copying, larger ones are either
// assembled in a temporary buffer (when their body must be decoded) or
// streamed through (when they are only relayed), so a 1 GB DataRow never
// costs 1 GB of memory.
//
// Before every read that may block, onBlock is called: the relay flushes the
// opposite direction's writer there, so all messages that arrived together
// leave together in one write, and nothing waits in a buffer while pgmoat
// itself waits for input.
type msgReader struct {
	// What framing a message reads comes first, on one cache line: the
	// struct is padded to 128 bytes, a size class whose objects start
	// on one.
	buf     []byte // buf[r:w] is buffered input
	r, w    int
	rd      io.Reader
	small   []byte // the default-sized buffer, kept while buf is temporarily larger
	onBlock func() error
	// pre holds bytes read from rd by someone else (ClientSession.WatchClient)
	// that come before anything rd still has.
	pre []byte
	_   [16]byte
}

func newMsgReader(rd io.Reader) *msgReader {
	b := make([]byte, bufSize)
	return &msgReader{rd: rd, buf: b, small: b}
}

// buffered returns the number of bytes read from the connection but not yet
// consumed.
func (m *msgReader) buffered() int { return m.w - m.r }

// writeError marks an error that happened on the writing side of a relay
// step, so that the caller knows which connection failed.
type writeError struct{ err error }

func (e *writeError) Error() string { return e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }

// ensure makes at least n bytes available at buf[r:]. It grows the buffer
// when n exceeds it; the larger buffer is dropped again once it is drained.
func (m *msgReader) ensure(n int) error {
	if m.w-m.r >= n {
		return nil
	}
	switch {
	case n > len(m.buf):
		nb := make([]byte, n)
		m.w = copy(nb, m.buf[m.r:m.w])
		m.r = 0
		m.buf = nb
	case len(m.buf)-m.r < n:
		m.w = copy(m.buf, m.buf[m.r:m.w])
		m.r = 0
	}
	for m.w-m.r < n {
		if err := m.fill(); err != nil {
			return err
		}
	}
	return nil
}

// fill reads once from the connection into the free end of the buffer,
// first letting onBlock flush what the other direction has pending.
func (m *msgReader) fill() error {
	if m.r == m.w {
		m.r, m.w = 0, 0
	} else if m.w == len(m.buf) {
		m.w = copy(m.buf, m.buf[m.r:m.w])
		m.r = 0
	}
	if len(m.pre) > 0 {
		k := copy(m.buf[m.w:], m.pre)
		m.w += k
		if m.pre = m.pre[k:]; len(m.pre) == 0 {
			m.pre = nil
		}
		return nil
	}
	if m.onBlock != nil {
		if err := m.onBlock(); err != nil {
			return err
		}
	}
	k, err := m.rd.Read(m.buf[m.w:])
	m.w += k
	if k > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// errShortMessage reports a length field below the 4 bytes it counts itself.
var errShortMessage = errors.New("invalid message length")

// next returns the type and body length of the next message without
// consuming it. EOF before the first byte is io.EOF; EOF inside the header
// is io.ErrUnexpectedEOF.
func (m *msgReader) next() (typ byte, bodyLen int, err error) {
	if m.r == m.w && len(m.buf) != len(m.small) {
		// Drop the buffer a large message needed.
		m.buf, m.r, m.w = m.small, 0, 0
	}
	if err := m.ensure(5); err != nil {
		if errors.Is(err, io.EOF) && m.buffered() > 0 {
			err = io.ErrUnexpectedEOF
		}
		return 0, 0, err
	}
	h := m.buf[m.r : m.r+5]
	n := int32(binary.BigEndian.Uint32(h[1:]))
	if n < 4 {
		return h[0], 0, fmt.Errorf("%w %d for message type %q", errShortMessage, n, h[0])
	}
	return h[0], int(n) - 4, nil
}

// header parses the header of the next message, which must be buffered
// (buffered() >= 5), without consuming anything. The event loop uses it
// where next would read.
func (m *msgReader) header() (typ byte, bodyLen int, err error) {
	h := m.buf[m.r : m.r+5]
	n := int32(binary.BigEndian.Uint32(h[1:]))
	if n < 4 {
		return h[0], 0, fmt.Errorf("%w %d for message type %q", errShortMessage, n, h[0])
	}
	return h[0], int(n) - 4, nil
}

// compact moves buffered input to the start of the buffer, so that a read
// can complete any message that fits in it.
func (m *msgReader) compact() {
	switch {
	case m.r == m.w:
		m.r, m.w = 0, 0
	case m.r > 0:
		m.w = copy(m.buf, m.buf[m.r:m.w])
		m.r = 0
	}
}

// message consumes the message announced by next and returns it whole,
// header included. The slice is valid until the next call on m.
func (m *msgReader) message(bodyLen int) ([]byte, error) {
	n := 5 + bodyLen
	if err := m.ensure(n); err != nil {
		return nil, unexpectedEOF(err)
	}
	msg := m.buf[m.r : m.r+n : m.r+n]
	m.r += n
	return msg, nil
}

// messageOwned is message for a caller that may keep the message. One
// larger than the read buffer comes in a buffer of its own, which the
// reader lets go of at once and never touches again: owned is true, and
// the caller may keep the slice (and strings over it, ClientMessage.Text)
// for as long as it likes. Otherwise the slice points into the read
// buffer and is valid until the next call on m.
func (m *msgReader) messageOwned(bodyLen int) (msg []byte, owned bool, err error) {
	if msg, err = m.message(bodyLen); err != nil {
		return nil, false, err
	}
	if len(m.buf) != len(m.small) && m.r == m.w {
		m.buf, m.r, m.w = m.small, 0, 0
		return msg, true, nil
	}
	return msg, false, nil
}

// relay consumes the message announced by next and writes it to w. A
// message larger than the buffer is streamed through in buffer-sized pieces
// instead of being assembled. Errors from w are *writeError.
func (m *msgReader) relay(w io.Writer, bodyLen int) error {
	n := 5 + bodyLen
	if n <= len(m.small) {
		msg, err := m.message(bodyLen)
		if err != nil {
			return err
		}
		if _, err := w.Write(msg); err != nil {
			return &writeError{err}
		}
		return nil
	}
	for n > 0 {
		if m.r == m.w {
			if err := m.fill(); err != nil {
				return unexpectedEOF(err)
			}
		}
		k := min(m.w-m.r, n)
		if _, err := w.Write(m.buf[m.r : m.r+k]); err != nil {
			return &writeError{err}
		}
		m.r += k
		n -= k
	}
	return nil
}

// relayInPlace is relay for the event loop, where the whole message is
// buffered and the buffer is not touched again before w is flushed: w
// queues the message where it is.
func (m *msgReader) relayInPlace(w *msgWriter, bodyLen int) error {
	lo := m.r
	m.r += 5 + bodyLen
	if err := w.writeRef(m, lo, m.r); err != nil {
		return &writeError{err}
	}
	return nil
}

// discard consumes the message announced by next without keeping it.
func (m *msgReader) discard(bodyLen int) error {
	n := 5 + bodyLen
	for n > 0 {
		if m.r == m.w {
			if err := m.fill(); err != nil {
				return unexpectedEOF(err)
			}
		}
		k := min(m.w-m.r, n)
		m.r += k
		n -= k
	}
	return nil
}

// Startup packet limits, as in PostgreSQL's postmaster.
const (
	minStartupPacket = 8
	maxStartupPacket = 10000
)

// startupPacket reads one untyped startup-phase packet (StartupMessage,
// SSLRequest, GSSENCRequest, CancelRequest) and returns its body: the
// protocol code followed by the payload. Valid until the next call on m.
func (m *msgReader) startupPacket() ([]byte, error) {
	if err := m.ensure(4); err != nil {
		if errors.Is(err, io.EOF) && m.buffered() > 0 {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	n := int(int32(binary.BigEndian.Uint32(m.buf[m.r:])))
	if n < minStartupPacket || n > maxStartupPacket {
		return nil, &protocolError{msg: fmt.Sprintf("invalid length of startup packet: %d", n)}
	}
	if err := m.ensure(n); err != nil {
		return nil, unexpectedEOF(err)
	}
	body := m.buf[m.r+4 : m.r+n : m.r+n]
	m.r += n
	return body, nil
}

func unexpectedEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
