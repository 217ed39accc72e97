package rules

import "strings"

// newVerdict places the statement text (trimmed) within the message.
func newVerdict(pl *placer, start int, text string) *Verdict {
	v := new(Verdict)
	placeVerdict(v, pl, start, text)
	return v
}

func placeVerdict(v *Verdict, pl *placer, start int, text string) {
	lead, end := skipLeadingComments(text), len(text)
	for end > lead && isSpace(text[end-1]) {
		end--
	}
	off := start + lead
	v.Text, v.Offset = text[lead:end], off
	v.Line, v.Col = pl.position(off)
}

// skipLeadingComments returns the offset of text's first token: a
// statement slice starts right after the previous statement's semicolon,
// so it may begin with white space and with comments (PostgreSQL's: -- to
// the end of the line, and nesting /* */) that belong with the previous
// line. Positions and texts shown to people start at the statement itself.
func skipLeadingComments(text string) int {
	if text == "" || !isSpace(text[0]) && text[0] != '-' && text[0] != '/' {
		return 0 // most statements: the loop's cases are not run
	}
	i := 0
	for i < len(text) {
		switch {
		case isSpace(text[i]):
			i++
		case strings.HasPrefix(text[i:], "--"):
			nl := strings.IndexByte(text[i:], '\n')
			if nl < 0 {
				return len(text)
			}
			i += nl + 1
		case strings.HasPrefix(text[i:], "/*"):
			depth, j := 0, i
			for j < len(text) {
				if strings.HasPrefix(text[j:], "/*") {
					depth++
					j += 2
				} else if strings.HasPrefix(text[j:], "*/") {
					depth--
					j += 2
					if depth == 0 {
						break
					}
				} else {
					j++
				}
			}
			if depth != 0 {
				return i // unterminated: not ours to judge, keep the text
			}
			i = j
		default:
			return i
		}
	}
	return i
}

// placer finds the line and column of the statements of one message, in
// the order they come: each call scans on from where the last one stopped.
// Scanning from the start of the message for every statement made a
// message of n statements cost n² (100k statements: minutes).
type placer struct {
	msg       string
	off       int // bytes before off are counted
	line      int // line of off, 1-based
	lineStart int // offset of that line's first byte
}

func newPlacer(msg string) placer { return placer{msg: msg, line: 1} }

// position returns the 1-based line and column (in bytes) of offset off.
func (p *placer) position(off int) (line, col int) {
	off = min(max(off, 0), len(p.msg))
	if off < p.off {
		*p = newPlacer(p.msg) // not in order: start again
	}
	if off == p.off {
		return p.line, off - p.lineStart + 1 // a message's first statement, most often
	}
	seg := p.msg[p.off:off]
	if n := strings.Count(seg, "\n"); n > 0 {
		p.line += n
		p.lineStart = p.off + strings.LastIndexByte(seg, '\n') + 1
	}
	p.off = off
	return p.line, off - p.lineStart + 1
}
