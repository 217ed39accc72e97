package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strconv"
)

// Genesis is the prev_hash of the first line of a new audit log (of a
// chain); that line also carries "genesis":true and "seq":1.
const Genesis = "0000000000000000000000000000000000000000000000000000000000000000"

const (
	hashLen      = sha256.Size * 2
	genesisField = `,"genesis":true`
	seqField     = `,"seq":`
	prevField    = `,"prev_hash":"`
	hashField    = `,"hash":"`
	// sealLen is the length of what seal appends after the event's fields:
	// ,"prev_hash":"<64 hex>","hash":"<64 hex>"}
	sealLen = len(prevField) + hashLen + 1 + len(hashField) + hashLen + 2
	// hashedLen is how much of the seal the hash covers (up to prev_hash's
	// closing quote).
	hashedLen = len(prevField) + hashLen + 1
)

// Why a line does not verify. Verify and Break report these.
var (
	ErrIncomplete   = errors.New("line does not end with prev_hash and hash fields (a torn write, or an edit)")
	ErrHashMismatch = errors.New("hash does not match the line's content (the line was edited)")
	ErrNotJSON      = errors.New("line is not a JSON object")
	ErrPrevMismatch = errors.New("prev_hash is not the previous line's hash (a line before it was removed, inserted or reordered)")
	ErrRestarted    = errors.New("chain restarts from genesis here: this log was started without its predecessor")
	ErrSequence     = errors.New("seq is not the previous line's seq + 1, or disagrees with the genesis mark")
	ErrNotGenesis   = errors.New("the first line does not start a chain (its prev_hash is not genesis): lines were cut from the start of the log, or the files before it were not given")
)

// seal appends to dst the complete line for body (an encoded event, a JSON
// object without chain fields) chained from prev as line number seq of its
// chain, newline included, and returns the extended slice and the line's
// hash.
//
// The line is body without its closing brace, then ,"genesis":true when
// prev is Genesis (the line starts a chain), then ,"seq":<seq>, then
// ,"prev_hash":"<prev>" — these bytes are what the hash covers — then
// ,"hash":"<hex sha256 of those bytes>"}. So the hash covers every byte of
// the line before the hash field, and since prev is the previous line's
// hash, every line is bound to all the lines before it.
func seal(dst, body []byte, prev string, seq uint64) ([]byte, string) {
	start := len(dst)
	dst = append(dst, body[:len(body)-1]...)
	if prev == Genesis {
		dst = append(dst, genesisField...)
	}
	dst = append(dst, seqField...)
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, prevField...)
	dst = append(dst, prev...)
	dst = append(dst, '"')
	sum := sha256.Sum256(dst[start:])
	var h [hashLen]byte
	hex.Encode(h[:], sum[:])
	dst = append(dst, hashField...)
	dst = append(dst, h[:]...)
	dst = append(dst, '"', '}', '\n')
	return dst, string(h[:])
}

// chainPosition reads the genesis mark and the sequence number seal puts
// before prev_hash in a line parseLine accepted. A line written before
// sequence numbers existed has neither: seq is 0. The fields are found by
// their bytes, not by decoding the line: a JSON string cannot contain
// ,"seq": (its quote would be escaped), so those bytes right before
// prev_hash are the key itself.
func chainPosition(line []byte) (seq uint64, genesis bool) {
	head := line[:len(line)-sealLen]
	i := len(head)
	for i > 0 && head[i-1] >= '0' && head[i-1] <= '9' {
		i--
	}
	if i == len(head) || len(head)-i > 19 || !bytes.HasSuffix(head[:i], []byte(seqField)) {
		return 0, false
	}
	seq, err := strconv.ParseUint(string(head[i:]), 10, 64)
	if err != nil {
		return 0, false
	}
	return seq, bytes.HasSuffix(head[:i-len(seqField)], []byte(genesisField))
}

// parseLine checks one line (without its newline) on its own: that it ends
// with the chain fields, that its hash matches its content and that it is a
// JSON object. It returns the chain fields; whether prev matches the line
// before is the caller's business.
func parseLine(line []byte) (prev, hash string, err error) {
	n := len(line)
	if n < sealLen+2 || line[0] != '{' {
		return "", "", ErrIncomplete
	}
	tail := line[n-sealLen:]
	p := tail[len(prevField) : len(prevField)+hashLen]
	h := tail[hashedLen+len(hashField) : hashedLen+len(hashField)+hashLen]
	if !bytes.HasPrefix(tail, []byte(prevField)) || tail[hashedLen-1] != '"' ||
		!bytes.HasPrefix(tail[hashedLen:], []byte(hashField)) || !bytes.HasSuffix(tail, []byte(`"}`)) ||
		!isLowerHex(p) || !isLowerHex(h) {
		return "", "", ErrIncomplete
	}
	sum := sha256.Sum256(line[:n-sealLen+hashedLen])
	var want [hashLen]byte
	hex.Encode(want[:], sum[:])
	if !bytes.Equal(want[:], h) {
		return "", "", ErrHashMismatch
	}
	if !json.Valid(line) {
		return "", "", ErrNotJSON
	}
	return string(p), string(h), nil
}

func isLowerHex(b []byte) bool {
	for _, c := range b {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
