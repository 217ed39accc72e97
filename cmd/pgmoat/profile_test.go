package main

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// profiledBytes is where allocateForProfile's allocations go, so that
// the compiler keeps them.
var profiledBytes [][]byte

//go:noinline
func allocateForProfile() {
	for range 64 {
		profiledBytes = append(profiledBytes, make([]byte, 16<<10))
	}
}

// TestWriteAllocsProfile writes the profile --memprofile
// writes, right after allocating in a function of its own: the file is a
// gzipped pprof profile that names the function. (That it holds
// allocations made since the last collection does not depend, in this
// small a process, on the collection writeAllocsProfile runs first: the
// runtime publishes them here anyway.) A file that cannot be created is
// an error, reported, where it used to be ignored.
func TestWriteAllocsProfile(t *testing.T) {
	defer func(rate int) { runtime.MemProfileRate = rate }(runtime.MemProfileRate)
	runtime.MemProfileRate = 1
	allocateForProfile()
	defer func() { profiledBytes = nil }()

	path := filepath.Join(t.TempDir(), "mem.pprof")
	if err := writeAllocsProfile(path); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("not a gzipped pprof profile: %v", err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	// Function names are in the profile's string table as they are
	// (main.allocateForProfile in a binary, under the package's path in
	// a test).
	if !bytes.Contains(raw, []byte(".allocateForProfile")) {
		t.Errorf("the allocations profile (%d bytes) has nothing from allocateForProfile", len(raw))
	}
	if err := writeAllocsProfile(filepath.Join(t.TempDir(), "no-such-dir", "mem.pprof")); err == nil {
		t.Error("writing the profile into a missing directory: no error")
	}
}
