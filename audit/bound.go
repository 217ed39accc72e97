package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"unicode/utf8"
)

// Bounds on what one event may put in the log. A client controls the text
// of its statements, up to limits.max_message_size (64 MiB by default); a
// line per refused statement of that size would fill the audit disk, and
// a full audit disk stops every hold and approval. So the text is cut and
// its length and hash recorded instead, which still lets an auditor match
// it with a statement kept elsewhere.
const (
	// maxFieldBytes bounds reason, error and approval_reason: sentences,
	// which only a pathological input makes long (a syntax error quoting a
	// huge token).
	maxFieldBytes = 4 << 10
	// maxRedactBytes bounds the text audit.redact normalizes: pg_query
	// parses it whole, at many times its size in memory. A longer text is
	// recorded as a placeholder with its length.
	maxRedactBytes = 1 << 20
)

// bound applies the bounds to ev, after redaction: Statement is cut to
// maxStatement bytes (StatementBytes and StatementSHA256 then describe the
// whole text), the lists of objects and fingerprints to the same size in
// all (with ObjectsTotal and FingerprintsTotal), and the free-text fields
// to maxFieldBytes, marked with "…".
func bound(ev *Event, maxStatement int) {
	ev.StatementBytes, ev.StatementSHA256 = 0, ""
	if len(ev.Statement) > maxStatement {
		ev.StatementBytes = len(ev.Statement)
		ev.StatementSHA256 = sha256Hex(ev.Statement)
		ev.Statement = cutUTF8(ev.Statement, maxStatement)
	}
	ev.ObjectsTotal, ev.FingerprintsTotal = 0, 0
	if n := boundList(&ev.Objects, maxStatement); n > 0 {
		ev.ObjectsTotal = n
	}
	if n := boundList(&ev.Fingerprints, maxStatement); n > 0 {
		ev.FingerprintsTotal = n
	}
	for _, f := range []*string{&ev.Reason, &ev.Error, &ev.ApprovalReason} {
		if len(*f) > maxFieldBytes {
			*f = cutUTF8(*f, maxFieldBytes-len("…")) + "…"
		}
	}
}

// boundList keeps the first entries of *list whose lengths add up to at
// most max bytes, and returns the original count when it dropped some (0
// otherwise). The slice is replaced, not cut in place: it is the caller's.
func boundList(list *[]string, max int) int {
	total := 0
	for i, s := range *list {
		total += len(s) + 3 // quotes and comma
		if total > max {
			n := len(*list)
			*list = (*list)[:i:i]
			return n
		}
	}
	return 0
}

// redactBounded is redact, for a text no longer than maxRedactBytes.
func redactBounded(sql string) string {
	if len(sql) > maxRedactBytes {
		return fmt.Sprintf("<statement of %d bytes redacted: too long to normalize>", len(sql))
	}
	return redact(sql)
}

// cutUTF8 returns the longest prefix of s of at most n bytes that does not
// end inside a UTF-8 sequence.
func cutUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := n
	for i > 0 && i > n-utf8.UTFMax && !utf8.RuneStart(s[i]) {
		i--
	}
	if !utf8.RuneStart(s[i]) {
		i = n // not UTF-8 there anyway: it is written as U+FFFD
	}
	return s[:i]
}

// sha256Hex hashes s without copying it whole into a []byte (it may be
// tens of megabytes).
func sha256Hex(s string) string {
	h := sha256.New()
	var buf [32 << 10]byte
	for len(s) > 0 {
		n := copy(buf[:], s)
		h.Write(buf[:n])
		s = s[n:]
	}
	return hex.EncodeToString(h.Sum(nil))
}
