package proxy

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"unsafe"
)

// recordingWriter keeps every slice it was asked to write, taking at most
// max bytes of each (0: all), and fails once fail is set.
type recordingWriter struct {
	out    bytes.Buffer
	writes [][]byte
	max    int
	fail   error
}

func (w *recordingWriter) Write(p []byte) (int, error) {
	if w.fail != nil {
		return 0, w.fail
	}
	w.writes = append(w.writes, p)
	if w.max > 0 && len(p) > w.max {
		w.out.Write(p[:w.max])
		return w.max, io.ErrShortWrite
	}
	w.out.Write(p)
	return len(p), nil
}

// TestMsgWriterOrder drives msgWriter with random mixes of copied writes,
// runs queued in place (contiguous and not, from two sources) and
// flushes, and checks that the bytes come out in the order of the calls.
// A source is changed after every Flush, as the event loop's next read
// would, so a run still referenced after Flush shows up as wrong bytes.
func TestMsgWriterOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 14))
	for round := range 2000 {
		var rec recordingWriter
		var total atomic.Uint64
		b := newMsgWriter(&rec, &total)
		var want bytes.Buffer
		srcs := [2]*msgReader{newMsgReader(nil), newMsgReader(nil)}
		fill := func() {
			for _, r := range srcs {
				for i := range r.buf {
					r.buf[i] = byte(rng.Uint32())
				}
			}
		}
		fill()
		at := [2]int{}
		for range 1 + rng.IntN(40) {
			switch op := rng.IntN(10); {
			case op < 5: // in place, usually continuing the run
				i := 0
				if rng.IntN(4) == 0 {
					i = 1
				}
				if rng.IntN(5) == 0 {
					at[i] += rng.IntN(50) // a hidden message skipped
				}
				n := 1 + rng.IntN(300)
				if rng.IntN(50) == 0 {
					n = bufSize / 2
				}
				if at[i]+n > bufSize {
					at[i] = 0
				}
				if err := b.writeRef(srcs[i], at[i], at[i]+n); err != nil {
					t.Fatal(err)
				}
				want.Write(srcs[i].buf[at[i] : at[i]+n])
				at[i] += n
			case op < 8:
				p := make([]byte, 1+rng.IntN(200))
				if rng.IntN(40) == 0 {
					p = make([]byte, bufSize+rng.IntN(100))
				}
				for i := range p {
					p[i] = byte(rng.Uint32())
				}
				if n, err := b.Write(p); err != nil || n != len(p) {
					t.Fatalf("Write = %d, %v", n, err)
				}
				want.Write(p)
			default:
				if err := b.Flush(); err != nil {
					t.Fatal(err)
				}
				if b.Buffered() != 0 {
					t.Fatalf("Buffered after Flush = %d", b.Buffered())
				}
				fill()
				at = [2]int{}
			}
		}
		if err := b.Flush(); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(rec.out.Bytes(), want.Bytes()) {
			t.Fatalf("round %d: wrote %d bytes, want %d, or in another order", round, rec.out.Len(), want.Len())
		}
		if b.count != int64(want.Len()) || total.Load() != uint64(want.Len()) {
			t.Fatalf("round %d: counted %d bytes (total %d), wrote %d", round, b.count, total.Load(), want.Len())
		}
	}
}

// TestMsgWriterInPlace checks that a run of messages queued in place goes
// out in one write from the source itself, not from a copy.
func TestMsgWriterInPlace(t *testing.T) {
	var rec recordingWriter
	b := newMsgWriter(&rec, new(atomic.Uint64))
	r := newMsgReader(nil)
	copy(r.buf, bytes.Repeat([]byte("0123456789"), 100))
	src := r.buf
	for _, run := range [][2]int{{0, 10}, {10, 25}, {25, 300}} {
		if err := b.writeRef(r, run[0], run[1]); err != nil {
			t.Fatal(err)
		}
	}
	if got := b.Buffered(); got != 300 {
		t.Fatalf("Buffered = %d, want 300", got)
	}
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	if len(rec.writes) != 1 || len(rec.writes[0]) != 300 || &rec.writes[0][0] != &src[0] {
		t.Fatalf("want one write of 300 bytes from the source, got %d writes", len(rec.writes))
	}
	// A gap (a message not forwarded) starts a copy; so does anything
	// after a copied write.
	rec.writes = nil
	b.writeRef(r, 0, 10)
	b.writeRef(r, 20, 30)
	b.Write([]byte("x"))
	b.writeRef(r, 30, 40)
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	if len(rec.writes) != 1 || &rec.writes[0][0] == &src[0] {
		t.Fatalf("want one write from the buffer, got %d writes", len(rec.writes))
	}
	if got, want := string(rec.writes[0]), string(src[0:10])+string(src[20:30])+"x"+string(src[30:40]); got != want {
		t.Fatalf("wrote %q, want %q", got, want)
	}
}

// TestMsgWriterErrors checks that a failed or short write breaks the writer
// for good and lets go of what was queued in place.
func TestMsgWriterErrors(t *testing.T) {
	boom := errors.New("boom")
	for _, tc := range []struct {
		name string
		w    *recordingWriter
		want error
	}{
		{"failing", &recordingWriter{fail: boom}, boom},
		{"short", &recordingWriter{max: 5}, io.ErrShortWrite},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newMsgWriter(tc.w, new(atomic.Uint64))
			src := newMsgReader(nil)
			b.writeRef(src, 0, 50)
			if err := b.Flush(); !errors.Is(err, tc.want) {
				t.Fatalf("Flush = %v, want %v", err, tc.want)
			}
			if b.Buffered() != 0 || b.from != nil {
				t.Fatal("the run queued in place is still referenced after a failed Flush")
			}
			if err := b.writeRef(src, 50, 60); !errors.Is(err, tc.want) {
				t.Fatalf("writeRef after failure = %v", err)
			}
			if _, err := b.Write([]byte("x")); !errors.Is(err, tc.want) {
				t.Fatalf("Write after failure = %v", err)
			}
			if err := b.Flush(); !errors.Is(err, tc.want) {
				t.Fatalf("second Flush = %v", err)
			}
		})
	}
}

// TestPerMessageStateIsLineAligned keeps the session structs the relay
// touches for every message in the 64- and 128-byte size classes, whose
// objects start on a cache line, with their per-message fields on the
// first line: with hundreds of sessions, each line a message touches is
// a likely cache miss.
func TestPerMessageStateIsLineAligned(t *testing.T) {
	for _, c := range []struct {
		name      string
		size, hot uintptr // hot: the end of the per-message fields
	}{
		{"msgWriter", unsafe.Sizeof(msgWriter{}), unsafe.Sizeof(msgWriter{})},
		{"msgReader", unsafe.Sizeof(msgReader{}), unsafe.Offsetof(msgReader{}.rd)},
		{"clientToServer", unsafe.Sizeof(clientToServer{}), unsafe.Offsetof(clientToServer{}.pending)},
		{"serverToClient", unsafe.Sizeof(serverToClient{}), unsafe.Offsetof(serverToClient{}.pending)},
		{"replyQueue", unsafe.Sizeof(replyQueue{}), unsafe.Sizeof(replyQueue{})},
	} {
		if c.size != 64 && c.size != 128 {
			t.Errorf("%s is %d bytes: not a size class (64, 128) whose objects start on a cache line", c.name, c.size)
		}
		if c.hot > 64 {
			t.Errorf("%s's per-message fields take %d bytes, more than a cache line", c.name, c.hot)
		}
	}
}
