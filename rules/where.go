package rules

import (
	"strconv"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/proto"
)

// rows classifies a row filter (a WHERE, a MERGE join condition).
type rows uint8

const (
	rowsSome rows = iota // depends on the target's rows: a real filter
	rowsAll              // may be true for every row
	rowsNone             // provably true for no row
)

// target names the relation a DML statement changes, for telling its
// column references from others.
type target struct {
	name string // alias, or relation name
	// For recognising subqueries and joins over the same relation
	// (selfref.go), set by dmlTarget: the relation's own name, the
	// relation as resolved, and the statement's CTEs.
	relname string
	obj     Object
	with    []*pg_query.Node
}

func targetOf(rv *pg_query.RangeVar) target {
	if rv == nil {
		return target{}
	}
	if rv.Alias != nil && rv.Alias.Aliasname != "" {
		return target{name: rv.Alias.Aliasname, relname: rv.Relname}
	}
	return target{name: rv.Relname, relname: rv.Relname}
}

// dmlTarget is the target of DML on rv, resolved as obj, in a statement
// with CTEs w.
func dmlTarget(rv *pg_query.RangeVar, obj Object, w *pg_query.WithClause) target {
	t := targetOf(rv)
	t.obj = obj
	if w != nil && !w.Recursive {
		t.with = w.Ctes
	}
	return t
}

// filter classifies a row filter. A filter that does not look at the
// target's rows (a constant, a parameter, a subquery about other tables)
// is true for every row or for none; unless pgmoat can prove it false, it
// counts as every row. Some expressions that look at rows are
// nevertheless always true: col = col, col IS NOT NULL.
func (e *env) filter(n *pg_query.Node, t target) rows {
	if n == nil {
		return rowsAll
	}
	switch x := n.Node.(type) {
	case *pg_query.Node_BoolExpr:
		b := x.BoolExpr
		switch b.Boolop {
		case pg_query.BoolExprType_AND_EXPR:
			res := rowsAll
			for _, a := range b.Args {
				switch e.filter(a, t) {
				case rowsNone:
					return rowsNone
				case rowsSome:
					res = rowsSome
				}
			}
			return res
		case pg_query.BoolExprType_OR_EXPR:
			res := rowsNone
			for _, a := range b.Args {
				switch e.filter(a, t) {
				case rowsAll:
					return rowsAll
				case rowsSome:
					res = rowsSome
				}
			}
			if res == rowsSome && e.coversAll(b.Args, t) {
				return rowsAll
			}
			return res
		case pg_query.BoolExprType_NOT_EXPR:
			if len(b.Args) != 1 {
				return rowsSome
			}
			arg := b.Args[0]
			if !e.refsTarget(arg, t, false) {
				if v, ok := e.evalBool(arg); ok && !v {
					return rowsAll
				} else if ok && v {
					return rowsNone
				}
				return rowsAll
			}
			if nt := arg.GetNullTest(); nt != nil && nt.Nulltesttype == pg_query.NullTestType_IS_NULL {
				return rowsAll // NOT (col IS NULL)
			}
			// NOT of what keeps no row, or only a few rows of a unique
			// key, keeps every row (but those few).
			if e.filter(arg, t) == rowsNone || e.complementOfKey(arg, t) || e.notIn(arg) {
				return rowsAll
			}
			return rowsSome
		}
	case *pg_query.Node_NullTest:
		if !e.refsTarget(x.NullTest.Arg, t, false) {
			return e.constFilter(n)
		}
		if x.NullTest.Nulltesttype == pg_query.NullTestType_IS_NOT_NULL {
			return rowsAll
		}
		return rowsSome
	case *pg_query.Node_AExpr:
		a := x.AExpr
		if !e.refsTarget(n, t, false) {
			return e.constFilter(n)
		}
		if r, ok := e.alwaysAExpr(a, t); ok {
			return r
		}
		return rowsSome
	case *pg_query.Node_BooleanTest:
		if !e.refsTarget(x.BooleanTest.Arg, t, false) {
			return e.constFilter(n)
		}
	}
	if !e.refsTarget(n, t, false) {
		return e.constFilter(n)
	}
	if r, ok := e.tautology(n, t); ok {
		return r
	}
	return rowsSome
}

// constFilter classifies an expression that does not depend on the rows:
// every row unless it is provably false or null.
func (e *env) constFilter(n *pg_query.Node) rows {
	if v, ok := e.evalBool(n); ok && !v {
		return rowsNone
	}
	return rowsAll
}

// refsTarget reports whether n refers to a column of the target. Inside a
// subquery only references qualified with the target's name count (an
// unqualified name there belongs to the subquery's own tables first).
func (e *env) refsTarget(n *pg_query.Node, t target, inSub bool) bool {
	if n == nil {
		return false
	}
	switch x := n.Node.(type) {
	case *pg_query.Node_ColumnRef:
		return e.colIsTarget(x.ColumnRef, t, inSub)
	case *pg_query.Node_AConst, *pg_query.Node_ParamRef:
		return false
	case *pg_query.Node_AExpr:
		return e.refsTarget(x.AExpr.Lexpr, t, inSub) || e.refsTarget(x.AExpr.Rexpr, t, inSub)
	case *pg_query.Node_BoolExpr:
		for _, a := range x.BoolExpr.Args {
			if e.refsTarget(a, t, inSub) {
				return true
			}
		}
		return false
	case *pg_query.Node_TypeCast:
		return e.refsTarget(x.TypeCast.Arg, t, inSub)
	case *pg_query.Node_NullTest:
		return e.refsTarget(x.NullTest.Arg, t, inSub)
	case *pg_query.Node_BooleanTest:
		return e.refsTarget(x.BooleanTest.Arg, t, inSub)
	case *pg_query.Node_SubLink:
		if e.refsTarget(x.SubLink.Testexpr, t, inSub) {
			return true
		}
		return e.refsTargetDeep(x.SubLink.Subselect, t)
	}
	return e.refsTargetDeep(n, t) || (!inSub && e.refsUnqualifiedDeep(n, t))
}

func (e *env) colIsTarget(c *pg_query.ColumnRef, t target, inSub bool) bool {
	f := c.Fields
	if len(f) == 0 {
		return false
	}
	if len(f) == 1 {
		if inSub {
			return false
		}
		name := f[0].GetString_()
		if name == nil { // * alone
			return true
		}
		return !e.params[name.Sval]
	}
	// Qualified: table.col, schema.table.col, ...
	q := f[len(f)-2].GetString_().GetSval()
	if q == t.name {
		return true
	}
	if inSub {
		return false
	}
	// A record variable's field (r.x) in a body is a value, not a row.
	return !e.params[f[0].GetString_().GetSval()] && len(f) > 2
}

// refsTargetDeep looks for target-qualified column references anywhere
// below n (subqueries included).
func (e *env) refsTargetDeep(n proto.Message, t target) bool {
	found := false
	walk(n, func(m proto.Message) bool {
		if found {
			return false
		}
		if c, ok := m.(*pg_query.ColumnRef); ok && e.colIsTarget(c, t, true) {
			found = true
		}
		if _, ok := m.(*pg_query.SelectStmt); ok {
			// keep descending: correlated references live in subqueries
			return true
		}
		return true
	})
	return found
}

// refsUnqualifiedDeep looks for column references outside subqueries.
func (e *env) refsUnqualifiedDeep(n proto.Message, t target) bool {
	found := false
	walk(n, func(m proto.Message) bool {
		if found {
			return false
		}
		switch x := m.(type) {
		case *pg_query.SubLink:
			if e.refsTarget(x.Testexpr, t, false) {
				found = true
			}
			return false
		case *pg_query.ColumnRef:
			if e.colIsTarget(x, t, false) {
				found = true
			}
		}
		return true
	})
	return found
}

// evalBool evaluates a row-independent boolean expression when it is made
// of constants; ok is false when pgmoat cannot tell (a parameter, a
// function). NULL counts as false (a filter keeps no row for it).
func (e *env) evalBool(n *pg_query.Node) (v, ok bool) {
	if n == nil {
		return false, false
	}
	switch x := n.Node.(type) {
	case *pg_query.Node_AConst:
		e.literalSensitive = true
		if x.AConst.Isnull {
			return false, true
		}
		return constBool(x.AConst)
	case *pg_query.Node_TypeCast:
		return e.evalBool(x.TypeCast.Arg)
	case *pg_query.Node_BoolExpr:
		b := x.BoolExpr
		switch b.Boolop {
		case pg_query.BoolExprType_NOT_EXPR:
			if len(b.Args) == 1 {
				if v, ok := e.evalBool(b.Args[0]); ok {
					if isNullConst(b.Args[0]) {
						return false, true
					}
					return !v, true
				}
			}
		case pg_query.BoolExprType_AND_EXPR:
			all := true
			for _, a := range b.Args {
				v, ok := e.evalBool(a)
				if ok && !v {
					return false, true
				}
				all = all && ok
			}
			return true, all
		case pg_query.BoolExprType_OR_EXPR:
			all := true
			for _, a := range b.Args {
				v, ok := e.evalBool(a)
				if ok && v {
					return true, true
				}
				all = all && ok
			}
			return false, all
		}
	case *pg_query.Node_NullTest:
		if c := x.NullTest.Arg.GetAConst(); c != nil {
			e.literalSensitive = true
			isNull := c.Isnull
			if x.NullTest.Nulltesttype == pg_query.NullTestType_IS_NULL {
				return isNull, true
			}
			return !isNull, true
		}
	case *pg_query.Node_AExpr:
		return e.evalCompare(x.AExpr)
	}
	return false, false
}

func isNullConst(n *pg_query.Node) bool {
	c := n.GetAConst()
	return c != nil && c.Isnull
}

// evalCompare evaluates comparisons of two numeric or two string constants.
func (e *env) evalCompare(a *pg_query.A_Expr) (bool, bool) {
	if a.Kind != pg_query.A_Expr_Kind_AEXPR_OP || len(a.Name) != 1 {
		return false, false
	}
	l, r := a.Lexpr.GetAConst(), a.Rexpr.GetAConst()
	if l == nil || r == nil {
		return false, false
	}
	e.literalSensitive = true
	if l.Isnull || r.Isnull {
		return false, true
	}
	op := a.Name[0].GetString_().GetSval()
	var c int
	if lf, ok := constNum(l); ok {
		rf, ok := constNum(r)
		if !ok {
			return false, false
		}
		switch {
		case lf < rf:
			c = -1
		case lf > rf:
			c = 1
		}
	} else if ls, rs := l.GetSval(), r.GetSval(); ls != nil && rs != nil {
		if op != "=" && op != "<>" && op != "!=" {
			return false, false // collation-dependent
		}
		c = strings.Compare(ls.Sval, rs.Sval)
	} else {
		return false, false
	}
	switch op {
	case "=":
		return c == 0, true
	case "<>", "!=":
		return c != 0, true
	case "<":
		return c < 0, true
	case "<=":
		return c <= 0, true
	case ">":
		return c > 0, true
	case ">=":
		return c >= 0, true
	}
	return false, false
}

func constNum(c *pg_query.A_Const) (float64, bool) {
	if i := c.GetIval(); i != nil {
		return float64(i.Ival), true
	}
	if f := c.GetFval(); f != nil {
		v, err := strconv.ParseFloat(f.Fval, 64)
		return v, err == nil
	}
	return 0, false
}

func constBool(c *pg_query.A_Const) (bool, bool) {
	switch {
	case c.GetBoolval() != nil:
		return c.GetBoolval().Boolval, true
	case c.GetSval() != nil:
		return parseBool(c.GetSval().Sval)
	case c.GetIval() != nil:
		return c.GetIval().Ival != 0, true
	}
	return false, false
}

func constBoolNode(n *pg_query.Node) (bool, bool) {
	if n == nil {
		return false, false
	}
	if tc := n.GetTypeCast(); tc != nil {
		return constBoolNode(tc.Arg)
	}
	if c := n.GetAConst(); c != nil {
		return constBool(c)
	}
	return false, false
}

// parseBool accepts what PostgreSQL's parse_bool accepts: unique prefixes
// of true/false/yes/no, on/off, 1/0.
func parseBool(s string) (bool, bool) {
	s = strings.ToLower(strings.TrimSpace(s))
	switch {
	case s == "":
		return false, false
	case strings.HasPrefix("true", s), strings.HasPrefix("yes", s), s == "on", s == "1":
		return true, true
	case strings.HasPrefix("false", s), strings.HasPrefix("no", s), s == "off", s == "of", s == "0":
		return false, true
	}
	return false, false
}
