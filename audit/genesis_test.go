package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgmoat/pgmoat/metrics"
)

// TestFromGenesisCatchesLinesCutFromTheStart cuts the first lines off a
// log. Plain Verify cannot tell the rest from a log that continues a
// rotated file; with FromGenesis (`audit verify --from-genesis`) the first
// line is a break. Before genesis marks, both verified.
func TestFromGenesisCatchesLinesCutFromTheStart(t *testing.T) {
	path := writeLog(t, 5)
	full := mustVerifyWith(t, VerifyOptions{FromGenesis: true}, path)
	if !full.FromGenesis || full.LastSeq != 5 || full.Lines != 5 {
		t.Errorf("whole log: %+v, want 5 lines from genesis, head seq 5", full)
	}
	lines := readLines(t, path)
	if !strings.Contains(lines[0], `"genesis":true,"seq":1,"prev_hash":"`+Genesis) || strings.Contains(lines[1], "genesis") {
		t.Errorf("the genesis mark is not on the first line only:\n%s\n%s", lines[0], lines[1])
	}

	cut := filepath.Join(t.TempDir(), "cut.log")
	writeLines(t, cut, lines[2:])
	res := mustVerify(t, cut)
	if res.FromGenesis || res.LastSeq != 5 || res.LastHash != full.LastHash {
		t.Errorf("cut log without FromGenesis: %+v", res)
	}
	res, err := VerifyWith(VerifyOptions{FromGenesis: true}, cut)
	if err != nil {
		t.Fatal(err)
	}
	if res.Break == nil || res.Break.Line != 1 || !errors.Is(res.Break.Err, ErrNotGenesis) {
		t.Errorf("cut log with FromGenesis: break %v, want line 1: %v", res.Break, ErrNotGenesis)
	}
	var out bytes.Buffer
	if code := VerifyCommand(&out, VerifyOptions{FromGenesis: true}, []string{cut}); code != 1 || !strings.Contains(out.String(), "BROKEN: "+cut+":1: the first line does not start a chain") {
		t.Errorf("verify --from-genesis of the cut log: exit %d\n%s", code, &out)
	}
	out.Reset()
	if code := VerifyCommand(&out, VerifyOptions{}, []string{path}); code != 0 || !strings.Contains(out.String(), "chain head: seq 5 hash "+full.LastHash) {
		t.Errorf("verify does not print the chain head: exit %d\n%s", code, &out)
	}
}

// TestSequenceAcrossRestartAndRotation: the sequence number runs on across
// a restart and a rotation, as the chain does; the head on /metrics is the
// last line's.
func TestSequenceAcrossRestartAndRotation(t *testing.T) {
	cfg := testConfig(t)
	m := metrics.New(nil)
	l, _ := openTest(t, cfg, Options{Metrics: m})
	record(t, l, Event{Kind: ConfigLoaded})
	record(t, l, Event{Kind: SessionStart})
	l.Close()
	l, _ = openTest(t, cfg, Options{Metrics: m})
	record(t, l, Event{Kind: ConfigLoaded})
	if err := os.Rename(cfg.Path, cfg.Path+".1"); err != nil {
		t.Fatal(err)
	}
	if err := l.Reopen(); err != nil {
		t.Fatal(err)
	}
	record(t, l, Event{Kind: SessionEnd})
	hash, seq, _ := m.AuditChainHead.Get()
	l.Close()

	res := mustVerifyWith(t, VerifyOptions{FromGenesis: true}, cfg.Path+".1", cfg.Path)
	if res.Lines != 4 || res.LastSeq != 4 || res.LastHash != hash || seq != 4 {
		t.Errorf("Verify = %+v; /metrics head %s seq %v; want 4 lines, head seq 4 on both", res, hash, seq)
	}
	evs, err := ReadFile(cfg.Path)
	if err != nil || len(evs) != 1 || evs[0].Seq != 4 || evs[0].Genesis {
		t.Errorf("rotated-to file: %+v, %v; want one line, seq 4, no genesis mark", evs, err)
	}
}

// TestLegacyLogStillVerifies verifies a log written before sequence numbers
// and genesis marks (testdata, from the previous writer), alone and with
// lines this writer appended to it.
func TestLegacyLogStillVerifies(t *testing.T) {
	old := []string{"testdata/legacy.log.1", "testdata/legacy.log"}
	res := mustVerifyWith(t, VerifyOptions{FromGenesis: true}, old...)
	if res.Lines != 5 || !res.FromGenesis || res.LastSeq != 0 {
		t.Errorf("legacy log: %+v", res)
	}
	var out bytes.Buffer
	if code := VerifyCommand(&out, VerifyOptions{FromGenesis: true}, old); code != 0 || !strings.Contains(out.String(), "(written before sequence numbers)") {
		t.Errorf("exit %d\n%s", code, &out)
	}

	// pgmoat upgraded: it continues the old file's chain, numbering from 1.
	dir := t.TempDir()
	for _, p := range old {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(p)), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg := cfgFor(filepath.Join(dir, "legacy.log"))
	l, _ := openTest(t, cfg, Options{})
	record(t, l, Event{Kind: ConfigLoaded})
	record(t, l, Event{Kind: SessionStart})
	l.Close()
	res = mustVerifyWith(t, VerifyOptions{FromGenesis: true}, filepath.Join(dir, "legacy.log.1"), cfg.Path)
	if res.Lines != 7 || res.LastSeq != 2 {
		t.Errorf("legacy log continued: %+v, want 7 lines, head seq 2", res)
	}
}

// TestForgedSequenceBreaks rewrites a line's seq and reseals it, as a
// tool that rewrote the log with a bug (or carelessly) would: the line's
// hash matches, the chain after it too, but the sequence does not.
func TestForgedSequenceBreaks(t *testing.T) {
	path := writeLog(t, 4)
	lines := readLines(t, path)
	lines[2] = reseal(t, strings.Replace(lines[2], `"seq":3,`, `"seq":7,`, 1))
	for i := 3; i < len(lines); i++ {
		lines[i] = reseal(t, lines[i][:strings.Index(lines[i], prevField)]+prevField+hashOf(lines[i-1])+`"}`)
	}
	writeLines(t, path, lines)
	res, err := Verify(path)
	if err != nil {
		t.Fatal(err)
	}
	if res.Break == nil || res.Break.Line != 3 || !errors.Is(res.Break.Err, ErrSequence) {
		t.Errorf("break %v, want line 3: %v", res.Break, ErrSequence)
	}
}

// reseal recomputes the hash of a line whose hash field is missing or
// stale: line is everything up to prev_hash's closing quote, then "}.
func reseal(t *testing.T, line string) string {
	t.Helper()
	if i := strings.Index(line, hashField); i >= 0 {
		line = line[:i] + "}"
	}
	body := strings.TrimSuffix(line, "}")
	sum := sha256.Sum256([]byte(body))
	return body + hashField + hex.EncodeToString(sum[:]) + `"}`
}

func hashOf(line string) string {
	return line[len(line)-hashLen-2 : len(line)-2]
}

func writeLines(t *testing.T, path string, lines []string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

func mustVerifyWith(t testing.TB, opts VerifyOptions, paths ...string) Result {
	t.Helper()
	res, err := VerifyWith(opts, paths...)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if !res.OK() {
		t.Fatalf("Verify: chain broken: %v", res.Break)
	}
	return res
}
