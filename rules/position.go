package rules

import "strings"

// newVerdict places the statement text (trimmed) within the message.
func newVerdict(msg string, start int, text string) *Verdict {
	v := new(Verdict)
	placeVerdict(v, msg, start, text)
	return v
}

func placeVerdict(v *Verdict, msg string, start int, text string) {
	lead, end := skipLeadingComments(text), len(text)
	for end > lead && isSpace(text[end-1]) {
		end--
	}
	off := start + lead
	v.Text, v.Offset = text[lead:end], off
	v.Line, v.Col = position(msg, off)
}

// skipLeadingComments returns the offset of text's first token: a
// statement slice starts right after the previous statement's semicolon,
// so it may begin with white space and with comments (PostgreSQL's: -- to
// the end of the line, and nesting /* */) that belong with the previous
// line. Positions and texts shown to people start at the statement itself.
func skipLeadingComments(text string) int {
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

func position(s string, off int) (line, col int) {
	line, lineStart := 1, 0
	for i := 0; i < off && i < len(s); i++ {
		if s[i] == '\n' {
			line++
			lineStart = i + 1
		}
	}
	return line, off - lineStart + 1
}
