package rules

import (
	"strings"
	"unicode/utf8"
)

// NameDataLen is PostgreSQL's NAMEDATALEN: identifiers are truncated to
// NameDataLen-1 bytes (on a character boundary), as the server does.
const NameDataLen = 64

// truncateIdent shortens an identifier the way PostgreSQL's
// truncate_identifier does: to at most 63 bytes, never splitting a
// multibyte UTF-8 character.
func truncateIdent(s string) string {
	if len(s) < NameDataLen {
		return s
	}
	n := NameDataLen - 1
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// truncateIdents returns names truncated as identifiers (SET values that
// name schemas).
func truncateIdents(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = truncateIdent(n)
	}
	return out
}

// downcaseIdent folds an unquoted identifier as PostgreSQL's
// downcase_identifier does: ASCII letters only.
func downcaseIdent(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if b[j] >= 'A' && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

// splitIdentList parses a GUC list value such as a search_path string
// ("billing, \"Public\", $user") with the rules of PostgreSQL's
// SplitIdentifierString: comma separated, double-quoted names kept as
// written (with "" for a quote), unquoted names folded to lower case, both
// truncated to 63 bytes. ok is false when the server would reject the value.
func splitIdentList(s string) (names []string, ok bool) { return splitIdentifiers(s, ',') }

// splitIdentifiers is PostgreSQL's SplitIdentifierString with separator
// sep: ',' for lists, '.' for qualified names.
func splitIdentifiers(s string, sep byte) (names []string, ok bool) {
	i := 0
	skipSpace := func() {
		for i < len(s) && isSpace(s[i]) {
			i++
		}
	}
	skipSpace()
	if i == len(s) {
		return nil, true
	}
	for {
		var name string
		if s[i] == '"' {
			var b strings.Builder
			i++
			for {
				j := strings.IndexByte(s[i:], '"')
				if j < 0 {
					return nil, false
				}
				b.WriteString(s[i : i+j])
				i += j + 1
				if i < len(s) && s[i] == '"' {
					b.WriteByte('"')
					i++
					continue
				}
				break
			}
			name = b.String()
			if name == "" {
				return nil, false
			}
		} else {
			start := i
			for i < len(s) && s[i] != sep && !isSpace(s[i]) {
				i++
			}
			if start == i {
				return nil, false
			}
			name = downcaseIdent(s[start:i])
		}
		names = append(names, truncateIdent(name))
		skipSpace()
		if i == len(s) {
			return names, true
		}
		if s[i] != sep {
			return nil, false
		}
		i++
		skipSpace()
		if i == len(s) {
			return nil, false
		}
	}
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
}

// qualified renders schema.name for messages.
func qualified(schema, name string) string {
	if schema == "" {
		return QuoteIdent(name)
	}
	return QuoteIdent(schema) + "." + QuoteIdent(name)
}

// glob matches name against a pattern in which * stands for any run of
// bytes; everything else matches itself, case-sensitively.
func glob(pattern, name string) bool {
	star := strings.IndexByte(pattern, '*')
	if star < 0 {
		return pattern == name
	}
	if !strings.HasPrefix(name, pattern[:star]) {
		return false
	}
	name, rest := name[star:], pattern[star+1:]
	if rest == "" {
		return true
	}
	// Try every split for the rest of the pattern; patterns are short.
	for i := 0; i <= len(name); i++ {
		if glob(rest, name[i:]) {
			return true
		}
	}
	return false
}
