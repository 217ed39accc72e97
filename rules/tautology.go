package rules

import (
	"math"
	"slices"
	"strconv"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Filters that look at the rows and still keep every one. pgmoat lets a
// DELETE or UPDATE with a real filter through (proven bounded, or run
// under guard), so a filter that names a column yet matches every row is
// the way around it. These forms count as matching every row (rowsAll):
// the statement is judged as DELETE or UPDATE of every row, with or
// without the guard, also by pgmoat check.
//
//   - An expression compared with itself through arithmetic that changes
//     nothing: id = id + 0, id < id + 1, id - id = 0, 0 * id = 0,
//     lower(email) = lower(email), id = (SELECT id).
//   - Tests every value passes: x IS DISTINCT FROM NULL, x IN (x, 1),
//     x LIKE '%', x ~ '', x::text <> '', length(x::text) > 0,
//     abs(x) >= 0, ranges over a whole type (x <= 2147483647,
//     x >= -2147483648, ts < 'infinity', x <= 'NaN', s >= '',
//     x BETWEEN -2147483648 AND 2147483647, x NOT BETWEEN 2 AND 1), and
//     conditions that complete each other under OR (id < 5 OR id >= 5,
//     x = 'a' OR x <> 'a', p OR NOT p).
//   - System columns every row has: tableoid > 0, tableoid =
//     'users'::regclass (the target itself), xmin <> 0, ctid > '(0,0)'.
//     (xmax = 0 is not one: a row whose deleter rolled back, or that a
//     transaction locked, keeps that transaction's id there.)
//   - Every row but a few: id <> 1, id NOT IN (1, 2), id IS DISTINCT FROM
//     1, NOT (id = 1) where id is a unique key the catalog knows, and NOT
//     IN a subquery of constants (id NOT IN (SELECT -1)).
//   - CASE, COALESCE and IS TRUE / IS NOT FALSE over branches that all
//     keep every row.
//   - Subqueries and joins that give every row back to itself
//     (selfref.go).
//
// Claiming every row for a filter that is in fact narrower only makes
// pgmoat stricter, so these checks may over-approximate; rowsNone ("no
// row") is claimed only where it is exact. Which rows a data-dependent
// filter matches (id > 0, a parameter array) only running it tells: those
// stay rowsSome.

// Bounds of integer (int4), the most common key type: a range that
// reaches past one covers every value of the column.
const (
	maxInt4 = math.MaxInt32
	minInt4 = math.MinInt32
)

// tautology classifies an expression over the target's rows that keeps
// every row (rowsAll) or none (rowsNone); ok is false when it is a real
// filter as far as pgmoat can tell.
func (e *env) tautology(n *pg_query.Node, t target) (rows, bool) {
	switch x := n.Node.(type) {
	case *pg_query.Node_AExpr:
		return e.alwaysAExpr(x.AExpr, t)
	case *pg_query.Node_CaseExpr:
		c := x.CaseExpr
		branches := make([]*pg_query.Node, 0, len(c.Args)+1)
		for _, w := range c.Args {
			branches = append(branches, w.GetCaseWhen().GetResult())
		}
		// Without ELSE, a row no WHEN matches gets NULL.
		return e.allBranches(append(branches, c.Defresult), t)
	case *pg_query.Node_CoalesceExpr:
		return e.allBranches(x.CoalesceExpr.Args, t)
	case *pg_query.Node_BooleanTest:
		b := x.BooleanTest
		switch b.Booltesttype {
		case pg_query.BoolTestType_IS_NOT_UNKNOWN:
			return rowsAll, true // like IS NOT NULL
		case pg_query.BoolTestType_IS_TRUE, pg_query.BoolTestType_IS_NOT_FALSE:
			if r := e.filter(b.Arg, t); r != rowsSome {
				return r, true
			}
		case pg_query.BoolTestType_IS_NOT_TRUE, pg_query.BoolTestType_IS_FALSE:
			if e.filter(b.Arg, t) == rowsNone {
				return rowsAll, true
			}
		}
	case *pg_query.Node_SubLink:
		return e.selfSubLink(x.SubLink, t)
	}
	return 0, false
}

// allBranches classifies a choice among branches (CASE results, COALESCE
// arguments): every row when every branch keeps every row, none when none
// does. A nil branch is NULL.
func (e *env) allBranches(branches []*pg_query.Node, t target) (rows, bool) {
	all, none := len(branches) > 0, len(branches) > 0
	for _, b := range branches {
		r := rowsNone
		if b != nil {
			r = e.filter(b, t)
		}
		all = all && r == rowsAll
		none = none && r == rowsNone
	}
	switch {
	case all:
		return rowsAll, true
	case none:
		return rowsNone, true
	}
	return 0, false
}

func exprOp(a *pg_query.A_Expr) string {
	if len(a.Name) != 1 {
		return ""
	}
	return a.Name[0].GetString_().GetSval()
}

func (e *env) alwaysAExpr(a *pg_query.A_Expr, t target) (rows, bool) {
	op := exprOp(a)
	switch a.Kind {
	case pg_query.A_Expr_Kind_AEXPR_OP:
		if a.Lexpr == nil || a.Rexpr == nil {
			return 0, false
		}
		l, r := unwrapScalar(a.Lexpr), unwrapScalar(a.Rexpr)
		lt, rt := e.refsTarget(l, t, false), e.refsTarget(r, t, false)
		switch {
		case lt && rt:
			return e.sameSides(op, l, r, t)
		case lt:
			return e.oneSide(op, l, r, t)
		case rt:
			return e.oneSide(flipOp(op), r, l, t)
		}
	case pg_query.A_Expr_Kind_AEXPR_DISTINCT:
		switch {
		case isNullConst(a.Lexpr) || isNullConst(a.Rexpr):
			return rowsAll, true // x IS DISTINCT FROM NULL: x IS NOT NULL
		case e.sameExpr(a.Lexpr, a.Rexpr, t):
			if pureExpr(a.Lexpr) {
				return rowsNone, true
			}
		case isValue(a.Rexpr) && e.singleKey(a.Lexpr, t), isValue(a.Lexpr) && e.singleKey(a.Rexpr, t):
			return rowsAll, true // every row but one
		}
	case pg_query.A_Expr_Kind_AEXPR_NOT_DISTINCT:
		if e.sameExpr(a.Lexpr, a.Rexpr, t) {
			return rowsAll, true
		}
	case pg_query.A_Expr_Kind_AEXPR_IN:
		l := a.Rexpr.GetList()
		if l == nil {
			return 0, false
		}
		switch op {
		case "=":
			if slices.ContainsFunc(l.Items, func(it *pg_query.Node) bool { return e.sameExpr(a.Lexpr, it, t) }) {
				return rowsAll, true
			}
		case "<>":
			if len(l.Items) <= maxBoundedRows && !slices.ContainsFunc(l.Items, func(it *pg_query.Node) bool { return !isValue(it) }) && e.singleKey(a.Lexpr, t) {
				return rowsAll, true // every row but a few
			}
		}
	case pg_query.A_Expr_Kind_AEXPR_OP_ANY:
		if sub := a.Rexpr.GetSubLink(); sub != nil && op == "=" && sub.SubLinkType == pg_query.SubLinkType_ARRAY_SUBLINK {
			if e.selfIn(a.Lexpr, sub.Subselect, t) {
				return rowsAll, true
			}
		}
	case pg_query.A_Expr_Kind_AEXPR_BETWEEN, pg_query.A_Expr_Kind_AEXPR_BETWEEN_SYM:
		if l := a.Rexpr.GetList(); l != nil && len(l.Items) == 2 {
			lo, hi := l.Items[0], l.Items[1]
			if e.bottom(lo) && e.top(hi) || a.Kind == pg_query.A_Expr_Kind_AEXPR_BETWEEN_SYM && e.bottom(hi) && e.top(lo) {
				return rowsAll, true
			}
		}
	case pg_query.A_Expr_Kind_AEXPR_NOT_BETWEEN:
		if l := a.Rexpr.GetList(); l != nil && len(l.Items) == 2 {
			lo, lok := e.numConst(l.Items[0])
			hi, hok := e.numConst(l.Items[1])
			if lok && hok && lo > hi {
				return rowsAll, true // BETWEEN 2 AND 1 is empty
			}
		}
	case pg_query.A_Expr_Kind_AEXPR_LIKE, pg_query.A_Expr_Kind_AEXPR_ILIKE:
		if op == "~~" || op == "~~*" {
			if s, ok := e.stringConst(a.Rexpr); ok && s != "" && strings.Trim(s, "%") == "" {
				return rowsAll, true
			}
		}
	case pg_query.A_Expr_Kind_AEXPR_SIMILAR:
		if f := a.Rexpr.GetFuncCall(); op == "~" && f != nil && len(f.Args) == 1 && lastName(f.Funcname) == "similar_to_escape" {
			if s, ok := e.stringConst(f.Args[0]); ok && s != "" && strings.Trim(s, "%") == "" {
				return rowsAll, true
			}
		}
	}
	return 0, false
}

// sameSides classifies a comparison whose two sides both look at the
// target's rows.
func (e *env) sameSides(op string, l, r *pg_query.Node, t target) (rows, bool) {
	if e.sameExpr(l, r, t) {
		switch op {
		case "=", ">=", "<=":
			return rowsAll, true
		case "<>", "!=", "<", ">":
			if pureExpr(l) {
				return rowsNone, true
			}
		}
		return 0, false
	}
	// x + a op x + b: the same value shifted by constants.
	ll, rl := e.linear(l, t), e.linear(r, t)
	switch {
	case ll.base != nil && rl.base != nil && e.sameExpr(ll.base, rl.base, t):
		if holds(op, ll.k, rl.k) {
			return rowsAll, true
		}
	case ll.base == nil && rl.base == nil:
		if holds(op, ll.k, rl.k) {
			return rowsAll, true
		}
	}
	return 0, false
}

// oneSide classifies x op c, where only x looks at the target's rows.
func (e *env) oneSide(op string, x, c *pg_query.Node, t target) (rows, bool) {
	// x folds to a constant: id - id, 0 * id.
	if lx := e.linear(x, t); lx.base == nil {
		if v, ok := e.numConst(c); ok && holds(op, lx.k, v) {
			return rowsAll, true
		}
	}
	if r, ok := e.systemColumn(op, x, c, t); ok {
		return r, true
	}
	switch op {
	case "<", "<=":
		if e.top(c) && (op == "<=" || !e.numBound(c)) || op == "<" && e.beyondTop(c) {
			return rowsAll, true
		}
	case ">", ">=":
		if e.bottom(c) && (op == ">=" || !e.numBound(c)) || op == ">" && e.beyondBottom(c) {
			return rowsAll, true
		}
		if s, ok := e.stringConst(c); ok && s == "" && op == ">=" {
			return rowsAll, true // the empty string sorts first
		}
	case "~", "~*":
		if s, ok := e.stringConst(c); ok {
			switch s {
			case "", ".*", "^", "$", "^.*", ".*$", "^.*$":
				return rowsAll, true
			}
		}
	}
	switch op {
	case "<>", "!=", ">":
		// The text of a value is never empty (x::text <> '').
		if isTextCast(x) {
			if s, ok := e.stringConst(c); ok && s == "" {
				return rowsAll, true
			}
		}
	}
	switch op {
	case ">", ">=", "<>", "!=":
		// Lengths and absolute values are never negative; the length of
		// a value's text is never zero.
		if f := x.GetFuncCall(); f != nil && len(f.Args) == 1 {
			v, ok := e.numConst(c)
			if !ok {
				break
			}
			min := 0.0
			switch lastName(f.Funcname) {
			case "length", "char_length", "character_length", "octet_length", "bit_length":
				if isTextCast(f.Args[0]) {
					min = 1
				}
			case "abs":
			default:
				return 0, false
			}
			if op == ">=" && v <= min || op == ">" && v < min || (op == "<>" || op == "!=") && v < min {
				return rowsAll, true
			}
		}
	}
	if (op == "<>" || op == "!=") && isValue(c) && e.singleKey(x, t) {
		return rowsAll, true // every row but one
	}
	return 0, false
}

// systemColumn classifies comparisons of the system columns every row
// has with constants that every row passes.
func (e *env) systemColumn(op string, x, c *pg_query.Node, t target) (rows, bool) {
	name := e.systemColumnOf(x, t)
	if name == "" {
		return 0, false
	}
	num, isNum := e.numConst(c)
	str, isStr := e.stringConst(c)
	if isStr {
		if v, err := strconv.ParseFloat(strings.TrimSpace(str), 64); err == nil {
			num, isNum = v, true
		}
	}
	switch name {
	case "tableoid":
		if rel, ok := e.regclassConst(c); ok {
			names := rel == t.relname
			if op == "=" && names || (op == "<>" || op == "!=") && !names {
				return rowsAll, true
			}
			break
		}
		if isNum && (op == ">" && num < 1 || op == ">=" && num <= 1 || (op == "<>" || op == "!=") && num == 0) {
			return rowsAll, true // OIDs are positive
		}
	case "xmin":
		if isNum && num == 0 && (op == "<>" || op == "!=") {
			return rowsAll, true // every row has an inserting transaction
		}
	case "ctid":
		if isStr && strings.ReplaceAll(str, " ", "") == "(0,0)" && (op == ">" || op == ">=" || op == "<>" || op == "!=") {
			return rowsAll, true // the first tuple is (0,1)
		}
	}
	return 0, false
}

// systemColumnOf returns the name of the system column x is (possibly
// cast), or "".
func (e *env) systemColumnOf(x *pg_query.Node, t target) string {
	for x.GetTypeCast() != nil {
		x = x.GetTypeCast().Arg
	}
	col, ok := e.targetColumn(x, t)
	if !ok {
		return ""
	}
	switch col {
	case "tableoid", "ctid", "xmin":
		return col
	}
	return ""
}

// regclassConst returns the relation name of 'name'::regclass (possibly
// cast on to oid), folded as the server folds it.
func (e *env) regclassConst(c *pg_query.Node) (string, bool) {
	tc := c.GetTypeCast()
	for tc != nil && lastName(tc.TypeName.GetNames()) == "oid" {
		tc = tc.Arg.GetTypeCast()
	}
	if tc == nil || lastName(tc.TypeName.GetNames()) != "regclass" {
		return "", false
	}
	s, ok := e.stringConst(tc.Arg)
	if !ok {
		return "", false
	}
	parts, ok := splitQualifiedName(s)
	if !ok || len(parts) == 0 {
		return "", false
	}
	return parts[len(parts)-1], true
}

// top and bottom report whether a bound is at or past the end of every
// integer column's range (int4 or wider) or of any ordered type
// ('infinity', 'NaN' sorts last); numBound whether it is a number.
func (e *env) top(c *pg_query.Node) bool {
	if v, ok := e.numConst(c); ok {
		return v >= maxInt4
	}
	s, ok := e.stringConst(c)
	if !ok {
		return false
	}
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "infinity", "+infinity", "inf", "+inf", "nan":
		return true
	}
	return false
}

func (e *env) bottom(c *pg_query.Node) bool {
	if v, ok := e.numConst(c); ok {
		return v <= minInt4
	}
	s, ok := e.stringConst(c)
	if !ok {
		return false
	}
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "-infinity", "-inf":
		return true
	}
	return false
}

func (e *env) numBound(c *pg_query.Node) bool {
	_, ok := e.numConst(c)
	return ok
}

func (e *env) beyondTop(c *pg_query.Node) bool {
	v, ok := e.numConst(c)
	return ok && v > maxInt4
}

func (e *env) beyondBottom(c *pg_query.Node) bool {
	v, ok := e.numConst(c)
	return ok && v < minInt4
}

// numConst reads a numeric constant, possibly cast or negated.
func (e *env) numConst(n *pg_query.Node) (float64, bool) {
	if n == nil {
		return 0, false
	}
	switch x := n.Node.(type) {
	case *pg_query.Node_AConst:
		if x.AConst.Isnull {
			return 0, false
		}
		e.literalSensitive = true
		return constNum(x.AConst)
	case *pg_query.Node_TypeCast:
		return e.numConst(x.TypeCast.Arg)
	case *pg_query.Node_AExpr:
		if a := x.AExpr; a.Kind == pg_query.A_Expr_Kind_AEXPR_OP && a.Lexpr == nil && exprOp(a) == "-" {
			v, ok := e.numConst(a.Rexpr)
			return -v, ok
		}
	}
	return 0, false
}

// stringConst reads a string constant, possibly cast.
func (e *env) stringConst(n *pg_query.Node) (string, bool) {
	for n.GetTypeCast() != nil {
		n = n.GetTypeCast().Arg
	}
	c := n.GetAConst()
	if c == nil || c.GetSval() == nil {
		return "", false
	}
	e.literalSensitive = true
	return c.GetSval().Sval, true
}

func lastName(ns []*pg_query.Node) string {
	if len(ns) == 0 {
		return ""
	}
	return ns[len(ns)-1].GetString_().GetSval()
}

// isTextCast reports whether n is a value cast to a string type.
func isTextCast(n *pg_query.Node) bool {
	tc := n.GetTypeCast()
	if tc == nil {
		return false
	}
	switch lastName(tc.TypeName.GetNames()) {
	case "text", "varchar", "bpchar", "name":
		return true
	}
	return false
}

func flipOp(op string) string {
	switch op {
	case "<":
		return ">"
	case ">":
		return "<"
	case "<=":
		return ">="
	case ">=":
		return "<="
	}
	return op
}

func holds(op string, a, b float64) bool {
	switch op {
	case "=":
		return a == b
	case "<>", "!=":
		return a != b
	case "<":
		return a < b
	case "<=":
		return a <= b
	case ">":
		return a > b
	case ">=":
		return a >= b
	}
	return false
}

// lin is an expression as base + k; base nil is the constant k.
type lin struct {
	base *pg_query.Node
	k    float64
}

// linear reads n as an expression shifted by a constant, seeing through
// arithmetic that changes nothing (x + 0, x * 1, x / 1, +x, -(-x),
// (SELECT x)) and that cancels (x - x, x * 0).
func (e *env) linear(n *pg_query.Node, t target) lin {
	if n == nil {
		return lin{base: n}
	}
	switch x := n.Node.(type) {
	case *pg_query.Node_AConst, *pg_query.Node_TypeCast:
		if v, ok := e.numConst(n); ok {
			return lin{k: v}
		}
	case *pg_query.Node_SubLink:
		if v := scalarSelect(x.SubLink); v != nil {
			return e.linear(v, t)
		}
	case *pg_query.Node_AExpr:
		a := x.AExpr
		if a.Kind != pg_query.A_Expr_Kind_AEXPR_OP {
			break
		}
		op := exprOp(a)
		if a.Lexpr == nil {
			switch op {
			case "+":
				return e.linear(a.Rexpr, t)
			case "-":
				if in := a.Rexpr.GetAExpr(); in != nil && in.Kind == pg_query.A_Expr_Kind_AEXPR_OP && in.Lexpr == nil && exprOp(in) == "-" {
					return e.linear(in.Rexpr, t)
				}
				if r := e.linear(a.Rexpr, t); r.base == nil {
					return lin{k: -r.k}
				}
			}
			break
		}
		l, r := e.linear(a.Lexpr, t), e.linear(a.Rexpr, t)
		switch op {
		case "+":
			switch {
			case l.base == nil:
				return lin{base: r.base, k: r.k + l.k}
			case r.base == nil:
				return lin{base: l.base, k: l.k + r.k}
			}
		case "-":
			switch {
			case r.base == nil:
				return lin{base: l.base, k: l.k - r.k}
			case l.base != nil && e.sameExpr(l.base, r.base, t):
				return lin{k: l.k - r.k}
			}
		case "*":
			switch {
			case l.base == nil && r.base == nil:
				return lin{k: l.k * r.k}
			case l.base == nil && l.k == 0, r.base == nil && r.k == 0:
				return lin{}
			case l.base == nil && l.k == 1:
				return r
			case r.base == nil && r.k == 1:
				return l
			}
		case "/":
			if r.base == nil && r.k == 1 {
				return l
			}
		}
	}
	return lin{base: n}
}

// unwrapScalar returns x for (SELECT x), else n.
func unwrapScalar(n *pg_query.Node) *pg_query.Node {
	for {
		s := n.GetSubLink()
		if s == nil {
			return n
		}
		v := scalarSelect(s)
		if v == nil {
			return n
		}
		n = v
	}
}

// scalarSelect returns x of (SELECT x): a subquery without FROM, which
// is x evaluated for the outer row.
func scalarSelect(s *pg_query.SubLink) *pg_query.Node {
	if s.SubLinkType != pg_query.SubLinkType_EXPR_SUBLINK {
		return nil
	}
	q := s.Subselect.GetSelectStmt()
	if q == nil || q.Op != pg_query.SetOperation_SETOP_NONE || len(q.FromClause) > 0 || q.WhereClause != nil ||
		q.HavingClause != nil || len(q.TargetList) != 1 || len(q.ValuesLists) > 0 || q.LimitCount != nil || q.LimitOffset != nil {
		return nil
	}
	return q.TargetList[0].GetResTarget().GetVal()
}

// singleKey reports whether x is a column of the target that the catalog
// knows as a unique key on its own: a condition that excludes a few of its
// values keeps every row but a few.
func (e *env) singleKey(x *pg_query.Node, t target) bool {
	if e.cat == nil || len(e.cat.uniq) == 0 {
		return false
	}
	col, ok := e.targetColumn(x, t)
	if !ok {
		return false
	}
	q, ok := exactRel(t.obj)
	if !ok || e.ov.hides(q.schema, q.name) {
		return false
	}
	for _, key := range e.cat.uniq[q] {
		if len(key) == 1 && key[0] == col {
			return true
		}
	}
	return false
}

// complementOfKey reports whether cond fixes a unique key of the target
// to a few values: NOT cond then keeps every row but those.
func (e *env) complementOfKey(cond *pg_query.Node, t target) bool {
	if e.cat == nil || len(e.cat.uniq) == 0 {
		return false
	}
	q, ok := exactRel(t.obj)
	if !ok || e.ov.hides(q.schema, q.name) {
		return false
	}
	fixed := map[string]int{}
	e.fixedColumns(cond, t, fixed)
	return len(fixed) > 0 && keysFixed(e.cat.uniq[q], fixed)
}

// constantRows reports whether a subquery yields only constants: no FROM
// (SELECT -1, SELECT 1 UNION SELECT 2) or VALUES. x NOT IN such a
// subquery keeps every row but a few. NULL makes NOT IN keep none.
func (e *env) constantRows(q *pg_query.SelectStmt) bool {
	if q == nil {
		return false
	}
	if q.Op != pg_query.SetOperation_SETOP_NONE {
		return e.constantRows(q.Larg) && e.constantRows(q.Rarg)
	}
	if len(q.FromClause) > 0 || q.WhereClause != nil || q.HavingClause != nil {
		return false
	}
	for _, vl := range q.ValuesLists {
		for _, v := range vl.GetList().GetItems() {
			if !isValue(v) {
				return false
			}
		}
	}
	for _, rt := range q.TargetList {
		if !isValue(rt.GetResTarget().GetVal()) {
			return false
		}
	}
	return len(q.TargetList) > 0 || len(q.ValuesLists) > 0
}

// coversAll reports whether the conditions joined by OR keep every row
// between them: p OR NOT p, x = c OR x <> c, x < a OR x >= b with b <= a.
func (e *env) coversAll(args []*pg_query.Node, t target) bool {
	type cmp struct {
		x, c *pg_query.Node
		op   string
	}
	var cmps []cmp
	for i, a := range args {
		if b := a.GetBoolExpr(); b != nil && b.Boolop == pg_query.BoolExprType_NOT_EXPR && len(b.Args) == 1 {
			for j, o := range args {
				if j != i && e.sameExpr(o, b.Args[0], t) {
					return true
				}
			}
		}
		x := a.GetAExpr()
		if x == nil || x.Kind != pg_query.A_Expr_Kind_AEXPR_OP || x.Lexpr == nil || x.Rexpr == nil {
			continue
		}
		lt, rt := e.refsTarget(x.Lexpr, t, false), e.refsTarget(x.Rexpr, t, false)
		switch {
		case lt && !rt && isConstant(x.Rexpr):
			cmps = append(cmps, cmp{x.Lexpr, x.Rexpr, exprOp(x)})
		case rt && !lt && isConstant(x.Lexpr):
			cmps = append(cmps, cmp{x.Rexpr, x.Lexpr, flipOp(exprOp(x))})
		}
	}
	for i := 0; i < len(cmps); i++ {
		// The conditions on the same expression as cmps[i].
		group := []cmp{cmps[i]}
		for j := i + 1; j < len(cmps); j++ {
			if e.sameExpr(cmps[i].x, cmps[j].x, t) {
				group = append(group, cmps[j])
			}
		}
		if len(group) < 2 {
			continue
		}
		e.literalSensitive = true
		// x = c OR x <> c, for constants of any type.
		for _, a := range group {
			for _, b := range group {
				if a.op == "=" && (b.op == "<>" || b.op == "!=") && sameNode(a.c, b.c) {
					return true
				}
			}
		}
		// Rays over numbers: (-inf, lo) and (hi, +inf) that meet.
		lo, loIncl, hasLo := math.Inf(-1), false, false
		hi, hiIncl, hasHi := math.Inf(1), false, false
		var points []float64
		for _, c := range group {
			v, ok := e.numConst(c.c)
			if !ok {
				continue
			}
			switch c.op {
			case "<", "<=", "<>", "!=":
				incl := c.op == "<="
				if !hasLo || v > lo || v == lo && incl {
					lo, loIncl, hasLo = v, incl, true
				}
			case "=":
				points = append(points, v)
			}
			switch c.op {
			case ">", ">=", "<>", "!=":
				incl := c.op == ">="
				if !hasHi || v < hi || v == hi && incl {
					hi, hiIncl, hasHi = v, incl, true
				}
			}
		}
		if hasLo && hasHi && (hi < lo || hi == lo && (loIncl || hiIncl || slices.Contains(points, lo))) {
			return true
		}
	}
	return false
}

// sameExpr reports whether two expressions are the same, whatever their
// place in the text and whether a column of the target is qualified.
func (e *env) sameExpr(a, b *pg_query.Node, t target) bool {
	if a == nil || b == nil {
		return false
	}
	return equalMessages(a.ProtoReflect(), b.ProtoReflect(), func(x, y proto.Message) (bool, bool) {
		cx, ok1 := x.(*pg_query.ColumnRef)
		cy, ok2 := y.(*pg_query.ColumnRef)
		if !ok1 || !ok2 {
			return false, false
		}
		nx, okx := e.targetColumn(&pg_query.Node{Node: &pg_query.Node_ColumnRef{ColumnRef: cx}}, t)
		ny, oky := e.targetColumn(&pg_query.Node{Node: &pg_query.Node_ColumnRef{ColumnRef: cy}}, t)
		if okx && oky {
			return nx == ny, true
		}
		return false, false
	})
}

// sameNode compares two nodes ignoring where they are in the text.
func sameNode(a, b *pg_query.Node) bool {
	if a == nil || b == nil {
		return a == b
	}
	return equalMessages(a.ProtoReflect(), b.ProtoReflect(), nil)
}

// equalMessages compares two parse tree messages field by field, ignoring
// locations. same may decide for a pair of sub-messages first.
func equalMessages(a, b protoreflect.Message, same func(x, y proto.Message) (eq, decided bool)) bool {
	if a.Descriptor() != b.Descriptor() {
		return false
	}
	if same != nil {
		if eq, ok := same(a.Interface(), b.Interface()); ok {
			return eq
		}
	}
	fields := a.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if fd.Name() == "location" || fd.Name() == "stmt_location" || fd.Name() == "stmt_len" {
			continue
		}
		if a.Has(fd) != b.Has(fd) {
			return false
		}
		if !a.Has(fd) {
			continue
		}
		va, vb := a.Get(fd), b.Get(fd)
		switch {
		case fd.IsList():
			la, lb := va.List(), vb.List()
			if la.Len() != lb.Len() {
				return false
			}
			for j := 0; j < la.Len(); j++ {
				if fd.Kind() == protoreflect.MessageKind {
					if !equalMessages(la.Get(j).Message(), lb.Get(j).Message(), same) {
						return false
					}
				} else if !la.Get(j).Equal(lb.Get(j)) {
					return false
				}
			}
		case fd.IsMap():
			if !va.Equal(vb) {
				return false
			}
		case fd.Kind() == protoreflect.MessageKind:
			if !equalMessages(va.Message(), vb.Message(), same) {
				return false
			}
		default:
			if !va.Equal(vb) {
				return false
			}
		}
	}
	return true
}

// pureExpr reports whether an expression calls nothing and reads nothing
// but its row: comparing it with itself gives the same answer every time.
func pureExpr(n *pg_query.Node) bool {
	pure := true
	walk(n, func(m proto.Message) bool {
		switch m.(type) {
		case *pg_query.FuncCall, *pg_query.SubLink, *pg_query.SQLValueFunction:
			pure = false
		}
		return pure
	})
	return pure
}
