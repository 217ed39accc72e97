//go:build unix

package audit

import (
	"os"
	"syscall"
)

// fileRemoved reports whether f no longer has a name in any directory
// (someone ran rm on the audit file). A file logrotate renamed still has one.
func fileRemoved(f *os.File) bool {
	fi, err := f.Stat()
	if err != nil {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && st.Nlink == 0
}
