package audit

import (
	"compress/gzip"
	"io"
	"os"
	"strings"
)

// InstanceOf returns the instance field of the first event in the audit
// file at path ("" for a log written without state.dsn, or an empty file).
// Each instance sharing a control database writes its own chain; `pgmoat
// audit verify` uses this to verify the files of several instances, each
// chain on its own.
func InstanceOf(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(path, ".gz") {
		zr, err := gzip.NewReader(f)
		if err != nil {
			return "", err
		}
		defer zr.Close()
		r = zr
	}
	instance := ""
	err = forEachLine(r, func(_ int, line []byte) error {
		if ev, err := decode(line); err == nil {
			instance = ev.Instance
			return io.EOF
		}
		return nil // a fragment: look further
	})
	if err != nil && err != io.EOF {
		return "", err
	}
	return instance, nil
}
