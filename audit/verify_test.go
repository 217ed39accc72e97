package audit

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeLog writes n decision events to a new log at cfg.Path and returns
// the path.
func writeLog(t testing.TB, n int) string {
	t.Helper()
	cfg := testConfig(t)
	l, _ := openTest(t, cfg, Options{})
	for i := range n {
		record(t, l, Event{Kind: Decision, SessionID: fmt.Sprint("s-", i), Statement: fmt.Sprintf("DROP TABLE t%d", i), Decision: "block"})
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return cfg.Path
}

// lineStarts returns the offset of each line in data.
func lineStarts(data []byte) []int {
	starts := []int{0}
	for i, c := range data {
		if c == '\n' && i+1 < len(data) {
			starts = append(starts, i+1)
		}
	}
	return starts
}

func TestVerifyIntactLog(t *testing.T) {
	path := writeLog(t, 5)
	res := mustVerify(t, path)
	lines := readLines(t, path)
	if res.Lines != 5 || res.Files != 1 || res.FirstPrevHash != Genesis || res.UnchainedCount != 0 {
		t.Errorf("Verify = %+v", res)
	}
	_, lastHash, err := parseLine([]byte(lines[4]))
	if err != nil || res.LastHash != lastHash {
		t.Errorf("LastHash = %s, want the last line's hash %s (%v)", res.LastHash, lastHash, err)
	}
}

// TestEditingOneByteNamesTheLine changes, one at a time, every byte of a
// line in the middle and of the last line (its newline included), and
// checks that Verify names exactly that line.
func TestEditingOneByteNamesTheLine(t *testing.T) {
	path := writeLog(t, 6)
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	starts := lineStarts(orig)
	for _, target := range []int{3, 6} { // 1-based line numbers
		from := starts[target-1]
		to := len(orig)
		if target < len(starts) {
			to = starts[target]
		}
		for off := from; off < to; off++ {
			edited := bytes.Clone(orig)
			edited[off] ^= 0x01 // '\n' becomes 0x0b, 'a' becomes '`', …
			if err := os.WriteFile(path, edited, 0o600); err != nil {
				t.Fatal(err)
			}
			res, err := Verify(path)
			if err != nil {
				t.Fatal(err)
			}
			if res.Break == nil || res.Break.Line != target || res.Break.File != path {
				t.Fatalf("byte %d of line %d (%q→%q) edited: Verify break = %v, want line %d",
					off-from, target, orig[off], edited[off], res.Break, target)
			}
			if res.Lines != target-1 {
				t.Fatalf("byte %d of line %d edited: %d lines verified before the break, want %d", off-from, target, res.Lines, target-1)
			}
		}
	}
}

func TestVerifyRemovedInsertedReorderedLines(t *testing.T) {
	path := writeLog(t, 5)
	lines := readLines(t, path)
	for _, tc := range []struct {
		name      string
		lines     []string
		wantLine  int
		wantError error
	}{
		{"removed", []string{lines[0], lines[1], lines[3], lines[4]}, 3, ErrPrevMismatch},
		{"swapped", []string{lines[0], lines[2], lines[1], lines[3], lines[4]}, 2, ErrPrevMismatch},
		{"duplicated", []string{lines[0], lines[1], lines[1], lines[2]}, 3, ErrPrevMismatch},
		{"first removed", lines[1:], 0, nil}, // a file may start anywhere in the chain
		{"truncated line", []string{lines[0], lines[1][:40], lines[2]}, 2, ErrIncomplete},
		{"fragment the chain resumes after", []string{lines[0], "hello", lines[1]}, 0, nil},
		{"fragment the chain does not resume after", []string{lines[0], "hello", lines[2]}, 2, ErrIncomplete},
		{"restart", []string{lines[0], lines[1], lines[0]}, 3, ErrRestarted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "audit.log")
			if err := os.WriteFile(p, []byte(strings.Join(tc.lines, "\n")+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			res, err := Verify(p)
			if err != nil {
				t.Fatal(err)
			}
			if tc.wantError == nil {
				if !res.OK() {
					t.Fatalf("Verify: %v", res.Break)
				}
				wantUnchained := len(tc.lines) - res.Lines
				if res.UnchainedCount != wantUnchained || len(res.Unchained) != wantUnchained {
					t.Fatalf("Verify: %d chained lines, unchained %v, want %d unchained", res.Lines, res.Unchained, wantUnchained)
				}
				return
			}
			if res.Break == nil || res.Break.Line != tc.wantLine || !errors.Is(res.Break, tc.wantError) {
				t.Fatalf("Verify break = %v, want line %d: %v", res.Break, tc.wantLine, tc.wantError)
			}
		})
	}
}

func TestChainContinuesAcrossRestart(t *testing.T) {
	cfg := testConfig(t)
	for i := range 3 {
		l, _ := openTest(t, cfg, Options{})
		record(t, l, Event{Kind: ConfigLoaded, Reason: fmt.Sprint("start ", i)})
		l.RecordAsync(Event{Kind: SessionStart, SessionID: fmt.Sprint(i)})
		l.Close()
	}
	res := mustVerify(t, cfg.Path)
	if res.Lines != 6 || res.FirstPrevHash != Genesis {
		t.Errorf("Verify = %+v, want 6 lines from genesis", res)
	}
}

func TestChainContinuesAcrossRotation(t *testing.T) {
	cfg := testConfig(t)
	l, _ := openTest(t, cfg, Options{})
	rotated := []string{cfg.Path + ".2", cfg.Path + ".1"}
	for _, old := range rotated {
		record(t, l, Event{Kind: Decision, Statement: "DROP TABLE a"})
		l.RecordAsync(Event{Kind: SessionEnd})
		// logrotate's create mode: rename, then signal pgmoat.
		if err := os.Rename(cfg.Path, old); err != nil {
			t.Fatal(err)
		}
		// Lines written between the rename and Reopen go to the old file.
		l.RecordAsync(Event{Kind: SessionStart})
		if err := l.Reopen(); err != nil {
			t.Fatal(err)
		}
	}
	record(t, l, Event{Kind: Decision, Statement: "DROP TABLE b"})
	l.Close()

	for _, p := range rotated {
		if n := len(readLines(t, p)); n != 3 {
			t.Errorf("%s has %d lines, want 3", p, n)
		}
	}
	res := mustVerify(t, rotated[0], rotated[1], cfg.Path)
	if res.Lines != 7 || res.Files != 3 || res.FirstPrevHash != Genesis {
		t.Errorf("Verify = %+v", res)
	}

	// The newest file alone verifies, chaining from the previous file's end.
	prevLast := readLines(t, rotated[1])[2]
	_, prevHash, _ := parseLine([]byte(prevLast))
	if res := mustVerify(t, cfg.Path); res.FirstPrevHash != prevHash {
		t.Errorf("new file chains from %s, want the rotated file's last hash %s", res.FirstPrevHash, prevHash)
	}

	// Out of order, the break is at the first line of the misplaced file.
	res, err := Verify(rotated[1], rotated[0])
	if err != nil {
		t.Fatal(err)
	}
	if res.Break == nil || res.Break.File != rotated[0] || res.Break.Line != 1 {
		t.Errorf("files out of order: break = %v, want %s:1", res.Break, rotated[0])
	}
}

func TestVerifyCompressedRotatedFile(t *testing.T) {
	cfg := testConfig(t)
	l, _ := openTest(t, cfg, Options{})
	record(t, l, Event{Kind: ConfigLoaded})
	os.Rename(cfg.Path, cfg.Path+".1")
	if err := l.Reopen(); err != nil {
		t.Fatal(err)
	}
	record(t, l, Event{Kind: ConfigLoaded})
	l.Close()

	data, err := os.ReadFile(cfg.Path + ".1")
	if err != nil {
		t.Fatal(err)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(data)
	zw.Close()
	if err := os.WriteFile(cfg.Path+".1.gz", gz.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if res := mustVerify(t, cfg.Path+".1.gz", cfg.Path); res.Lines != 2 {
		t.Errorf("Verify = %+v", res)
	}
}

func TestVerifyCommand(t *testing.T) {
	path := writeLog(t, 4)
	var out bytes.Buffer
	if code := VerifyCommand(&out, VerifyOptions{}, []string{path}); code != 0 {
		t.Fatalf("exit %d on an intact log:\n%s", code, &out)
	}
	if !strings.Contains(out.String(), "ok: 4 lines in 1 file, chained from genesis") {
		t.Errorf("report:\n%s", &out)
	}

	data, _ := os.ReadFile(path)
	starts := lineStarts(data)
	data[starts[2]+20] ^= 0x01
	os.WriteFile(path, data, 0o600)
	out.Reset()
	if code := VerifyCommand(&out, VerifyOptions{}, []string{path}); code != 1 {
		t.Fatalf("exit %d on an edited log, want 1:\n%s", code, &out)
	}
	if want := fmt.Sprintf("BROKEN: %s:3: hash does not match the line's content (the line was edited)\n2 lines verified before it\n", path); !strings.Contains(out.String(), want) {
		t.Errorf("report does not say %q:\n%s", want, &out)
	}

	out.Reset()
	if code := VerifyCommand(&out, VerifyOptions{}, []string{filepath.Join(t.TempDir(), "missing")}); code != 1 {
		t.Errorf("exit %d for a missing file, want 1:\n%s", code, &out)
	}
	out.Reset()
	if code := VerifyCommand(&out, VerifyOptions{}, nil); code != 1 || !strings.Contains(out.String(), "usage") {
		t.Errorf("no files: exit %d:\n%s", code, &out)
	}
}

func TestOpenContinuesAfterTornTail(t *testing.T) {
	path := writeLog(t, 3)
	lines := readLines(t, path)
	// A crash in the middle of a write leaves part of a line, no newline.
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(lines[2][:50])
	f.Close()

	l, _ := openTest(t, cfgFor(path), Options{})
	record(t, l, Event{Kind: ConfigLoaded})
	l.Close()

	got := readLines(t, path)
	if len(got) != 5 || got[3] != lines[2][:50] {
		t.Fatalf("file after restart:\n%s", strings.Join(got, "\n"))
	}
	res := mustVerify(t, path)
	if res.Lines != 4 || res.UnchainedCount != 1 || res.Unchained[0].Line != 4 || !errors.Is(&res.Unchained[0], ErrIncomplete) {
		t.Errorf("Verify = %+v, want 4 chained lines and line 4 outside the chain", res)
	}
}

func TestOpenAfterTornFirstWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	os.WriteFile(path, []byte(`{"time":"2025-01-01T00:00:00.000000Z","ev`), 0o600)
	l, _ := openTest(t, cfgFor(path), Options{})
	record(t, l, Event{Kind: ConfigLoaded})
	l.Close()
	res := mustVerify(t, path)
	if res.Lines != 1 || res.FirstPrevHash != Genesis || res.UnchainedCount != 1 {
		t.Errorf("Verify = %+v", res)
	}
}

func TestOpenRefusesAFileThatIsNotAnAuditLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notes.txt")
	for _, lines := range []int{2, 100} {
		os.WriteFile(path, bytes.Repeat([]byte("some text\n"), lines), 0o600)
		if l, err := Open(cfgFor(path), Options{}); err == nil {
			l.Close()
			t.Fatalf("Open appended to a file of %d lines that are not audit lines", lines)
		}
	}
}

func TestOpenWarnsAboutAnEditedLastLine(t *testing.T) {
	path := writeLog(t, 3)
	data, _ := os.ReadFile(path)
	// The last line stays complete, with a hash that no longer matches.
	data = bytes.Replace(data, []byte("DROP TABLE t2"), []byte("DROP TABLE t9"), 1)
	os.WriteFile(path, data, 0o600)

	var logs logBuffer
	l, _ := openTest(t, cfgFor(path), Options{Logger: newTextLogger(&logs)})
	record(t, l, Event{Kind: ConfigLoaded})
	l.Close()
	if !strings.Contains(logs.String(), "last line does not verify") {
		t.Errorf("no warning about the edited last line:\n%s", &logs)
	}
	// The new line chains from the edited line's stated hash, so Verify
	// names the edited line, not the new one.
	res, err := Verify(path)
	if err != nil {
		t.Fatal(err)
	}
	if res.Break == nil || res.Break.Line != 3 {
		t.Errorf("break = %v, want line 3", res.Break)
	}
}

// TestOpenContinuesAfterLongLine makes Open read the last line back in
// several chunks.
func TestOpenContinuesAfterLongLine(t *testing.T) {
	cfg := testConfig(t)
	long := "SELECT '" + strings.Repeat("x", 700<<10) + "'"
	for range 2 {
		l, _ := openTest(t, cfg, Options{})
		record(t, l, Event{Kind: Decision, Statement: long})
		l.Close()
	}
	if res := mustVerify(t, cfg.Path); res.Lines != 2 {
		t.Errorf("Verify = %+v", res)
	}
}
