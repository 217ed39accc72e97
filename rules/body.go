package rules

import (
	"encoding/json"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// createFunction analyses a function or procedure body: SQL bodies
// (quoted or BEGIN ATOMIC) and PL/pgSQL bodies statement by statement, so
// that CREATE FUNCTION of a body that wipes a protected table counts as
// wiping it. Bodies in languages pgmoat cannot read are opaque.
func (e *env) createFunction(f *pg_query.CreateFunctionStmt, text, where string, out *[]Effect) funcSummary {
	names := nodeStrings(f.Funcname)
	fname := strings.Join(names, ".")
	kind := "function"
	if f.IsProcedure {
		kind = "procedure"
	}
	w := joinWhere(where, "body of "+kind+" "+fname)
	lang := "sql"
	var as []string
	var setPath *pg_query.VariableSetStmt
	for _, o := range f.Options {
		d := o.GetDefElem()
		if d == nil {
			continue
		}
		switch d.Defname {
		case "language":
			lang = strings.ToLower(d.Arg.GetString_().GetSval())
		case "as":
			as = stringList(d.Arg)
		case "set":
			if s := d.Arg.GetVariableSetStmt(); s != nil && strings.EqualFold(s.Name, "search_path") && s.Kind == pg_query.VariableSetKind_VAR_SET_VALUE {
				setPath = s
			}
		}
	}
	params := map[string]bool{}
	for _, p := range f.Parameters {
		if fp := p.GetFunctionParameter(); fp != nil && fp.Name != "" {
			params[fp.Name] = true
		}
	}
	// PL/pgSQL's special variables of trigger functions are values, not
	// columns: DELETE ... WHERE TG_OP = 'DELETE' keeps every row.
	for _, v := range triggerVariables[lastName(f.GetReturnType().GetNames())] {
		params[v] = true
	}
	e.literalSensitive = true // the body is a string literal
	var body []Effect
	var stale staleness
	e.deferred(func() {
		outer := e.stale
		e.stale = 0
		defer func() { stale, e.stale = e.stale, outer }()
		e.inBody(params, setPath, func() {
			switch lang {
			case "sql":
				if f.SqlBody != nil {
					e.sqlBodyNodes(f.SqlBody, text, w, &body)
				} else if len(as) > 0 {
					e.analyzeBody(as[0], w, &body, nil)
				}
			case "plpgsql":
				// libpg_query's PL/pgSQL entry point compiles every function
				// in the text it is given and asserts (aborting the process)
				// on one without a body: only hand it a single statement
				// known to have one.
				if len(as) == 0 {
					e.possibly(func() {
						e.add(&body, OpOpaque, everything(), kind+" "+fname+" has no body pgmoat can read", where)
					})
					break
				}
				e.plpgsql(text, w, &body)
			case "c", "internal":
			default:
				e.unreadableLanguage(&body, lang, kind+" "+fname+" is written in "+lang+", which pgmoat cannot read", where)
			}
		})
	})
	*out = append(*out, body...)
	sum := funcSummary{effects: body, stale: stale}
	if len(names) > 0 {
		if e.localFuncs == nil {
			e.localFuncs = map[string]funcSummary{}
		}
		e.localFuncs[names[len(names)-1]] = sum
	}
	return sum
}

// triggerVariables are the variables PL/pgSQL defines in trigger and
// event trigger functions, by return type.
var triggerVariables = map[string][]string{
	"trigger": {"new", "old", "tg_name", "tg_when", "tg_level", "tg_op", "tg_relid", "tg_relname",
		"tg_table_name", "tg_table_schema", "tg_nargs", "tg_argv"},
	"event_trigger": {"tg_event", "tg_tag"},
}

// inBody runs fn with the names of a body's variables and the body's own
// search_path in force.
func (e *env) inBody(params map[string]bool, setPath *pg_query.VariableSetStmt, fn func()) {
	oldParams, oldPath := e.params, e.tx.cur.path
	e.code++
	defer func() { e.code-- }()
	merged := map[string]bool{}
	for k := range oldParams {
		merged[k] = true
	}
	for k := range params {
		merged[k] = true
	}
	e.params = merged
	if setPath != nil {
		vals, known := e.setValues(setPath)
		e.tx.cur.path = pathVal{known: known, entries: truncateIdents(vals)}
	}
	fn()
	e.params, e.tx.cur.path = oldParams, oldPath
}

func (e *env) sqlBodyNodes(n *pg_query.Node, text, where string, out *[]Effect) {
	if l := n.GetList(); l != nil {
		for _, it := range l.Items {
			e.sqlBodyNodes(it, text, where, out)
		}
		return
	}
	st := stmtText{n, text}
	e.depth++
	e.stmt(st, where, out)
	e.genericWalk(st, where, out)
	e.depth--
}

func (e *env) doStmt(d *pg_query.DoStmt, where string, out *[]Effect) {
	lang, body := "plpgsql", ""
	for _, a := range d.Args {
		de := a.GetDefElem()
		if de == nil {
			continue
		}
		switch de.Defname {
		case "language":
			lang = strings.ToLower(de.Arg.GetString_().GetSval())
		case "as":
			body = de.Arg.GetString_().GetSval()
		}
	}
	w := joinWhere(where, "DO block")
	if lang != "plpgsql" {
		e.unreadableLanguage(out, lang, "DO block in "+lang+", which pgmoat cannot read", where)
		return
	}
	e.literalSensitive = true
	outer := e.stale
	e.stale = 0
	e.inBody(nil, nil, func() {
		e.plpgsql("CREATE FUNCTION pgmoat_do() RETURNS void LANGUAGE plpgsql AS "+DollarQuote(body), w, out)
	})
	ran := e.stale
	e.stale = outer
	e.ranCode(ran)
}

// plpgsql compiles a CREATE FUNCTION ... LANGUAGE plpgsql statement with
// PostgreSQL's own PL/pgSQL parser and analyses every SQL statement and
// expression in it. EXECUTE of a constant string is analysed as SQL;
// EXECUTE of anything computed is opaque.
func (e *env) plpgsql(createText, where string, out *[]Effect) {
	e.literalSensitive = true
	if e.depth >= maxBodyDepth {
		e.ranCode(staleCode)
		e.possibly(func() {
			e.add(out, OpOpaque, everything(), "code nested too deeply for pgmoat to follow", where)
		})
		return
	}
	js, err := pg_query.ParsePlPgSqlToJSON(createText)
	if err != nil {
		e.ranCode(staleCode)
		e.possibly(func() {
			e.add(out, OpOpaque, everything(), "PL/pgSQL body pgmoat cannot compile: "+err.Error(), where)
		})
		return
	}
	var tree any
	if err := json.Unmarshal([]byte(js), &tree); err != nil {
		e.possibly(func() {
			e.add(out, OpOpaque, everything(), "PL/pgSQL body pgmoat cannot read", where)
		})
		return
	}
	params := map[string]bool{}
	collectDatums(tree, params)
	e.inBody(params, nil, func() { e.plNode(tree, where, out) })
}

func collectDatums(v any, params map[string]bool) {
	switch x := v.(type) {
	case map[string]any:
		for k, c := range x {
			if k == "PLpgSQL_var" || k == "PLpgSQL_rec" || k == "PLpgSQL_row" {
				if m, ok := c.(map[string]any); ok {
					if name, ok := m["refname"].(string); ok {
						params[name] = true
					}
				}
			}
			collectDatums(c, params)
		}
	case []any:
		for _, c := range x {
			collectDatums(c, params)
		}
	}
}

func exprQuery(v any) (string, bool) {
	m, ok := v.(map[string]any)
	if !ok {
		return "", false
	}
	pe, ok := m["PLpgSQL_expr"].(map[string]any)
	if !ok {
		return "", false
	}
	q, ok := pe["query"].(string)
	return q, ok
}

// dynamicKeys are the PL/pgSQL statements that run a string as SQL, and
// the field holding the string expression.
var dynamicKeys = map[string]string{
	"PLpgSQL_stmt_dynexecute":   "query",
	"PLpgSQL_stmt_dynfors":      "query",
	"PLpgSQL_stmt_open":         "dynquery",
	"PLpgSQL_stmt_return_query": "dynquery",
}

func (e *env) plNode(v any, where string, out *[]Effect) {
	switch x := v.(type) {
	case []any:
		for _, c := range x {
			e.plNode(c, where, out)
		}
	case map[string]any:
		for k, c := range x {
			m, _ := c.(map[string]any)
			switch {
			case k == "PLpgSQL_stmt_execsql" && m != nil:
				if q, ok := exprQuery(m["sqlstmt"]); ok {
					e.analyzeBody(q, where, out, nil)
				}
				continue
			case dynamicKeys[k] != "" && m != nil:
				if q, ok := exprQuery(m[dynamicKeys[k]]); ok {
					e.dynamicSQL(q, where, out)
				}
				for kk, cc := range m {
					if kk != dynamicKeys[k] {
						e.plNode(cc, where, out)
					}
				}
				continue
			case k == "PLpgSQL_expr" && m != nil:
				q, _ := m["query"].(string)
				mode, _ := m["parseMode"].(float64)
				e.plExpr(q, int(mode), where, out)
				continue
			}
			e.plNode(c, where, out)
		}
	}
}

// plExpr analyses a PL/pgSQL expression (which may call functions that run
// SQL or hold a subquery).
func (e *env) plExpr(q string, mode int, where string, out *[]Effect) {
	switch mode {
	case 0: // a whole statement (cursor query, PERFORM)
		e.analyzeBody(q, where, out, nil)
		return
	case 3, 4, 5: // assignment "target := expr"
		if i := strings.Index(q, ":="); i >= 0 {
			q = q[i+2:]
		} else if i := strings.IndexByte(q, '='); i >= 0 {
			q = q[i+1:]
		}
	}
	if !interesting(q) {
		return // a plain expression without subqueries or SQL-running calls
	}
	e.analyzeBody("SELECT "+q, where, out, nil)
}

// dynamicSQL analyses EXECUTE expr: a constant string is SQL pgmoat can
// read; anything computed is opaque.
func (e *env) dynamicSQL(expr, where string, out *[]Effect) {
	tree, err := pg_query.Parse("SELECT " + expr)
	if err == nil && len(tree.Stmts) == 1 {
		if sel := tree.Stmts[0].Stmt.GetSelectStmt(); sel != nil && len(sel.TargetList) == 1 && sel.FromClause == nil {
			if rt := sel.TargetList[0].GetResTarget(); rt != nil {
				if s, ok := e.constString(rt.Val); ok {
					e.analyzeBody(s, joinWhere(where, "EXECUTE of a constant string"), out, nil)
					return
				}
			}
		}
	}
	e.ranCode(staleCode)
	e.possibly(func() {
		e.add(out, OpOpaque, everything(), "EXECUTE of a computed string ("+Shorten(strings.TrimSpace(expr), 60)+")", where)
	})
}

// unreadableLanguage adds the effect of code in a language pgmoat cannot
// read: an untrusted language (by convention its name ends in u:
// plperlu, plpython3u) can reach outside the transaction, files and
// connections included; a trusted one runs inside it, where guarded
// execution sees what it did.
func (e *env) unreadableLanguage(out *[]Effect, lang, what, where string) {
	e.ranCode(staleCode)
	if strings.HasSuffix(lang, "u") {
		e.add(out, OpOpaque, everything(), what+" (an untrusted language reaches outside the transaction)", where)
		return
	}
	e.possibly(func() { e.add(out, OpOpaque, everything(), what, where) })
}
