package migration

import (
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// cleanPsql blanks what psql itself consumes in a script: meta-commands
// (a backslash outside quotes and comments, to the end of its line:
// \connect, \restrict, \set, ...) and the data of COPY ... FROM stdin (the
// lines after the statement, up to and including \.). It follows quotes,
// dollar quotes, comments and parentheses as psql's lexer does, so a
// backslash or a semicolon inside them is left alone.
func cleanPsql(sql string) string {
	if !strings.Contains(sql, `\`) {
		return sql
	}
	b := []byte(sql)
	start := 0 // start of the current statement
	depth := 0 // parentheses
	for i := 0; i < len(b); {
		c := b[i]
		switch {
		case c == '-' && i+1 < len(b) && b[i+1] == '-':
			for i < len(b) && b[i] != '\n' {
				i++
			}
		case c == '/' && i+1 < len(b) && b[i+1] == '*':
			i = skipBlockComment(b, i)
		case c == '\'':
			i = skipString(b, i, isEscapeString(b, i))
		case c == '"':
			i = skipQuoted(b, i, '"')
		case c == '$':
			if tag, ok := dollarTag(b, i); ok {
				end := strings.Index(string(b[i+len(tag):]), tag)
				if end < 0 {
					return string(b)
				}
				i += len(tag) + end + len(tag)
			} else {
				i++
			}
		case c == '(':
			depth++
			i++
		case c == ')':
			if depth > 0 {
				depth--
			}
			i++
		case c == '\\':
			for i < len(b) && b[i] != '\n' {
				b[i] = ' '
				i++
			}
		case c == ';' && depth == 0:
			stmt := string(b[start : i+1])
			i++
			start = i
			if copyFromStdin(stmt) {
				// The data starts on the next line and ends with \.
				for i < len(b) && b[i] != '\n' {
					i++
				}
				for i < len(b) {
					lineEnd := i + 1
					for lineEnd < len(b) && b[lineEnd] != '\n' {
						lineEnd++
					}
					line := strings.TrimRight(string(b[i+1:min(lineEnd, len(b))]), "\r")
					for j := i + 1; j < lineEnd && j < len(b); j++ {
						if b[j] != '\r' {
							b[j] = ' '
						}
					}
					i = lineEnd
					if line == `\.` {
						break
					}
				}
				start = i
			}
		default:
			i++
		}
	}
	return string(b)
}

// copyFromStdin reports whether stmt is COPY ... FROM STDIN, whose data
// follows it in a psql script.
func copyFromStdin(stmt string) bool {
	t := strings.TrimSpace(stmt)
	if len(t) < 4 || !strings.EqualFold(t[:4], "copy") {
		// Comments may come first; the parser settles it.
		if !strings.Contains(strings.ToLower(t), "copy") {
			return false
		}
	}
	tree, err := pg_query.Parse(stmt)
	if err != nil || len(tree.Stmts) != 1 {
		return false
	}
	cp := tree.Stmts[0].Stmt.GetCopyStmt()
	return cp != nil && cp.IsFrom && cp.Filename == "" && !cp.IsProgram
}

func skipBlockComment(b []byte, i int) int {
	depth := 0
	for i < len(b) {
		switch {
		case b[i] == '/' && i+1 < len(b) && b[i+1] == '*':
			depth++
			i += 2
		case b[i] == '*' && i+1 < len(b) && b[i+1] == '/':
			depth--
			i += 2
			if depth == 0 {
				return i
			}
		default:
			i++
		}
	}
	return i
}

// isEscapeString reports whether the quote at i opens an E'...' string.
func isEscapeString(b []byte, i int) bool {
	return i > 0 && (b[i-1] == 'e' || b[i-1] == 'E') && (i == 1 || !isIdent(b[i-2]))
}

func skipString(b []byte, i int, escapes bool) int {
	i++
	for i < len(b) {
		switch {
		case escapes && b[i] == '\\':
			i += 2
		case b[i] == '\'':
			if i+1 < len(b) && b[i+1] == '\'' {
				i += 2
				continue
			}
			return i + 1
		default:
			i++
		}
	}
	return i
}

func skipQuoted(b []byte, i int, q byte) int {
	i++
	for i < len(b) {
		if b[i] == q {
			if i+1 < len(b) && b[i+1] == q {
				i += 2
				continue
			}
			return i + 1
		}
		i++
	}
	return i
}

// dollarTag returns the dollar-quote tag ($$ or $name$) starting at i.
func dollarTag(b []byte, i int) (string, bool) {
	if i > 0 && isIdent(b[i-1]) {
		return "", false
	}
	j := i + 1
	for j < len(b) && b[j] != '$' {
		c := b[j]
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80 || j > i+1 && c >= '0' && c <= '9') {
			return "", false
		}
		j++
	}
	if j >= len(b) {
		return "", false
	}
	return string(b[i : j+1]), true
}

func isIdent(c byte) bool {
	return c == '_' || c == '$' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c >= 0x80
}
