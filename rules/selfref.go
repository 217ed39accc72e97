package rules

import (
	"slices"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/proto"
)

// Filters that give every row back to itself. A subquery or join over the
// very table a DELETE or UPDATE writes finds, for each row, that row
// itself, so a filter that only asks for such a partner keeps every row:
//
//	DELETE FROM t WHERE id IN (SELECT id FROM t)
//	DELETE FROM t WHERE id = ANY(ARRAY(SELECT id FROM t))
//	DELETE FROM t WHERE id IN (SELECT id FROM t UNION SELECT 0)
//	WITH k AS (SELECT id FROM t) DELETE FROM t WHERE id IN (SELECT id FROM k)
//	DELETE FROM t WHERE EXISTS (SELECT 1 FROM t s WHERE s.id = t.id)
//	DELETE FROM t USING t s WHERE s.id = t.id
//	UPDATE t SET x = 0 FROM t s WHERE s.id = t.id
//	MERGE INTO t USING t s ON s.id = t.id WHEN MATCHED THEN DELETE
//	INSERT INTO t SELECT * FROM t ON CONFLICT (id) DO UPDATE SET ...
//
// pgmoat recognises them by substituting the row for its partner: the
// subquery's or join's condition, with both names standing for the same
// row, must keep every row (s.id = t.id becomes id = id). A real filter in
// the subquery (WHERE created < now() - interval '1 year'), a LIMIT, a
// join with another table or EXCEPT keep the statement a real filter.

// maxSelfDepth bounds how deep CTEs and derived tables are followed.
const maxSelfDepth = 8

// selfSubLink classifies a subquery condition over the target's rows.
func (e *env) selfSubLink(s *pg_query.SubLink, t target) (rows, bool) {
	q := s.Subselect.GetSelectStmt()
	op := lastName(s.OperName)
	switch s.SubLinkType {
	case pg_query.SubLinkType_EXISTS_SUBLINK:
		if _, _, ok := e.selfRows(q, t, t.with, 0, true); ok {
			return rowsAll, true
		}
	case pg_query.SubLinkType_ANY_SUBLINK:
		if (op == "" || op == "=") && e.selfIn(s.Testexpr, s.Subselect, t) {
			return rowsAll, true
		}
	case pg_query.SubLinkType_ALL_SUBLINK:
		// x <> ALL (SELECT -1): NOT IN a few constants.
		if (op == "<>" || op == "!=") && e.constantRows(q) {
			return rowsAll, true
		}
	}
	return 0, false
}

// notIn reports whether NOT arg keeps every row but a few because arg is
// x IN (a subquery of constants): id NOT IN (SELECT -1).
func (e *env) notIn(arg *pg_query.Node) bool {
	s := arg.GetSubLink()
	if s == nil || s.SubLinkType != pg_query.SubLinkType_ANY_SUBLINK {
		return false
	}
	op := lastName(s.OperName)
	return (op == "" || op == "=") && e.constantRows(s.Subselect.GetSelectStmt())
}

// selfIn reports whether lhs IN (sub) keeps every row of the target: sub
// yields, for each row, the row's own lhs columns.
func (e *env) selfIn(lhs, sub *pg_query.Node, t target) bool {
	var cols []string
	if r := lhs.GetRowExpr(); r != nil {
		for _, a := range r.Args {
			c, ok := e.targetColumn(a, t)
			if !ok {
				return false
			}
			cols = append(cols, c)
		}
	} else if c, ok := e.targetColumn(lhs, t); ok {
		cols = []string{c}
	}
	if len(cols) == 0 {
		return false
	}
	outs, star, ok := e.selfRows(sub.GetSelectStmt(), t, t.with, 0, false)
	return ok && !star && slices.Equal(outs, cols)
}

// dmlFilter classifies the filter of DML whose target is joined with
// other relations (DELETE ... USING, UPDATE ... FROM, MERGE ... USING):
// joined with itself on a condition that holds for each row and itself,
// every row has a partner.
func (e *env) dmlFilter(w *pg_query.Node, t target, joined []*pg_query.Node) rows {
	if len(joined) == 1 {
		if alias, _, ok := e.selfSource(joined[0], t, t.with, 0); ok {
			if w == nil || e.filter(stripQualifiers(w, alias, t.name), target{name: alias}) == rowsAll {
				return rowsAll
			}
		}
	}
	return e.filter(w, t)
}

// selfRows reports whether query q yields, for every row of the target,
// a row made from that row itself. outs are its output columns by
// position: the target column each carries, "" for other values; star
// when it is SELECT *. exists allows a LIMIT (EXISTS needs one row).
func (e *env) selfRows(q *pg_query.SelectStmt, t target, scope []*pg_query.Node, depth int, exists bool) (outs []string, star, ok bool) {
	if q == nil || depth > maxSelfDepth || t.obj.Name == "" {
		return nil, false, false
	}
	if w := q.WithClause; w != nil {
		if w.Recursive {
			return nil, false, false
		}
		scope = append(slices.Clip(w.Ctes), scope...)
	}
	switch q.Op {
	case pg_query.SetOperation_SETOP_UNION:
		if outs, star, ok := e.selfRows(q.Larg, t, scope, depth+1, exists); ok {
			return outs, star, true
		}
		return e.selfRows(q.Rarg, t, scope, depth+1, exists)
	case pg_query.SetOperation_SETOP_INTERSECT:
		lo, ls, lok := e.selfRows(q.Larg, t, scope, depth+1, exists)
		ro, rs, rok := e.selfRows(q.Rarg, t, scope, depth+1, exists)
		if lok && rok && ls == rs && slices.Equal(lo, ro) {
			return lo, ls, true
		}
		return nil, false, false
	case pg_query.SetOperation_SETOP_EXCEPT:
		return nil, false, false
	}
	if len(q.ValuesLists) > 0 || q.HavingClause != nil || q.LimitOffset != nil || len(q.FromClause) != 1 {
		return nil, false, false
	}
	if q.LimitCount != nil {
		if n, ok := e.numConst(q.LimitCount); !exists || !ok || n < 1 {
			return nil, false, false
		}
	}
	alias, cols, ok := e.selfSource(q.FromClause[0], t, scope, depth)
	if !ok {
		return nil, false, false
	}
	if q.WhereClause != nil && e.filter(stripQualifiers(q.WhereClause, alias, t.name), target{name: alias}) != rowsAll {
		return nil, false, false
	}
	self := target{name: alias}
	for _, n := range q.TargetList {
		v := n.GetResTarget().GetVal()
		if c := v.GetColumnRef(); c != nil && c.Fields[len(c.Fields)-1].GetAStar() != nil {
			if len(q.TargetList) == 1 && cols == nil {
				return nil, true, true
			}
			return nil, false, false
		}
		col := ""
		if l := e.linear(stripQualifiers(v, alias, t.name), self); l.base != nil && l.k == 0 {
			if c, ok := e.targetColumn(l.base, self); ok && (cols == nil || slices.Contains(cols, c)) {
				col = c
			}
		}
		outs = append(outs, col)
	}
	return outs, false, true
}

// selfSource reports whether a FROM item yields every row of the target:
// the target relation itself, or a CTE or derived table that does. alias
// is the name the query uses for it; cols the target columns it keeps
// under their own names (nil: all of them).
func (e *env) selfSource(item *pg_query.Node, t target, scope []*pg_query.Node, depth int) (alias string, cols []string, ok bool) {
	var q *pg_query.SelectStmt
	switch x := item.Node.(type) {
	case *pg_query.Node_RangeVar:
		rv := x.RangeVar
		alias = rv.Relname
		if rv.Alias != nil {
			if len(rv.Alias.Colnames) > 0 {
				return "", nil, false
			}
			alias = rv.Alias.Aliasname
		}
		if cte := findCTE(scope, rv); cte != nil {
			if len(cte.Aliascolnames) > 0 {
				return "", nil, false
			}
			q = cte.Ctequery.GetSelectStmt()
			break
		}
		if objectKey(e.resolveRel(rv)) == objectKey(t.obj) {
			return alias, nil, true
		}
		return "", nil, false
	case *pg_query.Node_RangeSubselect:
		rs := x.RangeSubselect
		if rs.Lateral || rs.Alias == nil || len(rs.Alias.Colnames) > 0 {
			return "", nil, false
		}
		alias = rs.Alias.Aliasname
		q = rs.Subquery.GetSelectStmt()
	default:
		return "", nil, false
	}
	outs, star, ok := e.selfRows(q, t, scope, depth+1, false)
	if !ok {
		return "", nil, false
	}
	if star {
		return alias, nil, true
	}
	names := outputNames(q)
	cols = []string{}
	for i, o := range outs {
		if o != "" && i < len(names) && names[i] == o {
			cols = append(cols, o)
		}
	}
	return alias, cols, true
}

// findCTE returns the CTE an unqualified relation name refers to.
func findCTE(scope []*pg_query.Node, rv *pg_query.RangeVar) *pg_query.CommonTableExpr {
	if rv.Schemaname != "" || rv.Catalogname != "" {
		return nil
	}
	for _, n := range scope {
		if c := n.GetCommonTableExpr(); c != nil && c.Ctename == rv.Relname {
			return c
		}
	}
	return nil
}

// outputNames returns the names of a query's output columns, "" where
// pgmoat cannot tell.
func outputNames(q *pg_query.SelectStmt) []string {
	for q != nil && q.Op != pg_query.SetOperation_SETOP_NONE {
		q = q.Larg
	}
	if q == nil {
		return nil
	}
	out := make([]string, len(q.TargetList))
	for i, n := range q.TargetList {
		rt := n.GetResTarget()
		switch {
		case rt.GetName() != "":
			out[i] = rt.GetName()
		case rt.GetVal().GetColumnRef() != nil:
			f := rt.GetVal().GetColumnRef().Fields
			out[i] = f[len(f)-1].GetString_().GetSval()
		}
	}
	return out
}

// stripQualifiers returns a copy of n in which column references
// qualified with one of names are unqualified: the names stand for the
// same row. Subqueries inside keep their own scopes.
func stripQualifiers(n *pg_query.Node, names ...string) *pg_query.Node {
	c := proto.Clone(n).(*pg_query.Node)
	walk(c, func(m proto.Message) bool {
		switch x := m.(type) {
		case *pg_query.SelectStmt:
			return false
		case *pg_query.ColumnRef:
			if f := x.Fields; len(f) >= 2 && slices.Contains(names, f[len(f)-2].GetString_().GetSval()) {
				x.Fields = f[len(f)-1:]
			}
		}
		return true
	})
	return c
}

// selfCopies reports whether INSERT ... SELECT ... ON CONFLICT DO UPDATE
// reads every row of the table it inserts into, giving each row's
// conflict key its own value: then every row conflicts with itself and
// the DO UPDATE rewrites it.
func (e *env) selfCopies(ins *pg_query.InsertStmt, t target) bool {
	oc := ins.OnConflictClause
	outs, star, ok := e.selfRows(ins.SelectStmt.GetSelectStmt(), t, t.with, 0, false)
	if !ok || oc == nil {
		return false
	}
	if oc.WhereClause != nil && e.filter(oc.WhereClause, t) != rowsAll {
		return false
	}
	if star && len(ins.Cols) == 0 {
		return true // every column, its own value
	}
	if oc.Infer == nil || oc.Infer.Conname != "" || len(oc.Infer.IndexElems) == 0 || len(ins.Cols) == 0 {
		return false
	}
	for _, el := range oc.Infer.IndexElems {
		col := el.GetIndexElem().GetName()
		if col == "" {
			return false
		}
		i := slices.IndexFunc(ins.Cols, func(c *pg_query.Node) bool { return c.GetResTarget().GetName() == col })
		if i < 0 || i >= len(outs) || outs[i] != col {
			return false
		}
	}
	return true
}
