package audit

import (
	"bytes"
	"errors"
	"io"
	"os"
)

// Tail returns up to n of the last events of the audit file at path that
// keep returns true for, oldest first, reading at most maxBytes from the
// end of the file. Lines that are not events (a fragment of a failed
// write) are skipped; Tail does not verify the chain (Verify does). The
// console's audit trail reads it.
func Tail(path string, maxBytes int64, n int, keep func(*Event) bool) ([]Event, error) {
	if path == "" || path == "-" {
		return nil, errors.New("the audit log is not a file (audit.path is " + map[bool]string{true: "empty", false: "stdout"}[path == ""] + ")")
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	off := max(st.Size()-maxBytes, 0)
	buf := make([]byte, st.Size()-off)
	if _, err := f.ReadAt(buf, off); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	if off > 0 {
		// Drop the partial first line.
		if i := bytes.IndexByte(buf, '\n'); i >= 0 {
			buf = buf[i+1:]
		} else {
			buf = nil
		}
	}
	var out []Event
	for len(buf) > 0 && len(out) < n {
		end := len(buf)
		if buf[end-1] == '\n' {
			end--
		}
		start := bytes.LastIndexByte(buf[:end], '\n') + 1
		line := buf[start:end]
		buf = buf[:start]
		if len(line) == 0 {
			continue
		}
		ev, err := decode(line)
		if err != nil || (keep != nil && !keep(&ev)) {
			continue
		}
		out = append(out, ev)
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, nil
}
