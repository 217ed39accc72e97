package rules

import "strings"

// Placeholders that stand for literals in a fast-path key. They are
// control bytes, which normalize refuses in input, so a key can never be
// confused with a text that contains no literal there.
const (
	phInt    = '\x01'
	phDec    = '\x02'
	phString = '\x03'
)

// span is a statement's place in a message: [start, end).
type span struct{ start, end int }

// normalize is the fast path's lexer. For simple statements — the kind
// ORMs and pgbench send thousands of times with different literals — it
// returns the text with each literal replaced by a placeholder of its
// kind, and the statements' spans. It is deliberately conservative: on
// anything unusual (non-ASCII, backslashes, comments, dollar signs,
// prefixed strings E” B” X” N” U&”, quoted identifiers with escapes,
// numbers in forms it does not know) it returns ok=false and the statement
// takes the full path. Two texts with the same key therefore have the same
// token sequence except for literal values, so they parse to the same tree
// but for those values; the cache reuses a decision across them only when
// the analysis that made it never looked at a literal's value.
func normalize(sql string, buf []byte, spanBuf []span) (key []byte, spans []span, ok bool) {
	key = buf[:0]
	spans = spanBuf[:0]
	// The key is the text with each literal replaced by its placeholder:
	// sql[from:] is not in it yet, and is copied in one piece at the next
	// literal (or the end) rather than token by token.
	from := 0
	stmtStart := 0 // after the last ';'
	// plain skips the bytes most statements are mostly made of (spaces,
	// words, punctuation) in a loop of its own; this one runs once per
	// other token, which keeps the key and the spans out of that loop.
	n := len(sql)
	for i := plain(sql, 0); i < n; i = plain(sql, i) {
		if i < 0 {
			return nil, nil, false
		}
		j, what := token(sql, i)
		switch what {
		case tokReject:
			return nil, nil, false
		case tokSemicolon:
			if !blank(sql[stmtStart:i]) {
				spans = append(spans, span{stmtStart, i})
			}
			stmtStart = j
		case phInt, phDec, phString:
			key = append(append(key, sql[from:i]...), what)
			from = j
		}
		i = j
	}
	if !blank(sql[stmtStart:]) {
		spans = append(spans, span{stmtStart, n})
	}
	return append(key, sql[from:]...), spans, true
}

// plain returns the index of the first token at or after sql[i] that is
// not a space, a word or plain punctuation (len(sql) if there is none),
// or -1 if a word ends in what normalize leaves to the parser.
func plain(sql string, i int) int {
	n := len(sql)
	for i < n {
		switch lexClass[sql[i]] & lexKind {
		case lexSpace, lexPunct:
			i++
		case lexIdent:
			i++
			for i < n && lexClass[sql[i]]&lexWord != 0 {
				i++
			}
			if i < n && lexClass[sql[i]]&lexAfterWord != 0 {
				return -1 // x$y identifiers, E'' and friends, non-ASCII
			}
		default:
			return i
		}
	}
	return n
}

// blank reports whether a statement normalize lexed is only whitespace,
// which the parser drops. Every token but a space has a byte that is not
// one, so looking from the end finds one at once in all but those.
func blank(stmt string) bool {
	for j := len(stmt) - 1; j >= 0; j-- {
		if lexClass[stmt[j]]&lexKind != lexSpace {
			return false
		}
	}
	return true
}

// What token found, besides a literal's placeholder (phInt, phDec,
// phString).
const (
	tokReject    = 0 // a token normalize leaves to the parser
	tokPlain     = 4 // one that stays in the key as it is
	tokSemicolon = 5
)

// token lexes the token at sql[i] that is not a space, a word or plain
// punctuation: it returns the index past it and what it is.
func token(sql string, i int) (end int, what byte) {
	n := len(sql)
	c := sql[i]
	switch lexClass[c] & lexKind {
	case lexDigit, lexDot:
		if c == '.' && (i+1 >= n || lexClass[sql[i+1]]&lexKind != lexDigit) {
			return i + 1, tokPlain // a dot, not a number's
		}
		j, ph, ok := number(sql, i)
		if !ok {
			return 0, tokReject
		}
		return j, ph
	case lexQuote:
		j := i + 1
		for {
			if j >= n {
				return 0, tokReject
			}
			d := sql[j]
			if d == '\'' {
				if j+1 < n && sql[j+1] == '\'' {
					j += 2
					continue
				}
				return j + 1, phString
			}
			if lexClass[d]&lexInString == 0 {
				return 0, tokReject
			}
			j++
		}
	case lexDQuote:
		j := i + 1
		for j < n && sql[j] != '"' {
			if d := sql[j]; d < 0x20 || d >= 0x7f {
				return 0, tokReject
			}
			j++
		}
		if j >= n || j+1 < n && sql[j+1] == '"' || j == i+1 {
			return 0, tokReject
		}
		return j + 1, tokPlain
	case lexSemicolon:
		return i + 1, tokSemicolon
	case lexDash, lexSlash:
		if i+1 < n && (c == '-' && sql[i+1] == '-' || c == '/' && sql[i+1] == '*') {
			return 0, tokReject // a comment
		}
		return i + 1, tokPlain
	}
	// $, &, ?, `, \, {, }, control bytes, non-ASCII.
	return 0, tokReject
}

// number lexes the numeric literal at sql[i] (a digit, or a dot before
// one) and returns the index past it and its placeholder; ok is false for
// the forms normalize leaves to the parser.
func number(sql string, i int) (end int, ph byte, ok bool) {
	n := len(sql)
	j := i
	for j < n && lexClass[sql[j]]&lexKind == lexDigit {
		j++
	}
	ph = phInt
	if j < n && sql[j] == '.' {
		if j+1 < n && sql[j+1] == '.' {
			return 0, 0, false // 1..2 and similar
		}
		ph = phDec
		j++
		for j < n && lexClass[sql[j]]&lexKind == lexDigit {
			j++
		}
	}
	if j < n && lexClass[sql[j]]&lexAfterNumber != 0 {
		return 0, 0, false // 1e5, 0x1F, 1_000, trailing junk
	}
	return j, ph, true
}

// Byte classes of normalize's lexer: the low bits say what a byte starts,
// the flags above them where it may appear. One table look-up per byte
// replaces a chain of comparisons (and a search of the punctuation list)
// on the path every simple-protocol statement takes.
const (
	lexOther uint8 = iota // rejected: $ & ? ` \ { } control bytes, non-ASCII
	lexSpace
	lexIdent // ASCII letter or _
	lexDigit
	lexDot
	lexQuote
	lexDQuote
	lexSemicolon
	lexDash
	lexSlash
	lexPunct

	lexKind        uint8 = 0x0f
	lexWord        uint8 = 0x10 // continues an identifier: letter, _, digit
	lexAfterWord   uint8 = 0x20 // ends normalize after an identifier: $ ' & non-ASCII
	lexAfterNumber uint8 = 0x40 // ends normalize after a number: letter, _, . $ ' " non-ASCII
	lexInString    uint8 = 0x80 // may appear inside a '…' literal
)

var lexClass = func() (t [256]uint8) {
	for c := 0; c < 256; c++ {
		b := byte(c)
		switch {
		case b == ' ' || b == '\t' || b == '\n' || b == '\r':
			t[c] = lexSpace
		case b == '_' || b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z':
			t[c] = lexIdent | lexWord | lexAfterNumber
		case b >= '0' && b <= '9':
			t[c] = lexDigit | lexWord
		case b == '.':
			t[c] = lexDot | lexAfterNumber
		case b == '\'':
			t[c] = lexQuote | lexAfterWord | lexAfterNumber
		case b == '"':
			t[c] = lexDQuote | lexAfterNumber
		case b == ';':
			t[c] = lexSemicolon
		case b == '-':
			t[c] = lexDash
		case b == '/':
			t[c] = lexSlash
		case strings.IndexByte("(),=<>+*%:[]!|^~#@", b) >= 0:
			t[c] = lexPunct
		}
		switch {
		case b == '$':
			t[c] |= lexAfterWord | lexAfterNumber
		case b == '&':
			t[c] |= lexAfterWord
		case b >= 0x80:
			t[c] |= lexAfterWord | lexAfterNumber
		}
		if b >= 0x20 && b < 0x7f && b != '\\' || b == '\t' || b == '\n' || b == '\r' {
			t[c] |= lexInString
		}
	}
	return t
}()

// fastResult is a single-statement fast-path Result with its verdict, in
// one allocation.
type fastResult struct {
	r Result
	p [1]*Verdict
	v Verdict
}

// decided answers from a decision made before, or returns nil: one for
// the same text in the same state (the cache), or for the same statements
// with other literals, when that decision did not depend on their values
// (the fast path). A text with literals is looked up on the fast path
// first, as the same literals are seldom sent twice; one without has the
// same key in both, and the cache's Result comes ready-made.
//
// A text with a '$' is most likely one with parameters, which a client
// of the extended protocol Parses again and again as it is: it is looked
// up in the cache first, without lexing it (normalize would stop at the
// '$' outside a string anyway, having read the text up to it). A text
// without a digit or a quote has no literal for normalize to find (BEGIN,
// COMMIT): it goes to the cache without being lexed either.
func (e *Engine) decided(state stateKey, sql string) *Result {
	params := strings.IndexByte(sql, '$') >= 0
	if params {
		if r := e.cache.get(state, sql); r != nil {
			return r
		}
	}
	if len(sql) <= e.Limits().MaxBytes && len(sql) <= 4096 && mayHaveLiterals(sql) {
		var buf [512]byte
		var spanBuf [4]span
		key, spans, ok := normalize(sql, buf[:], spanBuf[:])
		if ok && string(key) != sql { // it has literals
			if r := e.judgeFast(state, sql, key, spans); r != nil {
				return r
			}
		}
	}
	if params {
		return nil // looked up already
	}
	return e.cache.get(state, sql)
}

// mayHaveLiterals reports whether sql has a byte a literal begins with,
// a digit or a quote: normalize finds literals only there (a digit inside
// a word is the word's), so a text with neither has a key equal to itself.
// It reads from the end, where a statement's literals mostly are (WHERE
// id = 42), so that a text with one, which normalize reads next, is
// seldom read far twice.
func mayHaveLiterals(sql string) bool {
	for i := len(sql) - 1; i >= 0; i-- {
		if k := lexClass[sql[i]] & lexKind; k == lexDigit || k == lexQuote {
			return true
		}
	}
	return false
}

// judgeFast answers for sql, whose fast-path key and statement spans are
// key and spans, from a decision made for the same statements with other
// literals, when that decision did not depend on literal values.
func (e *Engine) judgeFast(state stateKey, sql string, key []byte, spans []span) *Result {
	tmpl := e.fast.getBytes(state, key)
	if tmpl == nil || len(tmpl.Statements) != len(spans) {
		return nil
	}
	var r *Result
	if len(spans) == 1 {
		// One allocation for the common single-statement message, or
		// none when one was given back (Session.Recycle).
		one, _ := fastResults.Get().(*fastResult)
		if one != nil {
			*one = fastResult{}
		} else {
			one = &fastResult{}
		}
		one.p[0] = &one.v
		one.r.Statements = one.p[:]
		one.r.mem = one
		r = &one.r
	} else {
		r = &Result{Statements: make([]*Verdict, len(spans))}
		for i := range r.Statements {
			r.Statements[i] = new(Verdict)
		}
	}
	r.Action, r.Decider, r.Path = tmpl.Action, tmpl.Decider, PathFast
	pl := newPlacer(sql)
	for i, sp := range spans {
		t := tmpl.Statements[i]
		v := r.Statements[i]
		placeVerdict(v, &pl, sp.start, sql[sp.start:sp.end])
		v.Effects, v.Action, v.Rule, v.Sentence = t.Effects, t.Action, t.Rule, t.Sentence
		if len(t.Changes) > 0 {
			v.Changes = append([]StateChange(nil), t.Changes...)
			for j := range v.Changes {
				if v.Changes[j].Kind == ChangePrepare {
					v.Changes[j].Text = v.Text
				}
			}
		}
	}
	return r
}

// storeFast remembers a literal-insensitive decision under its fast-path key.
func (e *Engine) storeFast(state stateKey, sql string, r *Result) {
	if len(sql) > 4096 {
		return
	}
	var buf [512]byte
	var spanBuf [4]span
	key, spans, ok := normalize(sql, buf[:], spanBuf[:])
	if !ok || len(spans) != len(r.Statements) {
		return
	}
	e.fast.put(state, string(key), r)
}
