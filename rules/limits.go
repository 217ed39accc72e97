package rules

import (
	"fmt"
	"time"
)

// Limits bound what is handed to libpg_query, and what one message may
// cost to analyse. The parser runs on the C stack: deeply nested input (a
// long chain of operators, casts or set operations) can overflow it and
// kill the whole process, so text whose estimated nesting exceeds MaxDepth
// is not parsed and counts as unparseable. A message past MaxStatements or
// MaxTime is refused the same way, unanalysed (a *BudgetError): analysis
// takes a session's goroutine and CPU, and a client could otherwise send
// messages that cost seconds each.
type Limits struct {
	MaxBytes int // longest statement text analysed
	MaxDepth int // deepest estimated nesting analysed
	// MaxStatements is the most statements analysed in one message
	// (limits.analysis_statements); negative means no limit.
	MaxStatements int
	// MaxTime bounds the analysis of one message (limits.analysis_time);
	// negative means no limit.
	MaxTime time.Duration
}

// DefaultLimits are generous for real SQL and far below what overflows an
// 8 MiB (or even a 2 MiB) thread stack, which takes a nesting in the tens
// of thousands. 200,000 short statements take about two seconds.
var DefaultLimits = Limits{MaxBytes: 4 << 20, MaxDepth: 1000, MaxStatements: 200_000, MaxTime: 10 * time.Second}

// withDefaults fills the zero fields of l from DefaultLimits.
func (l Limits) withDefaults() Limits {
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultLimits.MaxBytes
	}
	if l.MaxDepth <= 0 {
		l.MaxDepth = DefaultLimits.MaxDepth
	}
	if l.MaxStatements == 0 {
		l.MaxStatements = DefaultLimits.MaxStatements
	}
	if l.MaxTime == 0 {
		l.MaxTime = DefaultLimits.MaxTime
	}
	return l
}

// BudgetError says why the analysis of a message stopped before its end:
// it had more statements than Limits.MaxStatements, or took longer than
// Limits.MaxTime. Key names the configuration key that raises the limit.
type BudgetError struct {
	Key   string // limits.analysis_statements or limits.analysis_time
	Limit string // the limit, as configured
}

func (e *BudgetError) Error() string {
	what := "has more statements than " + e.Limit
	if e.Key == "limits.analysis_time" {
		what = "took longer than " + e.Limit + " to analyse"
	}
	return fmt.Sprintf("the message %s (%s), so it is refused unanalysed; send fewer statements per message, or raise %s", what, e.Key, e.Key)
}

// BoundsError says why text was not parsed.
type BoundsError struct {
	Bytes, Depth int
	Limits       Limits
}

func (e *BoundsError) Error() string {
	if e.Bytes > 0 {
		return fmt.Sprintf("statement of %d bytes exceeds the limit of %d", e.Bytes, e.Limits.MaxBytes)
	}
	return fmt.Sprintf("statement nesting (estimated %d) exceeds the limit of %d", e.Depth, e.Limits.MaxDepth)
}

// checkBounds is scanBounds without cuts.
func checkBounds(text string, l Limits) error {
	_, err := scanBounds(text, l, 0)
	return err
}

// scanBounds estimates the parse tree depth of text without parsing it.
// The estimate never falls below the real depth: it counts, per
// parenthesis level, every word and operator since the level opened
// (AND/OR excepted: the grammar flattens them), plus the levels
// themselves. Strings, quoted identifiers, dollar quotes and comments are
// skipped with the server's lexing rules (standard_conforming_strings on;
// pgmoat refuses sessions that turn it off).
//
// With cutEvery > 0, it also returns cuts: offsets just past a semicolon
// outside parentheses, at least cutEvery bytes apart, where the text can
// be parsed in pieces (parseChunks). The lexer only proposes them: the
// parser re-reads each piece, and a cut that is not a statement boundary
// (inside a BEGIN ATOMIC body, or a token this lexer misread) makes the
// piece before it fail to parse, and the rest is then parsed whole.
func scanBounds(text string, l Limits, cutEvery int) (cuts []int, err error) {
	if len(text) > l.MaxBytes {
		return nil, &BoundsError{Bytes: len(text), Limits: l}
	}
	lastCut := 0
	// counts[i] is the number of depth-adding tokens at paren level i.
	var stackBuf [64]int
	counts := stackBuf[:1]
	sum := 0 // sum of counts
	bump := func() error {
		counts[len(counts)-1]++
		sum++
		if d := sum + len(counts); d > l.MaxDepth {
			return &BoundsError{Depth: d, Limits: l}
		}
		return nil
	}
	n := len(text)
	for i := 0; i < n; {
		c := text[i]
		switch {
		case isSpace(c):
			i++
		case c == '-' && i+1 < n && text[i+1] == '-':
			for i < n && text[i] != '\n' && text[i] != '\r' {
				i++
			}
		case c == '/' && i+1 < n && text[i+1] == '*':
			depth := 1
			i += 2
			for i < n && depth > 0 {
				switch {
				case text[i] == '/' && i+1 < n && text[i+1] == '*':
					depth++
					i += 2
				case text[i] == '*' && i+1 < n && text[i+1] == '/':
					depth--
					i += 2
				default:
					i++
				}
			}
		case c == '(' || c == '[':
			counts = append(counts, 0)
			if d := sum + len(counts); d > l.MaxDepth {
				return nil, &BoundsError{Depth: d, Limits: l}
			}
			i++
		case c == ')' || c == ']':
			if len(counts) > 1 {
				sum -= counts[len(counts)-1]
				counts = counts[:len(counts)-1]
			}
			i++
		case c == ';':
			i++
			if len(counts) == 1 {
				sum, counts[0] = 0, 0
				if cutEvery > 0 && i-lastCut >= cutEvery && i < n {
					cuts = append(cuts, i)
					lastCut = i
				}
			}
		case c == ',':
			i++
		case c == '\'':
			i = skipQuoted(text, i+1, '\'', false)
			if err := bump(); err != nil {
				return nil, err
			}
		case c == '"':
			i = skipQuoted(text, i+1, '"', false)
			if err := bump(); err != nil {
				return nil, err
			}
		case c == '$' && i+1 < n && !isDigit(text[i+1]):
			end, ok := dollarEnd(text, i)
			if !ok {
				i++
				continue
			}
			i = end
			if err := bump(); err != nil {
				return nil, err
			}
		case isIdentStart(c):
			start := i
			for i < n && isIdentCont(text[i]) {
				i++
			}
			if i < n && text[i] == '\'' {
				// Prefixed string: E'...' honours backslash escapes;
				// U&'...', B'...', X'...', N'...' do not.
				esc := i-start == 1 && (c == 'e' || c == 'E')
				i = skipQuoted(text, i+1, '\'', esc)
			} else if i+1 < n && text[i] == '&' && (text[i+1] == '\'' || text[i+1] == '"') && i-start == 1 && (c == 'u' || c == 'U') {
				i = skipQuoted(text, i+2, text[i+1], false)
			}
			w := text[start:i]
			if len(w) == 3 && (w[0]|0x20) == 'a' && (w[1]|0x20) == 'n' && (w[2]|0x20) == 'd' ||
				len(w) == 2 && (w[0]|0x20) == 'o' && (w[1]|0x20) == 'r' {
				continue
			}
			if err := bump(); err != nil {
				return nil, err
			}
		default:
			// A number, a run of operator characters, or any other byte:
			// one token each.
			i++
			switch {
			case isDigit(c) || c == '.' && i < n && isDigit(text[i]):
				for i < n && (isIdentCont(text[i]) || text[i] == '.') {
					i++
				}
			case isOpChar(c):
				for i < n && isOpChar(text[i]) {
					if text[i] == '-' && i+1 < n && text[i+1] == '-' || text[i] == '/' && i+1 < n && text[i+1] == '*' {
						break
					}
					i++
				}
			}
			if err := bump(); err != nil {
				return nil, err
			}
		}
	}
	return cuts, nil
}

func isOpChar(c byte) bool { return c < 0x80 && c != 0 && stringsIndexByte("+-*/<>=~!@#%^&|`?:", c) }
func isDigit(c byte) bool  { return c >= '0' && c <= '9' }
func isIdentStart(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80
}
func isIdentCont(c byte) bool { return isIdentStart(c) || isDigit(c) || c == '$' }

// skipQuoted returns the index just past the closing quote of a literal
// whose body starts at i; a doubled quote stands for itself, and with esc
// a backslash escapes the next byte.
func skipQuoted(text string, i int, q byte, esc bool) int {
	for i < len(text) {
		c := text[i]
		switch {
		case esc && c == '\\':
			i += 2
		case c == q:
			if i+1 < len(text) && text[i+1] == q {
				i += 2
				continue
			}
			return i + 1
		default:
			i++
		}
	}
	return len(text)
}

// dollarEnd returns the index past a dollar-quoted string starting at i,
// or ok=false when text[i] does not open one.
func dollarEnd(text string, i int) (int, bool) {
	j := i + 1
	for j < len(text) && text[j] != '$' {
		if !isIdentCont(text[j]) || text[j] == '$' {
			return 0, false
		}
		j++
	}
	if j >= len(text) {
		return 0, false
	}
	tag := text[i : j+1]
	body := j + 1
	for k := body; k+len(tag) <= len(text); k++ {
		if text[k] == '$' && text[k:k+len(tag)] == tag {
			return k + len(tag), true
		}
	}
	return len(text), true
}

func stringsIndexByte(set string, c byte) bool {
	for i := 0; i < len(set); i++ {
		if set[i] == c {
			return true
		}
	}
	return false
}
