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
	stmtStart := 0
	n := len(sql)
	for i := 0; i < n; {
		c := sql[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			key = append(key, c)
			i++
		case isIdentStart(c):
			if c >= 0x80 {
				return nil, nil, false
			}
			j := i + 1
			for j < n && (isIdentStart(sql[j]) || isDigit(sql[j])) {
				if sql[j] >= 0x80 {
					return nil, nil, false
				}
				j++
			}
			if j < n && (sql[j] == '$' || sql[j] == '\'' || sql[j] == '&') {
				return nil, nil, false // x$y identifiers, E'' and friends
			}
			key = append(key, sql[i:j]...)
			i = j
		case isDigit(c) || c == '.' && i+1 < n && isDigit(sql[i+1]):
			j := i
			for j < n && isDigit(sql[j]) {
				j++
			}
			dec := false
			if j < n && sql[j] == '.' {
				if j+1 < n && sql[j+1] == '.' {
					return nil, nil, false // 1..2 and similar
				}
				dec = true
				j++
				for j < n && isDigit(sql[j]) {
					j++
				}
			}
			if j < n && (isIdentStart(sql[j]) || sql[j] == '.' || sql[j] == '$' || sql[j] == '\'' || sql[j] == '"') {
				return nil, nil, false // 1e5, 0x1F, 1_000, trailing junk
			}
			if dec {
				key = append(key, phDec)
			} else {
				key = append(key, phInt)
			}
			i = j
		case c == '\'':
			j := i + 1
			for {
				if j >= n {
					return nil, nil, false
				}
				d := sql[j]
				if d == '\'' {
					if j+1 < n && sql[j+1] == '\'' {
						j += 2
						continue
					}
					break
				}
				if d < 0x20 && d != '\t' && d != '\n' && d != '\r' || d >= 0x7f || d == '\\' {
					return nil, nil, false
				}
				j++
			}
			key = append(key, phString)
			i = j + 1
		case c == '"':
			j := i + 1
			for j < n && sql[j] != '"' {
				if d := sql[j]; d < 0x20 || d >= 0x7f {
					return nil, nil, false
				}
				j++
			}
			if j >= n || j+1 < n && sql[j+1] == '"' || j == i+1 {
				return nil, nil, false
			}
			key = append(key, sql[i:j+1]...)
			i = j + 1
		case c == ';':
			spans = append(spans, span{stmtStart, i})
			stmtStart = i + 1
			key = append(key, c)
			i++
		case c == '-' && i+1 < n && sql[i+1] == '-', c == '/' && i+1 < n && sql[i+1] == '*':
			return nil, nil, false
		case strings.IndexByte("(),=<>+-*/%:[]!|.^~#@", c) >= 0:
			key = append(key, c)
			i++
		default:
			// $, &, ?, `, \, {, }, control bytes, non-ASCII.
			return nil, nil, false
		}
	}
	spans = append(spans, span{stmtStart, n})
	// Drop statements that are only whitespace, as the parser does.
	out := spans[:0]
	for _, s := range spans {
		if strings.TrimLeft(sql[s.start:s.end], " \t\n\r") != "" {
			out = append(out, s)
		}
	}
	return key, out, true
}

// judgeFast answers from a decision made for the same statement with other
// literals, when that decision did not depend on literal values.
func (e *Engine) judgeFast(s *Session, state, sql string) *Result {
	if len(sql) > e.Limits().MaxBytes || len(sql) > 4096 {
		return nil
	}
	var buf [512]byte
	var spanBuf [4]span
	key, spans, ok := normalize(sql, buf[:], spanBuf[:])
	if !ok {
		return nil
	}
	tmpl := e.fast.getBytes(state, key)
	if tmpl == nil || len(tmpl.Statements) != len(spans) {
		return nil
	}
	var r *Result
	if len(spans) == 1 {
		// One allocation for the common single-statement message.
		one := &struct {
			r Result
			p [1]*Verdict
			v Verdict
		}{}
		one.p[0] = &one.v
		one.r.Statements = one.p[:]
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
func (e *Engine) storeFast(state, sql string, r *Result) {
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
