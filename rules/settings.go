package rules

import (
	"fmt"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// Encodings whose multibyte characters can contain bytes that look like
// ASCII quotes and backslashes: with one of them as client_encoding the
// server and pgmoat's UTF-8 parser disagree about where strings end.
// Names are as PostgreSQL cleans them (lower case, alphanumerics only).
var unsafeEncodings = map[string]bool{
	"sjis": true, "shiftjis": true, "mskanji": true, "win932": true, "windows932": true,
	"shiftjis2004": true, "big5": true, "win950": true, "windows950": true,
	"gbk": true, "win936": true, "windows936": true, "cp936": true, "gb18030": true,
	"uhc": true, "win949": true, "windows949": true, "johab": true,
}

func cleanEncodingName(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'A' && c <= 'Z':
			b.WriteByte(c + 'a' - 'A')
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
			b.WriteByte(c)
		}
	}
	return b.String()
}

// settingKind says why a setting matters to pgmoat. Every setting not in
// settingKinds changes neither how the server splits text into statements
// nor how it resolves names, so SET and set_config() of it pass: pg_dump's
// restrict_nonsystem_relation_kind, statement_timeout, lock_timeout,
// check_function_bodies, client_min_messages, row_security, and the rest.
type settingKind uint8

const (
	_ settingKind = iota // every other setting
	// settingLexer: after some values the server lexes text differently
	// from pgmoat's parser (lexer_state).
	settingLexer
	// settingSearchPath: unqualified names resolve through it (tracked).
	settingSearchPath
	// settingRole: the current role is what $user in search_path means
	// (tracked).
	settingRole
)

// settingKinds is the explicit list of the settings that matter (names
// as the server stores them, lower case; "names" is SET NAMES). README's
// Policy section lists the same.
var settingKinds = map[string]settingKind{
	"standard_conforming_strings": settingLexer,
	"client_encoding":             settingLexer,
	"names":                       settingLexer,
	"search_path":                 settingSearchPath,
	"role":                        settingRole,
	"session_authorization":       settingRole,
}

// bindSettingNames records, for the set_config calls in s's select list
// whose setting name is pg_settings' name column, which settings they can
// change, when s reads pg_catalog.pg_settings alone and its WHERE pins
// name to constants (name = 'x' or name IN ('x', ...), alone or ANDed
// with other conditions). That is how pg_dump sets a setting only if the
// server has it:
//
//	SELECT set_config(name, 'view, foreign-table', false)
//	  FROM pg_settings WHERE name = 'restrict_nonsystem_relation_kind'
func (e *env) bindSettingNames(s *pg_query.SelectStmt) {
	if len(s.FromClause) != 1 || s.WhereClause == nil {
		return
	}
	rv := s.FromClause[0].GetRangeVar()
	if rv == nil {
		return
	}
	if o := e.resolveRel(rv); o.Schema != "pg_catalog" || o.Name != "pg_settings" || len(o.Candidates) > 0 {
		return
	}
	qual := rv.Relname
	if rv.Alias != nil && rv.Alias.Aliasname != "" {
		qual = rv.Alias.Aliasname
	}
	isName := func(n *pg_query.Node) bool {
		cr := n.GetColumnRef()
		if cr == nil {
			return false
		}
		f := nodeStrings(cr.Fields)
		return len(f) == 1 && f[0] == "name" && len(cr.Fields) == 1 ||
			len(f) == 2 && f[0] == qual && f[1] == "name" && len(cr.Fields) == 2
	}
	names, ok := e.pinnedNames(s.WhereClause, isName)
	if !ok {
		return
	}
	for _, t := range s.TargetList {
		rt := t.GetResTarget()
		if rt == nil {
			continue
		}
		f := rt.Val.GetFuncCall()
		if f == nil {
			continue
		}
		fn := nodeStrings(f.Funcname)
		if len(f.Args) != 3 || len(fn) == 0 || fn[len(fn)-1] != "set_config" || !isName(f.Args[0]) {
			continue
		}
		if e.settingNames == nil {
			e.settingNames = map[*pg_query.FuncCall][]string{}
		}
		e.settingNames[f] = names
	}
}

// pinnedNames returns the constants a WHERE clause pins a column to: the
// column (isName) = 'x', 'x' = the column, the column IN ('x', ...), or
// such a condition ANDed with anything.
func (e *env) pinnedNames(w *pg_query.Node, isName func(*pg_query.Node) bool) ([]string, bool) {
	if b := w.GetBoolExpr(); b != nil {
		if b.Boolop != pg_query.BoolExprType_AND_EXPR {
			return nil, false
		}
		for _, arg := range b.Args {
			if names, ok := e.pinnedNames(arg, isName); ok {
				return names, true
			}
		}
		return nil, false
	}
	a := w.GetAExpr()
	if a == nil || len(a.Name) != 1 || a.Name[0].GetString_().GetSval() != "=" {
		return nil, false
	}
	switch a.Kind {
	case pg_query.A_Expr_Kind_AEXPR_OP:
		col, val := a.Lexpr, a.Rexpr
		if !isName(col) {
			col, val = val, col
		}
		if !isName(col) {
			return nil, false
		}
		v, ok := literalString(val)
		if !ok {
			return nil, false
		}
		e.literalSensitive = true
		return []string{v}, true
	case pg_query.A_Expr_Kind_AEXPR_IN:
		l := a.Rexpr.GetList()
		if !isName(a.Lexpr) || l == nil || len(l.Items) == 0 {
			return nil, false
		}
		var out []string
		for _, it := range l.Items {
			v, ok := literalString(it)
			if !ok {
				return nil, false
			}
			out = append(out, v)
		}
		e.literalSensitive = true
		return out, true
	}
	return nil, false
}

// literalString returns the value of a plain string literal.
func literalString(n *pg_query.Node) (string, bool) {
	if c := n.GetAConst(); c != nil && c.GetSval() != nil {
		return c.GetSval().Sval, true
	}
	return "", false
}

// unsafeSetting returns why setting name to value would make the server
// lex later text differently from pgmoat, or "" when it would not.
// known is false when the value cannot be read.
func unsafeSetting(name, value string, known bool) string {
	switch strings.ToLower(name) {
	case "standard_conforming_strings":
		if !known {
			return "standard_conforming_strings set to a value pgmoat cannot read"
		}
		if v, ok := parseBool(value); ok && v {
			return ""
		}
		return "standard_conforming_strings = " + value + " makes backslashes in strings escapes, which pgmoat's parser would not see"
	case "client_encoding", "names":
		if !known {
			return "client_encoding set to a value pgmoat cannot read"
		}
		if unsafeEncodings[cleanEncodingName(value)] {
			return "client_encoding " + value + " has multibyte characters containing ASCII quote and backslash bytes"
		}
	}
	return ""
}

// CheckParameter reports whether a setting the server will use for this
// session makes its lexing differ from pgmoat's: a startup parameter, or a
// value the server reports in ParameterStatus. It returns nil when the
// value is safe, and an error saying why otherwise; the proxy must refuse
// the session (or close it) on error, because from then on pgmoat cannot
// tell where statements end.
func CheckParameter(name, value string) error {
	if msg := unsafeSetting(name, value, true); msg != "" {
		return &LexerStateError{Setting: strings.ToLower(name), Value: value, Reason: msg}
	}
	return nil
}

// LexerStateError is returned by CheckParameter and CheckStartup.
type LexerStateError struct {
	Setting, Value, Reason string
}

func (e *LexerStateError) Error() string { return "unsafe session setting: " + e.Reason }

// CheckStartup checks a StartupMessage's parameters, including settings
// passed in "options" (-c name=value, --name=value), and returns the
// search_path they set, if any. It returns a *LexerStateError when a
// parameter makes lexing unsafe.
func CheckStartup(params map[string]string) (searchPath []string, ok bool, err error) {
	check := func(name, value string) error {
		name = strings.ReplaceAll(strings.ToLower(name), "-", "_")
		if name == "search_path" {
			searchPath, ok = splitIdentList(value)
			if !ok {
				searchPath = nil
			}
			return nil
		}
		return CheckParameter(name, value)
	}
	for k, v := range params {
		if k == "options" {
			continue
		}
		if err := check(k, v); err != nil {
			return nil, false, err
		}
	}
	if opts, has := params["options"]; has {
		args := splitOptions(opts)
		for i := 0; i < len(args); i++ {
			a := args[i]
			var kv string
			switch {
			case a == "-c" && i+1 < len(args):
				i++
				kv = args[i]
			case strings.HasPrefix(a, "-c"):
				kv = a[2:]
			case strings.HasPrefix(a, "--"):
				kv = a[2:]
			default:
				continue
			}
			name, value, found := strings.Cut(kv, "=")
			if !found {
				continue
			}
			if err := check(name, value); err != nil {
				return nil, false, err
			}
		}
	}
	return searchPath, ok, nil
}

// splitOptions splits the startup "options" string as pg_split_opts does:
// on whitespace, with backslash escaping the next character.
func splitOptions(s string) []string {
	var out []string
	var b strings.Builder
	in := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && i+1 < len(s):
			i++
			b.WriteByte(s[i])
			in = true
		case isSpace(c):
			if in {
				out = append(out, b.String())
				b.Reset()
				in = false
			}
		default:
			b.WriteByte(c)
			in = true
		}
	}
	if in {
		out = append(out, b.String())
	}
	return out
}

// setStmt handles SET / RESET and the SET inside ALTER ROLE/DATABASE/SYSTEM
// (session=false: they change future sessions, not this one).
func (e *env) setStmt(s *pg_query.VariableSetStmt, text, where string, out *[]Effect, session bool) {
	if s == nil {
		return
	}
	name := strings.ToLower(s.Name)
	values, known := e.setValues(s)
	switch name {
	case "standard_conforming_strings", "client_encoding", "names":
		if s.Kind == pg_query.VariableSetKind_VAR_SET_VALUE {
			v := strings.Join(values, ",")
			if msg := unsafeSetting(name, v, known); msg != "" {
				e.add(out, OpLexerState, everything(), "SET "+msg, where)
			}
		}
		return
	}
	if !session {
		return
	}
	if e.depth > 0 {
		e.setInBody(s, name, values, known)
		return
	}
	switch name {
	case "search_path":
		switch s.Kind {
		case pg_query.VariableSetKind_VAR_SET_VALUE:
			e.change(StateChange{Kind: ChangeSearchPath, Local: s.IsLocal, Known: known, SearchPath: truncateIdents(values)})
		case pg_query.VariableSetKind_VAR_SET_DEFAULT, pg_query.VariableSetKind_VAR_RESET:
			e.change(StateChange{Kind: ChangeResetSearchPath, Local: s.IsLocal})
		}
	case "role", "session_authorization":
		switch s.Kind {
		case pg_query.VariableSetKind_VAR_SET_VALUE:
			r := strings.Join(values, "")
			if name == "role" && strings.EqualFold(r, "none") {
				r = ""
			}
			e.change(StateChange{Kind: ChangeRole, Local: s.IsLocal, Name: r})
		case pg_query.VariableSetKind_VAR_SET_DEFAULT, pg_query.VariableSetKind_VAR_RESET:
			e.change(StateChange{Kind: ChangeRole, Local: s.IsLocal})
		}
	case "":
		if s.Kind == pg_query.VariableSetKind_VAR_RESET_ALL {
			e.change(StateChange{Kind: ChangeResetAll})
		}
	}
}

// setValues reads SET arguments. Each argument is one value as the server
// stores it (an identifier already folded by the parser, a string literal
// as written).
func (e *env) setValues(s *pg_query.VariableSetStmt) ([]string, bool) {
	var vals []string
	for _, a := range s.Args {
		c := a.GetAConst()
		if c == nil {
			if tc := a.GetTypeCast(); tc != nil {
				c = tc.Arg.GetAConst()
			}
		}
		if c == nil {
			return nil, false
		}
		e.literalSensitive = true
		switch {
		case c.GetSval() != nil:
			vals = append(vals, c.GetSval().Sval)
		case c.GetIval() != nil:
			vals = append(vals, fmt.Sprint(c.GetIval().Ival))
		case c.GetFval() != nil:
			vals = append(vals, c.GetFval().Fval)
		case c.GetBoolval() != nil:
			vals = append(vals, fmt.Sprint(c.GetBoolval().Boolval))
		default:
			return nil, false
		}
	}
	return vals, true
}
