package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"testing"
)

// seedLog returns a small real log to start the fuzzers from.
func seedLog(t testing.TB) []byte {
	data, err := os.ReadFile(writeLog(t, 3))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// legacyLog returns lines written before sequence numbers and genesis
// marks existed.
func legacyLog(t testing.TB) []byte {
	data, err := os.ReadFile("testdata/legacy.log.1")
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// FuzzParseLine checks that whatever parseLine accepts is exactly a line
// seal would write: a JSON object whose hash covers it.
func FuzzParseLine(f *testing.F) {
	for _, line := range bytes.Split(seedLog(f), []byte("\n")) {
		f.Add(line)
	}
	f.Add([]byte(`{"a":1` + prevField + Genesis + `"` + hashField + Genesis + `"}`))
	for _, line := range bytes.Split(legacyLog(f), []byte("\n")) {
		f.Add(line)
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		prev, hash, err := parseLine(line)
		if err != nil {
			return
		}
		if !json.Valid(line) || line[0] != '{' {
			t.Fatalf("accepted a line that is not a JSON object: %q", line)
		}
		sum := sha256.Sum256(line[:len(line)-sealLen+hashedLen])
		if hex.EncodeToString(sum[:]) != hash {
			t.Fatalf("accepted hash %s that does not cover the line %q", hash, line)
		}
		seq, genesis := chainPosition(line)
		if seq == 0 {
			return // a line from before sequence numbers: seal no longer writes those
		}
		head := line[:len(line)-sealLen]
		head = head[:bytes.LastIndex(head, []byte(seqField))]
		if genesis {
			head = head[:len(head)-len(genesisField)]
		}
		body := append(bytes.Clone(head), '}')
		resealed, h := seal(nil, body, prev, seq)
		if (prev == Genesis) != genesis {
			// The genesis mark disagrees with prev_hash: Verify refuses such
			// a line (ErrSequence), and seal cannot write it.
			return
		}
		if !bytes.Equal(resealed, append(bytes.Clone(line), '\n')) || h != hash {
			t.Fatalf("line %q is not what seal writes for its body: %q", line, resealed)
		}
	})
}

// FuzzVerify feeds arbitrary files to the verifier: it must not panic,
// and must account for every line.
func FuzzVerify(f *testing.F) {
	log := seedLog(f)
	f.Add(log)
	f.Add(append(bytes.Clone(log), log...))
	f.Add(append([]byte("torn\n"), log...))
	f.Add(append(legacyLog(f), log...))
	f.Add([]byte("\n\n{}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var v verifier
		if err := v.read("fuzz", bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		v.end()
		lines := bytes.Count(data, []byte("\n"))
		if len(data) > 0 && data[len(data)-1] != '\n' {
			lines++
		}
		res := v.res
		if res.Break == nil && res.Lines+res.UnchainedCount != lines {
			t.Fatalf("%d lines chained and %d unchained, of %d", res.Lines, res.UnchainedCount, lines)
		}
		if res.Break != nil && (res.Break.Line < 1 || res.Break.Line > lines || res.Lines >= lines) {
			t.Fatalf("break %v with %d chained lines, of %d", res.Break, res.Lines, lines)
		}
	})
}
