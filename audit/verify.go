package audit

import (
	"bufio"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// LineError names one line of an audit file and what is wrong with it.
type LineError struct {
	File string
	Line int // 1-based
	Err  error
}

func (e *LineError) Error() string { return fmt.Sprintf("%s:%d: %v", e.File, e.Line, e.Err) }
func (e *LineError) Unwrap() error { return e.Err }

// Result is what Verify found.
type Result struct {
	Files int
	// Lines counts the lines that verified and are part of the chain.
	Lines int
	// FirstPrevHash is the first chained line's prev_hash: Genesis when
	// the files start the log, otherwise the hash of the last line of an
	// earlier file that was not given.
	FirstPrevHash string
	// LastHash is the last chained line's hash, and LastSeq its sequence
	// number (0 for a line written before sequence numbers): the chain's
	// head. pgmoat exports its head on /metrics
	// (pgmoat_audit_chain_head_sequence) and logs it when it rotates or
	// closes the log; a head recorded there that this one has not reached
	// shows that lines were cut off the end, which no chain can show by
	// itself.
	LastHash string
	LastSeq  uint64
	// FromGenesis is set when the first chained line starts a chain
	// (its prev_hash is Genesis).
	FromGenesis bool
	// Unchained lists incomplete lines that the chain continues across:
	// fragments left by failed writes (a full disk on a sink pgmoat could
	// not truncate) or by a crash during a write. They were never part of
	// the log and do not break it; they are listed so that nothing in the
	// file goes unmentioned. At most maxUnchained are kept;
	// UnchainedCount counts them all.
	Unchained      []LineError
	UnchainedCount int
	// Break is the first line that breaks the chain, nil if it holds.
	Break *LineError
}

// OK reports whether the chain holds through every line.
func (r *Result) OK() bool { return r.Break == nil }

// VerifyOptions tighten what Verify accepts.
type VerifyOptions struct {
	// FromGenesis requires the first line to start a chain (prev_hash
	// Genesis; since sequence numbers, also "genesis":true and seq 1):
	// without it, a log whose first lines were cut off verifies as one
	// that continues an older file not given.
	FromGenesis bool
}

const maxUnchained = 100

// Verify checks the hash chain through the given audit files, oldest
// first: the chain continues from each file into the next, as it does
// across rotation. A path ending in .gz is decompressed; "-" is standard
// input. The error is for files that cannot be read; a broken chain is
// reported in Result.Break, with the first line that does not verify.
//
// A line verifies when its hash is the SHA-256 of its bytes up to the
// hash field and its prev_hash is the hash of the chained line before it.
// The first complete line that does not is the break. A line that is not
// complete (it does not end with the prev_hash and hash fields) is a
// fragment of a failed write when the chain resumes after it from the
// last good line: it is listed in Unchained and does not break the chain.
// An edit cannot pass for one, because the line after an edited line
// chains from the edited line's original hash, not from the line before.
//
// Since sequence numbers, every line also carries seq, one more than the
// line before it (a line after one written before sequence numbers may
// start anywhere), and the first line of a chain "genesis":true and seq 1.
func Verify(paths ...string) (Result, error) {
	return VerifyWith(VerifyOptions{}, paths...)
}

// VerifyWith is Verify with options.
func VerifyWith(opts VerifyOptions, paths ...string) (Result, error) {
	if len(paths) == 0 {
		return Result{}, errors.New("audit: no files to verify")
	}
	v := verifier{opts: opts}
	for _, p := range paths {
		if err := v.file(p); err != nil {
			return v.res, err
		}
		v.res.Files++
	}
	v.end()
	return v.res, nil
}

// verifier walks the lines of all files as one stream.
type verifier struct {
	opts VerifyOptions
	res  Result
	head string // hash of the last chained line; "" before the first
	seq  uint64 // its sequence number; 0 if it has none
	// run holds the lines since the last chained one that did not chain:
	// they become the break if the chain never resumes.
	run      []LineError
	runCount int
}

func (v *verifier) file(path string) error {
	var r io.Reader
	if path == "-" {
		r = os.Stdin
	} else {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
		if strings.HasSuffix(path, ".gz") {
			zr, err := gzip.NewReader(f)
			if err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			defer zr.Close()
			r = zr
		}
	}
	return v.read(path, r)
}

// read feeds the lines of r, named name in reports, to the verifier.
func (v *verifier) read(name string, r io.Reader) error {
	err := forEachLine(r, func(no int, line []byte) error {
		v.line(name, no, line)
		return nil
	})
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// forEachLine calls fn with each line of r (1-based number, bytes without
// the newline, valid only during the call), lines of any length included,
// and a last line without a newline. It stops at fn's first error.
func forEachLine(r io.Reader, fn func(no int, line []byte) error) error {
	br := bufio.NewReaderSize(r, 256<<10)
	var buf []byte
	for no := 1; ; no++ {
		buf = buf[:0]
		var err error
		for {
			var chunk []byte
			chunk, err = br.ReadSlice('\n')
			buf = append(buf, chunk...)
			if err != bufio.ErrBufferFull {
				break
			}
		}
		switch {
		case err == nil:
			buf = buf[:len(buf)-1]
		case err != io.EOF:
			return fmt.Errorf("line %d: %w", no, err)
		case len(buf) == 0:
			return nil
		}
		if ferr := fn(no, buf); ferr != nil {
			return ferr
		}
		if err == io.EOF {
			return nil
		}
	}
}

func (v *verifier) line(file string, no int, b []byte) {
	if v.res.Break != nil {
		return
	}
	prev, hash, err := parseLine(b)
	if errors.Is(err, ErrIncomplete) {
		// A fragment: outside the chain if the chain resumes after it.
		if v.runCount < maxUnchained {
			v.run = append(v.run, LineError{File: file, Line: no, Err: err})
		}
		v.runCount++
		return
	}
	var seq uint64
	if err == nil {
		var genesis bool
		seq, genesis = chainPosition(b)
		first := v.head == ""
		switch {
		case first && len(v.run) == 0, first && prev == Genesis:
			// The first line (after leading fragments, only a log that
			// starts here): nothing before it to check against.
			v.res.FirstPrevHash = prev
			v.res.FromGenesis = prev == Genesis
			if v.opts.FromGenesis && !v.res.FromGenesis {
				err = ErrNotGenesis
			}
		case !first && prev == v.head:
		case prev == Genesis:
			err = ErrRestarted
		default:
			err = ErrPrevMismatch
		}
		// Lines with sequence numbers: genesis exactly where the chain
		// starts, at 1, and one more each line after.
		if err == nil && seq != 0 &&
			(genesis != (prev == Genesis) || genesis && seq != 1 || !genesis && v.seq != 0 && seq != v.seq+1) {
			err = ErrSequence
		}
	}
	if err != nil {
		// A complete line that does not verify, or does not chain: the
		// break, unless fragments came first that the chain never resumed
		// after (an edit can turn a line into a fragment).
		if len(v.run) > 0 {
			v.res.Break = &v.run[0]
		} else {
			v.res.Break = &LineError{File: file, Line: no, Err: err}
		}
		return
	}
	// The chain continues here: the fragments since the last chained line
	// were outside it.
	v.res.UnchainedCount += v.runCount
	for _, le := range v.run {
		if len(v.res.Unchained) < maxUnchained {
			v.res.Unchained = append(v.res.Unchained, le)
		}
	}
	v.run, v.runCount = v.run[:0], 0
	v.head, v.seq = hash, seq
	v.res.LastHash, v.res.LastSeq = hash, seq
	v.res.Lines++
}

func (v *verifier) end() {
	if v.res.Break == nil && len(v.run) > 0 {
		b := v.run[0]
		v.res.Break = &b
	}
}

// VerifyCommand is `pgmoat audit verify [--from-genesis] FILE…`: it
// verifies the files (oldest first), writes a report to out and returns
// the exit code, 0 when the chain holds and 1 when it is broken or a file
// cannot be read. The report ends with the chain's head, to compare with
// one recorded elsewhere.
func VerifyCommand(out io.Writer, opts VerifyOptions, paths []string) int {
	if len(paths) == 0 {
		fmt.Fprintln(out, "usage: pgmoat audit verify [--from-genesis] FILE... (oldest first; .gz files are read compressed)")
		return 1
	}
	res, err := VerifyWith(opts, paths...)
	if err != nil {
		fmt.Fprintf(out, "audit verify: %v\n", err)
		return 1
	}
	for _, u := range res.Unchained {
		fmt.Fprintf(out, "note: %s:%d: skipped, outside the chain (the chain continues after it): %v\n", u.File, u.Line, u.Err)
	}
	if n := res.UnchainedCount - len(res.Unchained); n > 0 {
		fmt.Fprintf(out, "note: %s outside the chain not listed\n", count(n, "more line"))
	}
	if b := res.Break; b != nil {
		fmt.Fprintf(out, "BROKEN: %s:%d: %v\n", b.File, b.Line, b.Err)
		if b.Line == 1 && b.File != paths[0] && (errors.Is(b.Err, ErrPrevMismatch) || errors.Is(b.Err, ErrRestarted)) {
			fmt.Fprintln(out, "hint: give the files oldest first; the break may be between two files given out of order")
		}
		fmt.Fprintf(out, "%s verified before it\n", count(res.Lines, "line"))
		return 1
	}
	from := "genesis (the start of the log)"
	if !res.FromGenesis && res.FirstPrevHash != "" {
		from = "prev_hash " + res.FirstPrevHash + " (the file before the first one given; --from-genesis requires the start)"
	}
	fmt.Fprintf(out, "ok: %s in %s, chained from %s\n", count(res.Lines, "line"), count(res.Files, "file"), from)
	switch {
	case res.LastHash == "":
	case res.LastSeq == 0:
		fmt.Fprintf(out, "chain head: hash %s (written before sequence numbers)\n", res.LastHash)
	default:
		fmt.Fprintf(out, "chain head: seq %d hash %s\n", res.LastSeq, res.LastHash)
	}
	return 0
}

func count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
