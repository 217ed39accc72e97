package rules

import (
	"strconv"
	"strings"
	"unicode"
)

// QuoteIdent renders a name as an SQL identifier, as PostgreSQL's
// quote_ident does: bare when it is a plain lower-case identifier that is
// not a keyword the grammar reserves, double-quoted otherwise. So the
// result is always safe to put in generated SQL (EXECUTE of a prepared
// statement's name), and readers of a sentence see exactly which name it
// is without quotes around every plain one.
func QuoteIdent(s string) string {
	plain := s != ""
	for i := 0; i < len(s) && plain; i++ {
		c := s[i]
		plain = c == '_' || (c >= 'a' && c <= 'z') || (i > 0 && (c >= '0' && c <= '9' || c == '$'))
	}
	if plain && !reservedKeywords[s] {
		return s
	}
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

// reservedKeywords are PostgreSQL's keywords that are not unreserved
// (reserved, type or function names, column names): somewhere in the
// grammar a bare one does not read as a name. From PostgreSQL 17's
// kwlist.h, the parser's version (TestReservedKeywords checks them
// against it).
var reservedKeywords = map[string]bool{
	"all": true, "analyse": true, "analyze": true, "and": true, "any": true, "array": true,
	"as": true, "asc": true, "asymmetric": true, "authorization": true, "between": true, "bigint": true,
	"binary": true, "bit": true, "boolean": true, "both": true, "case": true, "cast": true,
	"char": true, "character": true, "check": true, "coalesce": true, "collate": true, "collation": true,
	"column": true, "concurrently": true, "constraint": true, "create": true, "cross": true, "current_catalog": true,
	"current_date": true, "current_role": true, "current_schema": true, "current_time": true, "current_timestamp": true, "current_user": true,
	"dec": true, "decimal": true, "default": true, "deferrable": true, "desc": true, "distinct": true,
	"do": true, "else": true, "end": true, "except": true, "exists": true, "extract": true,
	"false": true, "fetch": true, "float": true, "for": true, "foreign": true, "freeze": true,
	"from": true, "full": true, "grant": true, "greatest": true, "group": true, "grouping": true,
	"having": true, "ilike": true, "in": true, "initially": true, "inner": true, "inout": true,
	"int": true, "integer": true, "intersect": true, "interval": true, "into": true, "is": true,
	"isnull": true, "join": true, "json": true, "json_array": true, "json_arrayagg": true, "json_exists": true,
	"json_object": true, "json_objectagg": true, "json_query": true, "json_scalar": true, "json_serialize": true, "json_table": true,
	"json_value": true, "lateral": true, "leading": true, "least": true, "left": true, "like": true,
	"limit": true, "localtime": true, "localtimestamp": true, "merge_action": true, "national": true, "natural": true,
	"nchar": true, "none": true, "normalize": true, "not": true, "notnull": true, "null": true,
	"nullif": true, "numeric": true, "offset": true, "on": true, "only": true, "or": true,
	"order": true, "out": true, "outer": true, "overlaps": true, "overlay": true, "placing": true,
	"position": true, "precision": true, "primary": true, "real": true, "references": true, "returning": true,
	"right": true, "row": true, "select": true, "session_user": true, "setof": true, "similar": true,
	"smallint": true, "some": true, "substring": true, "symmetric": true, "system_user": true, "table": true,
	"tablesample": true, "then": true, "time": true, "timestamp": true, "to": true, "trailing": true,
	"treat": true, "trim": true, "true": true, "union": true, "unique": true, "user": true,
	"using": true, "values": true, "varchar": true, "variadic": true, "verbose": true, "when": true,
	"where": true, "window": true, "with": true, "xmlattributes": true, "xmlconcat": true, "xmlelement": true,
	"xmlexists": true, "xmlforest": true, "xmlnamespaces": true, "xmlparse": true, "xmlpi": true, "xmlroot": true,
	"xmlserialize": true, "xmltable": true,
}

// DollarQuote quotes s as an SQL string constant with a dollar-quote tag
// ($pgmoat$, $pgmoat0$, $pgmoat1$, ...) that s does not contain and that
// s followed by the tag contains only at its end, so no text, not even one
// ending in a prefix of the tag, can close the quote early. Dollar
// quoting has no escapes to get wrong.
func DollarQuote(s string) string {
	tag := "$pgmoat$"
	for i := 0; strings.Index(s+tag, tag) != len(s); i++ {
		tag = "$pgmoat" + strconv.Itoa(i) + "$"
	}
	return tag + s + tag
}

// Shorten puts s on one line (runs of white space become one space) and
// cuts it to at most n runes, an ellipsis included, for display. It reads
// s only as far as it needs and allocates for the result alone: s may be a
// 60 MB statement.
func Shorten(s string, n int) string {
	out := make([]rune, 0, min(n+1, len(s)))
	space := false
	for _, r := range s {
		if unicode.IsSpace(r) {
			space = len(out) > 0
			continue
		}
		if space {
			out = append(out, ' ')
			space = false
		}
		out = append(out, r)
		if len(out) > n {
			return string(out[:max(n-1, 0)]) + "…"
		}
	}
	return string(out)
}
