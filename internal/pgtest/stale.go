package pgtest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	// stalePrefix names the temporary directories Start makes.
	stalePrefix = "pgtest-"
	// ownerFile in such a directory holds the pid of the process that
	// made it.
	ownerFile = "owner.pid"
)

// tempBase returns the directory to make cluster directories in. When the
// server runs as another OS user, it must be able to reach its directory:
// every ancestor must be searchable by others.
func tempBase(su serverUser) (string, error) {
	base := os.TempDir()
	if su.cred == nil || searchable(base) {
		return base, nil
	}
	if searchable("/tmp") {
		return "/tmp", nil
	}
	return "", fmt.Errorf("neither %s nor /tmp can be reached by the postgres OS user; set TMPDIR to a directory whose ancestors are all o+x", base)
}

func searchable(dir string) bool {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return false
	}
	for {
		fi, err := os.Stat(dir)
		if err != nil || !fi.IsDir() || fi.Mode().Perm()&0o001 == 0 {
			return false
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return true
		}
		dir = parent
	}
}

// removeStale removes cluster directories in base whose owning process is
// gone: a test binary that crashed or was killed cannot clean up after
// itself, and its postmaster has already been sent SIGQUIT.
func removeStale(base string) {
	entries, err := os.ReadDir(base)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), stalePrefix) {
			continue
		}
		dir := filepath.Join(base, e.Name())
		b, err := os.ReadFile(filepath.Join(dir, ownerFile))
		if err != nil {
			continue // not ours, or being made right now
		}
		owner, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || alive(owner) {
			continue
		}
		if fi, err := os.Stat(dir); err != nil || time.Since(fi.ModTime()) < 10*time.Second {
			continue
		}
		if b, err := os.ReadFile(filepath.Join(dir, "data", "postmaster.pid")); err == nil {
			first, _, _ := strings.Cut(string(b), "\n")
			if pm, err := strconv.Atoi(strings.TrimSpace(first)); err == nil && alive(pm) {
				continue // a server still runs there: leave it alone
			}
		}
		_ = os.RemoveAll(dir)
	}
}

func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
