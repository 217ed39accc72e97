package proxy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

func frame(typ byte, body []byte) []byte {
	b := make([]byte, 5, 5+len(body))
	b[0] = typ
	binary.BigEndian.PutUint32(b[1:], uint32(4+len(body)))
	return append(b, body...)
}

// chunkReader returns its data in reads of at most size bytes and counts
// the reads.
type chunkReader struct {
	data  []byte
	size  int
	reads int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	r.reads++
	n := min(len(p), r.size, len(r.data))
	copy(p, r.data[:n])
	r.data = r.data[n:]
	return n, nil
}

func TestMsgReaderFramesAcrossReads(t *testing.T) {
	var in []byte
	in = append(in, frame('Q', []byte("SELECT 1\x00"))...)
	in = append(in, frame('S', nil)...)
	in = append(in, frame('d', bytes.Repeat([]byte("x"), 3*bufSize))...)
	in = append(in, frame('X', nil)...)
	m := newMsgReader(iotest.OneByteReader(bytes.NewReader(in)))
	var out bytes.Buffer
	var types []byte
	for {
		typ, n, err := m.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		types = append(types, typ)
		if err := m.relay(&out, n); err != nil {
			t.Fatal(err)
		}
	}
	if string(types) != "QSdX" {
		t.Errorf("types %q, want QSdX", types)
	}
	if !bytes.Equal(out.Bytes(), in) {
		t.Errorf("relayed bytes differ from input")
	}
	if len(m.buf) != bufSize {
		t.Errorf("relaying a %d-byte message grew the buffer to %d", 3*bufSize, len(m.buf))
	}
}

func TestMsgReaderLargeMessageBufferIsDropped(t *testing.T) {
	body := bytes.Repeat([]byte("y"), 4*bufSize)
	in := append(frame('Q', body), frame('S', nil)...)
	m := newMsgReader(&chunkReader{data: in, size: 1000})
	_, n, err := m.next()
	if err != nil {
		t.Fatal(err)
	}
	msg, err := m.message(n)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(msg[5:], body) {
		t.Fatal("assembled body differs")
	}
	typ, _, err := m.next()
	if err != nil || typ != 'S' {
		t.Fatalf("next after large message: %q, %v", typ, err)
	}
	if _, err := m.message(0); err != nil {
		t.Fatal(err)
	}
	if _, _, err := m.next(); !errors.Is(err, io.EOF) {
		t.Fatalf("want EOF, got %v", err)
	}
	if len(m.buf) != bufSize {
		t.Errorf("buffer still %d bytes after the large message was consumed", len(m.buf))
	}
}

func TestMsgReaderFlushesOnlyWhenInputRunsOut(t *testing.T) {
	// Three small messages arrive in one read: onBlock must run before
	// that read and before the read that finds EOF, not between the
	// messages, so they would leave in one write.
	var in []byte
	for range 3 {
		in = append(in, frame('Q', []byte("SELECT 1\x00"))...)
	}
	m := newMsgReader(&chunkReader{data: in, size: len(in)})
	var blocks []int // messages consumed when onBlock ran
	consumed := 0
	m.onBlock = func() error { blocks = append(blocks, consumed); return nil }
	for {
		_, n, err := m.next()
		if err != nil {
			break
		}
		if _, err := m.message(n); err != nil {
			t.Fatal(err)
		}
		consumed++
	}
	if len(blocks) != 2 || blocks[0] != 0 || blocks[1] != 3 {
		t.Errorf("onBlock ran after %v messages, want [0 3]", blocks)
	}
}

func TestMsgReaderErrors(t *testing.T) {
	t.Run("short length", func(t *testing.T) {
		m := newMsgReader(bytes.NewReader([]byte{'Q', 0, 0, 0, 3}))
		if _, _, err := m.next(); !errors.Is(err, errShortMessage) {
			t.Errorf("got %v, want errShortMessage", err)
		}
	})
	t.Run("eof inside header", func(t *testing.T) {
		m := newMsgReader(bytes.NewReader([]byte{'Q', 0, 0}))
		if _, _, err := m.next(); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("got %v, want ErrUnexpectedEOF", err)
		}
	})
	t.Run("eof inside body", func(t *testing.T) {
		m := newMsgReader(bytes.NewReader(frame('Q', []byte("SELECT 1\x00"))[:8]))
		_, n, err := m.next()
		if err != nil {
			t.Fatal(err)
		}
		if err := m.relay(io.Discard, n); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("got %v, want ErrUnexpectedEOF", err)
		}
	})
	t.Run("write error is marked", func(t *testing.T) {
		m := newMsgReader(bytes.NewReader(frame('S', nil)))
		_, n, _ := m.next()
		var we *writeError
		if err := m.relay(failWriter{}, n); !errors.As(err, &we) {
			t.Errorf("got %v, want a *writeError", err)
		}
	})
	t.Run("startup packet bounds", func(t *testing.T) {
		for _, n := range []uint32{4, 7, 10001, 1 << 31} {
			b := binary.BigEndian.AppendUint32(nil, n)
			m := newMsgReader(bytes.NewReader(append(b, make([]byte, 16)...)))
			var pe *protocolError
			if _, err := m.startupPacket(); !errors.As(err, &pe) {
				t.Errorf("length %d: got %v, want a protocol error", n, err)
			}
		}
	})
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("boom") }

// FuzzMsgReader feeds arbitrary bytes, in arbitrary read sizes, through the
// framing and checks that whatever is relayed is exactly the input, message
// by message, and that nothing panics or loops.
func FuzzMsgReader(f *testing.F) {
	f.Add(frame('Q', []byte("SELECT 1\x00")), 3)
	f.Add(append(frame('P', []byte("\x00SELECT $1\x00\x00\x00")), frame('S', nil)...), 1)
	f.Add([]byte{'d', 0, 0, 0x80, 0}, 7)
	f.Add([]byte{'X', 0xff, 0xff, 0xff, 0xff}, 2)
	f.Fuzz(func(t *testing.T, in []byte, size int) {
		if size <= 0 || size > 1<<16 {
			size = 1
		}
		m := newMsgReader(&chunkReader{data: in, size: size})
		var out bytes.Buffer
		for {
			_, n, err := m.next()
			if err != nil {
				break
			}
			if n > 1<<20 {
				break // the relay refuses these before reading them
			}
			if err := m.relay(&out, n); err != nil {
				break
			}
		}
		if !bytes.HasPrefix(in, out.Bytes()) {
			t.Fatalf("relayed bytes are not a prefix of the input")
		}
	})
}
