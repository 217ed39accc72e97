package audit

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
)

// sink is where the writer puts lines: the audit file or stdout.
type sink interface {
	io.Writer
	// dropTail removes the last n bytes written: the torn part of a line
	// a failed write left behind. Sinks that cannot (stdout) return an error.
	dropTail(n int64) error
	// removed reports whether the file has been deleted from its
	// directory, so that what is written to it is lost when it is closed.
	removed() bool
	Close() error
}

// fileSink is the audit file, opened for appending.
type fileSink struct{ f *os.File }

func (s fileSink) Write(p []byte) (int, error) { return s.f.Write(p) }
func (s fileSink) Close() error                { return s.f.Close() }
func (s fileSink) removed() bool               { return fileRemoved(s.f) }

// dropTail truncates the file to its current size minus n. It goes by the
// file's size rather than an offset pgmoat kept, so that a file another
// tool truncated (logrotate's copytruncate) is never extended with zeros.
func (s fileSink) dropTail(n int64) error {
	fi, err := s.f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() || fi.Size() < n {
		return fmt.Errorf("cannot drop %d bytes from %s (%d bytes)", n, s.f.Name(), fi.Size())
	}
	return s.f.Truncate(fi.Size() - n)
}

// stdoutSink is standard output, which pgmoat neither truncates nor closes.
type stdoutSink struct{ w io.Writer }

func (s stdoutSink) Write(p []byte) (int, error) { return s.w.Write(p) }
func (s stdoutSink) Close() error                { return nil }
func (s stdoutSink) removed() bool               { return false }
func (s stdoutSink) dropTail(int64) error {
	return errors.New("cannot truncate standard output")
}

// openFile opens (creating it 0600 if missing) the audit file for
// appending. It is opened read-write so that the tail can be read through
// the same descriptor: what is read is what will be appended to.
func openFile(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
}

// tailState is what the end of an existing audit file says about how to
// continue it.
type tailState struct {
	// head is the hash of the last complete line, "" if there is none;
	// seq is its sequence number (0 for a line without one).
	head string
	seq  uint64
	// headErr is set when that line's own hash does not verify; the chain
	// continues from the hash it states, so that Verify names that line.
	headErr error
	// needNewline is set when the file does not end with a newline (a
	// torn last line): the next line must start on a line of its own.
	needNewline bool
}

// maxTailLines bounds how many lines, from the end, readTail examines to
// find the last complete audit line. Failed writes leave at most one torn
// fragment between complete lines, so only a file that is not an audit log
// comes near it.
const maxTailLines = 16

// readTail finds the last complete audit line of f by reading backwards.
// An empty file, or one that is a single fragment (a first write torn by a
// crash), has an empty head: the chain starts from Genesis. A file whose
// last lines are none of them audit lines is an error: pgmoat does not
// append to a file that is not its log.
func readTail(f *os.File) (tailState, error) {
	var st tailState
	fi, err := f.Stat()
	if err != nil {
		return st, err
	}
	if !fi.Mode().IsRegular() || fi.Size() == 0 {
		return st, nil
	}
	size := fi.Size()
	var last [1]byte
	if _, err := f.ReadAt(last[:], size-1); err != nil {
		return st, err
	}
	st.needNewline = last[0] != '\n'

	// Read chunks from the end; buf holds the file from pos to its end, and
	// the line being looked for ends at end.
	const chunk = 64 << 10
	var buf []byte
	pos, end := size, size
	if !st.needNewline {
		// The final newline ends the last line; it does not start one.
		end--
		pos, buf = end, last[:]
	}
	examined := 0
	for examined < maxTailLines {
		// The last line is buf[i+1 : end-pos] where i is the last newline
		// before end; read more until that newline (or the file start) is in buf.
		i := bytes.LastIndexByte(buf[:end-pos], '\n')
		if i < 0 && pos > 0 {
			// Double the read each time so that a long line costs
			// linear, not quadratic, copying.
			n := min(max(int64(chunk), int64(len(buf))), pos)
			more := make([]byte, n, int64(len(buf))+n)
			if _, err := f.ReadAt(more, pos-n); err != nil {
				return st, fmt.Errorf("read %s: %w", f.Name(), err)
			}
			buf = append(more, buf...)
			pos -= n
			continue
		}
		line := buf[i+1 : end-pos]
		examined++
		if _, hash, err := parseLine(line); err == nil {
			st.head = hash
			st.seq, _ = chainPosition(line)
			return st, nil
		} else if errors.Is(err, ErrHashMismatch) || errors.Is(err, ErrNotJSON) {
			// A complete but altered line: continue from the hash (and
			// sequence number) it states, and say so; Verify will name it.
			st.head = string(line[len(line)-hashLen-2 : len(line)-2])
			st.seq, _ = chainPosition(line)
			st.headErr = err
			return st, nil
		}
		if i < 0 {
			if examined > 1 {
				break
			}
			// The file is one fragment: a first write torn by a crash.
			return st, nil
		}
		end = pos + int64(i)
	}
	return st, fmt.Errorf("%s: none of its last %d lines is a pgmoat audit line; move it away or check it with `pgmoat audit verify`", f.Name(), examined)
}

// openPath opens the audit log at path ("-" for stdout) and reads how to
// continue its chain.
func openPath(path string) (sink, tailState, error) {
	if path == "-" {
		return stdoutSink{os.Stdout}, tailState{}, nil
	}
	f, err := openFile(path)
	if err != nil {
		return nil, tailState{}, err
	}
	st, err := readTail(f)
	if err != nil {
		f.Close()
		return nil, tailState{}, err
	}
	return fileSink{f}, st, nil
}
