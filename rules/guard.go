package rules

import (
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// Proving statements harmless, and marking what only running them can
// tell. A statement that may reach a protected table is either proven
// harmless here, cheaply, or its effects are Possible: the proxy then runs
// it under guard and checks what it really did before it can commit (see
// Effect.Possible and Verify).
//
// Proven harmless, with no guard:
//   - DELETE, UPDATE and MERGE whose WHERE fixes a unique key of the table
//     they write (equality with constants or parameters on every column of
//     a unique index the catalog knows, or IN a short list of constants),
//     at the top of a statement, not in code that may loop;
//   - INSERT and COPY FROM into tables that run no code of the database's
//     own (triggers, rules, defaults, checks, domain checks or index
//     expressions calling its functions), and SELECT from relations that
//     run none (views calling its functions, row-level security policies);
//   - calls of functions whose bodies pgmoat reads and finds harmless.
//
// Everything else that may reach a protected table is Possible, unless it
// is certain (DELETE without a WHERE) or escapes the transaction (dblink):
// those are judged statically as before.

// maxBoundedRows is the largest number of rows a WHERE may fix through IN
// lists of constants and still count as targeted.
const maxBoundedRows = 1000

// possibly runs fn with every effect it adds marked DoubtCode: it comes
// from code pgmoat cannot follow. rowsDoubt marks DoubtRows.
func (e *env) possibly(fn func()) { e.doubting(DoubtCode, fn) }

func (e *env) rowsDoubt(fn func()) { e.doubting(DoubtRows, fn) }

func (e *env) doubting(d Doubt, fn func()) {
	old := e.doubt
	if old == DoubtNone || d == DoubtCode {
		e.doubt = d
	}
	fn()
	e.doubt = old
}

// targetedDML adds the effects of DML with a real filter (rowsSome) on obj:
// nothing when the filter fixes a unique key of obj and nothing else is
// reached, else Possible op on what the operation reaches.
func (e *env) targetedDML(op Operation, obj Object, rv *pg_query.RangeVar, w *pg_query.Node, f follows, what, where string, out *[]Effect) {
	if e.keyBounded(w, rv, obj) {
		rs, unknown, remote := e.reach(obj, f, !rv.Inh)
		if len(rs) == 1 && unknown == nil && !remote {
			return
		}
	}
	e.rowsDoubt(func() {
		e.reachEffects(op, obj, f, !rv.Inh, e.strict, what+" (which rows it matches, only running it tells)", where, out)
	})
}

// keyBounded reports whether filter w of DML on relation obj (named by
// rv) matches at most maxBoundedRows rows, because it fixes every column
// of a unique key the catalog knows. Not in code bodies, where the
// statement may run in a loop.
func (e *env) keyBounded(w *pg_query.Node, rv *pg_query.RangeVar, obj Object) bool {
	if w == nil || e.code > 0 || e.cat == nil || rv == nil {
		return false
	}
	q, ok := exactRel(obj)
	if !ok || e.ov.hides(q.schema, q.name) {
		return false
	}
	kind := e.cat.relkinds[q]
	if kind != 'r' && kind != 'p' {
		return false
	}
	// An inheritance parent's unique index does not cover its children.
	if kind == 'r' && rv.Inh && len(e.cat.children[q]) > 0 {
		return false
	}
	keys := e.cat.uniq[q]
	if len(keys) == 0 {
		return false
	}
	fixed := map[string]int{}
	e.fixedColumns(w, targetOf(rv), fixed)
	return keysFixed(keys, fixed)
}

// keysFixed reports whether fixed (columns and how many values each may
// take) fixes one of keys to at most maxBoundedRows rows.
func keysFixed(keys [][]string, fixed map[string]int) bool {
	for _, key := range keys {
		n := 1
		for _, col := range key {
			k, ok := fixed[col]
			if !ok {
				n = 0
				break
			}
			n *= k
			if n > maxBoundedRows {
				break
			}
		}
		if n > 0 && n <= maxBoundedRows {
			return true
		}
	}
	return false
}

// fixedColumns collects the target's columns that an AND-conjunction of
// conditions fixes, with how many values each may take: col = value,
// value = col, col IN (constants).
func (e *env) fixedColumns(n *pg_query.Node, t target, fixed map[string]int) {
	if n == nil {
		return
	}
	switch x := n.Node.(type) {
	case *pg_query.Node_BoolExpr:
		if x.BoolExpr.Boolop == pg_query.BoolExprType_AND_EXPR {
			for _, a := range x.BoolExpr.Args {
				e.fixedColumns(a, t, fixed)
			}
		}
	case *pg_query.Node_AExpr:
		a := x.AExpr
		if len(a.Name) != 1 {
			return
		}
		op := a.Name[0].GetString_().GetSval()
		switch {
		case a.Kind == pg_query.A_Expr_Kind_AEXPR_OP && op == "=":
			if col, ok := e.targetColumn(a.Lexpr, t); ok && isValue(a.Rexpr) {
				setFixed(fixed, col, 1)
			} else if col, ok := e.targetColumn(a.Rexpr, t); ok && isValue(a.Lexpr) {
				setFixed(fixed, col, 1)
			}
		case a.Kind == pg_query.A_Expr_Kind_AEXPR_IN && op == "=":
			col, ok := e.targetColumn(a.Lexpr, t)
			l := a.Rexpr.GetList()
			if !ok || l == nil || len(l.Items) == 0 {
				return
			}
			for _, it := range l.Items {
				if !isConstant(it) {
					return
				}
			}
			setFixed(fixed, col, len(l.Items))
		}
	}
}

func setFixed(fixed map[string]int, col string, n int) {
	if old, ok := fixed[col]; !ok || n < old {
		fixed[col] = n
	}
}

// targetColumn returns the column of the target n names (col, or
// target.col).
func (e *env) targetColumn(n *pg_query.Node, t target) (string, bool) {
	if tc := n.GetTypeCast(); tc != nil {
		// col::type = value still fixes col when the cast is
		// injective, which pgmoat cannot know: not a key.
		return "", false
	}
	c := n.GetColumnRef()
	if c == nil {
		return "", false
	}
	switch len(c.Fields) {
	case 1:
		s := c.Fields[0].GetString_()
		if s == nil || e.params[s.Sval] {
			return "", false
		}
		return s.Sval, true
	case 2:
		if c.Fields[0].GetString_().GetSval() != t.name {
			return "", false
		}
		s := c.Fields[1].GetString_()
		if s == nil {
			return "", false
		}
		return s.Sval, true
	}
	return "", false
}

// isValue reports whether n is one value for every row: a constant or a
// parameter, possibly cast.
func isValue(n *pg_query.Node) bool {
	if n == nil {
		return false
	}
	switch x := n.Node.(type) {
	case *pg_query.Node_AConst:
		return !x.AConst.Isnull
	case *pg_query.Node_ParamRef:
		return true
	case *pg_query.Node_TypeCast:
		return isValue(x.TypeCast.Arg)
	}
	return false
}

func isConstant(n *pg_query.Node) bool {
	if n == nil {
		return false
	}
	switch x := n.Node.(type) {
	case *pg_query.Node_AConst:
		return !x.AConst.Isnull
	case *pg_query.Node_TypeCast:
		return isConstant(x.TypeCast.Arg)
	}
	return false
}

// runsCodeOnWrite adds a Possible opaque effect when writing obj (and what
// writing it reaches, as f follows) runs code of the database's own, or
// when pgmoat cannot tell because it does not know the relation.
func (e *env) runsCodeOnWrite(obj Object, f follows, only bool, verb, where string, out *[]Effect) {
	scope := codeOnInsert
	switch verb {
	case "DELETE FROM":
		scope = codeOnDelete | codeOnUpdate // ON DELETE SET NULL rewrites what it reaches
	case "UPDATE":
		scope = codeOnUpdate
	case "MERGE INTO":
		scope = codeOnInsert | codeOnUpdate | codeOnDelete
	case "INSERT INTO":
		scope = codeOnInsert | codeOnUpdate // ON CONFLICT DO UPDATE
	case "TRUNCATE":
		scope = codeOnTruncate
	}
	if e.cat == nil {
		return
	}
	rs, _, _ := e.reach(obj, f, only)
	// A foreign table's rows live on another server (postgres_fdw to a
	// loopback is the protected table itself): the write happens in a
	// transaction of that server's, which no guard here can see.
	for _, r := range rs {
		for _, q := range e.relsOf(r.obj) {
			if e.cat.relkinds[q] == 'f' {
				e.add(out, OpOpaque, everything(), verb+" "+qualified(q.schema, q.name)+": a foreign table, whose rows live on another server, outside the transaction pgmoat can verify", where)
				return
			}
		}
	}
	if e.hasRelDoors() {
		for _, r := range rs {
			for _, q := range e.relsOf(r.obj) {
				e.firesDoors(q, scope, verb, where, out)
			}
		}
	}
	for _, r := range rs {
		for _, q := range e.relsOf(r.obj) {
			if why := e.cat.runsCode(q, scope); why != "" && !e.codeHarmless(q, scope, why) {
				e.possibly(func() {
					e.add(out, OpOpaque, everything(), verb+" "+qualified(q.schema, q.name)+" runs code pgmoat does not follow ("+why+")", where)
				})
				return
			}
		}
	}
}

// readsRunCode adds a Possible opaque effect when reading one of the
// relations a statement names runs code of the database's own (a view
// calling its functions, a row-level security policy).
func (e *env) readsRunCode(n *pg_query.Node, where string, out *[]Effect) {
	if e.cat == nil || len(e.cat.code) == 0 {
		return
	}
	for _, rv := range rangeVars(n) {
		for _, q := range e.relsOf(e.resolveRel(rv)) {
			if why := e.cat.runsCode(q, codeOnRead); why != "" && !e.codeHarmless(q, codeOnRead, why) {
				e.possibly(func() {
					e.add(out, OpOpaque, everything(), "reading "+qualified(q.schema, q.name)+" runs code pgmoat does not follow ("+why+")", where)
				})
				return
			}
		}
	}
}

// userFunction analyses a call of a function of the database's own: the
// body of an SQL or PL/pgSQL function as CREATE FUNCTION's is analysed;
// a function that escapes the transaction counts as opaque; code pgmoat
// cannot read may do anything within the transaction.
func (e *env) userFunction(names []string, where string, out *[]Effect) {
	name := names[len(names)-1]
	schema := ""
	if len(names) > 1 {
		schema = names[len(names)-2]
	}
	if schema == "pg_catalog" {
		return
	}
	fs := e.cat.functions(schema, name)
	if len(fs) == 0 {
		if _, local := e.localFuncs[name]; !local && len(e.cat.builtins) > 0 && !e.cat.builtins[name] {
			e.ranCode(staleCode)
			e.possibly(func() {
				e.add(out, OpOpaque, everything(), "calls "+strings.Join(names, ".")+"(), a function pgmoat does not know (made since its catalog snapshot)", where)
			})
		}
		return
	}
	e.callFunctions(fs, where, out)
}

// callFunctions analyses calls of functions of the database's own (see
// userFunction). An aggregate runs its support functions.
func (e *env) callFunctions(fs []*Function, where string, out *[]Effect) {
	for _, f := range fs {
		if e.probe != nil {
			e.probe.calls = append(e.probe.calls, f)
			continue
		}
		w := joinWhere(where, "function "+qualified(f.Schema, f.Name))
		why := e.escapeWhy(f)
		switch {
		case why != "":
			e.add(out, OpOpaque, everything(), why, where)
		case f.Kind == 'a':
			if !e.calling[f] {
				if e.calling == nil {
					e.calling = map[*Function]bool{}
				}
				e.calling[f] = true
				e.callFunctions(e.cat.usesOf(f), w, out)
				delete(e.calling, f)
			}
		case f.Lang == "sql" || f.Lang == "plpgsql":
			stmt, text := f.createStmt()
			if stmt == nil {
				e.ranCode(staleCode)
				e.possibly(func() {
					e.add(out, OpOpaque, everything(), qualified(f.Schema, f.Name)+"() has a body pgmoat cannot read", w)
				})
				continue
			}
			if e.calling[f] {
				continue // recursion: the body is being analysed already
			}
			if e.calling == nil {
				e.calling = map[*Function]bool{}
			}
			e.calling[f] = true
			e.callFunction(stmt, text, w, out)
			delete(e.calling, f)
		default:
			e.ranCode(staleCode)
			e.possibly(func() {
				e.add(out, OpOpaque, everything(), qualified(f.Schema, f.Name)+"() is written in "+f.Lang+", which pgmoat cannot read", w)
			})
		}
	}
}

// callFunction adds the effects of running an existing function's body.
// What it creates stays the body's (deferred), its own search_path
// applies, and its DML counts as code that may loop.
func (e *env) callFunction(f *pg_query.CreateFunctionStmt, text, where string, out *[]Effect) {
	var body []Effect
	saved := e.localFuncs
	sum := e.createFunction(f, text, where, &body)
	e.localFuncs = saved
	*out = append(*out, body...)
	e.ranCode(sum.stale)
}

// holdableCursor reports whether n is DECLARE ... CURSOR WITH HOLD.
func holdableCursor(n *pg_query.Node) bool {
	d := n.GetDeclareCursorStmt()
	return d != nil && d.Options&cursorOptHold != 0
}

// cursorOptHold is CURSOR_OPT_HOLD of PostgreSQL's parsenodes.h.
const cursorOptHold = 0x0020

// unguardable reports whether a statement cannot run inside a transaction
// block, so that pgmoat cannot run it under guard: its Possible effects
// are judged as certain.
func unguardable(n *pg_query.Node) bool {
	if n == nil {
		return false
	}
	switch x := n.Node.(type) {
	case *pg_query.Node_VacuumStmt, *pg_query.Node_CreatedbStmt, *pg_query.Node_DropdbStmt,
		*pg_query.Node_AlterSystemStmt, *pg_query.Node_CreateTableSpaceStmt, *pg_query.Node_DropTableSpaceStmt,
		*pg_query.Node_CreateSubscriptionStmt, *pg_query.Node_DropSubscriptionStmt:
		return true
	case *pg_query.Node_IndexStmt:
		return x.IndexStmt.Concurrent
	case *pg_query.Node_DropStmt:
		return x.DropStmt.Concurrent
	case *pg_query.Node_ReindexStmt:
		for _, p := range x.ReindexStmt.Params {
			if d := p.GetDefElem(); d != nil && d.Defname == "concurrently" && defElemBool(d) {
				return true
			}
		}
		return x.ReindexStmt.Kind == pg_query.ReindexObjectType_REINDEX_OBJECT_SYSTEM ||
			x.ReindexStmt.Kind == pg_query.ReindexObjectType_REINDEX_OBJECT_DATABASE ||
			x.ReindexStmt.Kind == pg_query.ReindexObjectType_REINDEX_OBJECT_SCHEMA
	case *pg_query.Node_ClusterStmt:
		return x.ClusterStmt.Relation == nil
	case *pg_query.Node_DeclareCursorStmt:
		// A cursor WITH HOLD runs its query at COMMIT, to keep its rows:
		// after pgmoat could check anything.
		return holdableCursor(n)
	case *pg_query.Node_CopyStmt:
		// The proxy cannot hold the statement's reply back while the
		// client sends it the data.
		return copyFromClient(n)
	case *pg_query.Node_AlterTableStmt:
		for _, c := range x.AlterTableStmt.Cmds {
			if cmd := c.GetAlterTableCmd(); cmd != nil && cmd.Subtype == pg_query.AlterTableType_AT_DetachPartition {
				if pc := cmd.Def.GetPartitionCmd(); pc != nil && pc.Concurrent {
					return true
				}
			}
		}
	}
	return false
}

// settle turns the effects of a statement into what the engine reports.
// When the engine verifies and the statement can be guarded, the effects
// stay as they are. Otherwise (pgmoat check, or a statement that cannot
// run in a transaction block) the statement is judged statically, as
// pgmoat always judged it: an effect of code pgmoat cannot follow
// (DoubtCode) counts as certain, and one that depends on which rows a
// filter matches (DoubtRows) is left out.
//
// A cursor WITH HOLD is the exception: the server runs its query to the
// end at COMMIT, a loop over every row it reads, so when the engine
// verifies, what its query may do to rows counts as certain too.
func settle(effects []Effect, verify, guardable, holdable bool) []Effect {
	if verify && guardable {
		return effects
	}
	out := effects[:0:0]
	for _, ef := range effects {
		switch ef.Doubt {
		case DoubtRows, DoubtDDL:
			if verify && holdable {
				ef.Doubt = DoubtNone
				break
			}
			continue
		case DoubtCode:
			ef.Doubt = DoubtNone
		}
		out = append(out, ef)
	}
	return out
}

// insertStmt judges INSERT: harmless unless the table runs code of its own
// or ON CONFLICT DO UPDATE may rewrite rows that were there.
func (e *env) insertStmt(ins *pg_query.InsertStmt, text, where string, out *[]Effect) {
	e.with(ins.WithClause, text, where, out)
	if ins.SelectStmt != nil {
		e.stmt(stmtText{ins.SelectStmt, text}, where, out)
	}
	if ins.Relation == nil {
		return
	}
	obj := e.resolveRel(ins.Relation)
	if e.catalogDML(obj, "INSERT INTO", where, out) {
		return
	}
	e.runsCodeOnWrite(obj, followUpdate, false, "INSERT INTO", where, out)
	oc := ins.OnConflictClause
	if oc == nil || oc.Action != pg_query.OnConflictAction_ONCONFLICT_UPDATE {
		return
	}
	// Reading every row of the table itself, each row conflicts with
	// itself: every row is rewritten.
	if e.selfCopies(ins, dmlTarget(ins.Relation, obj, ins.WithClause)) {
		e.reachEffects(OpUpdateAll, obj, followUpdate, false, e.strict, "INSERT INTO "+obj.String()+" ... SELECT every row of it ... ON CONFLICT DO UPDATE (every row conflicts with itself)", where, out)
		return
	}
	// The rows it may update are at most the rows it inserts: a VALUES
	// list of a few rows at the top of a statement is targeted.
	if sel := ins.SelectStmt.GetSelectStmt(); sel != nil && e.code == 0 && len(sel.ValuesLists) > 0 && len(sel.ValuesLists) <= maxBoundedRows {
		if rs, unknown, remote := e.reach(obj, followUpdate, false); len(rs) == 1 && unknown == nil && !remote {
			return
		}
	}
	e.rowsDoubt(func() {
		e.reachEffects(OpUpdateAll, obj, followUpdate, false, e.strict, "INSERT INTO "+obj.String()+" ... ON CONFLICT DO UPDATE (which rows it rewrites, only running it tells)", where, out)
	})
}

func (c *Catalog) eventTriggersOrNil() []string {
	if c == nil {
		return nil
	}
	return c.eventTriggers
}

// isDDL reports whether a statement is one that event triggers fire on:
// anything but queries, DML and session utility commands.
func isDDL(n *pg_query.Node) bool {
	if n == nil {
		return false
	}
	switch n.Node.(type) {
	case *pg_query.Node_SelectStmt, *pg_query.Node_InsertStmt, *pg_query.Node_UpdateStmt, *pg_query.Node_DeleteStmt,
		*pg_query.Node_MergeStmt, *pg_query.Node_VariableSetStmt, *pg_query.Node_VariableShowStmt,
		*pg_query.Node_TransactionStmt, *pg_query.Node_ExplainStmt, *pg_query.Node_PrepareStmt,
		*pg_query.Node_ExecuteStmt, *pg_query.Node_DeallocateStmt, *pg_query.Node_DiscardStmt,
		*pg_query.Node_CopyStmt, *pg_query.Node_DoStmt, *pg_query.Node_CallStmt, *pg_query.Node_ListenStmt,
		*pg_query.Node_NotifyStmt, *pg_query.Node_UnlistenStmt, *pg_query.Node_LockStmt, *pg_query.Node_FetchStmt,
		*pg_query.Node_DeclareCursorStmt, *pg_query.Node_ClosePortalStmt, *pg_query.Node_VacuumStmt,
		*pg_query.Node_CheckPointStmt, *pg_query.Node_LoadStmt, *pg_query.Node_ConstraintsSetStmt:
		return false
	}
	return true
}

// alterCompositeType judges ALTER TYPE ... ADD, DROP or ALTER ATTRIBUTE
// of a composite type: dropping or retyping an attribute changes every
// typed table of the type and every column of that type (with CASCADE,
// at once), which only running it tells; adding one adds a column.
func (e *env) alterCompositeType(a *pg_query.AlterTableStmt, where string, out *[]Effect) {
	for _, c := range a.Cmds {
		cmd := c.GetAlterTableCmd()
		if cmd == nil {
			continue
		}
		var what string
		switch cmd.Subtype {
		case pg_query.AlterTableType_AT_DropColumn:
			what = "DROP ATTRIBUTE"
		case pg_query.AlterTableType_AT_AlterColumnType:
			what = "ALTER ATTRIBUTE TYPE"
		default:
			continue
		}
		name := ""
		if a.Relation != nil {
			name = a.Relation.Relname
		}
		e.possibly(func() {
			e.add(out, OpAlterDestructive, everything(), "ALTER TYPE "+name+" "+what+" "+QuoteIdent(cmd.Name)+" changes typed tables and composite columns using it", where)
		})
	}
}

// copyFromClient reports whether a statement is COPY ... FROM STDIN.
func copyFromClient(n *pg_query.Node) bool {
	c := n.GetCopyStmt()
	return c != nil && c.IsFrom && c.Filename == "" && !c.IsProgram
}

// additiveDDL reports DDL that only makes something new and cannot change
// a relation that exists: it needs no verifying. (CREATE TABLE ... OF,
// PARTITION OF and INHERITS attach to what exists, and CREATE OR REPLACE
// replaces; those are verified.)
func (e *env) additiveDDL(n *pg_query.Node) bool {
	switch x := n.Node.(type) {
	case *pg_query.Node_CreateSchemaStmt, *pg_query.Node_CreateSeqStmt, *pg_query.Node_CreateEnumStmt,
		*pg_query.Node_CompositeTypeStmt, *pg_query.Node_CreateDomainStmt, *pg_query.Node_CommentStmt:
		return true
	case *pg_query.Node_CreateStmt:
		c := x.CreateStmt
		if len(c.InhRelations) > 0 || c.Partbound != nil || c.OfTypename != nil {
			return false
		}
		// A new table a protect pattern names is verified too: what the
		// guard sees it create, the session may then shape as it likes
		// (a restore adds its keys and triggers afterwards).
		if c.Relation != nil {
			if q, ok := exactRel(e.createdObject(c.Relation)); !ok || e.pol.protectedBy(q.schema, q.name) != "" {
				return false
			}
		}
		return true
	case *pg_query.Node_ViewStmt:
		return !x.ViewStmt.Replace
	case *pg_query.Node_CreateFunctionStmt:
		return !x.CreateFunctionStmt.Replace
	}
	return false
}

// fetchStmt judges FETCH and MOVE: they run the cursor's query, whose
// functions run then, not at DECLARE. A cursor pgmoat does not know (made
// by code it did not follow) may run anything.
func (e *env) fetchStmt(f *pg_query.FetchStmt, where string, out *[]Effect) {
	name := f.Portalname
	text, ok := e.cursors[name]
	if !ok && e.lookupCursor != nil {
		text, ok = e.lookupCursor(name)
		e.stateSensitive = true
	}
	if !ok {
		if e.cat != nil && e.cat.hasFunctions() {
			e.possibly(func() {
				e.add(out, OpOpaque, everything(), "FETCH from cursor "+QuoteIdent(name)+", which pgmoat did not see declared", where)
			})
		}
		return
	}
	e.analyzeBody(text, joinWhere(where, "FETCH from cursor "+QuoteIdent(name)), out, func(n *pg_query.Node) *pg_query.Node {
		if d := n.GetDeclareCursorStmt(); d != nil {
			return d.Query
		}
		return n
	})
}

// deferredTriggers adds the effect of a statement that runs the deferred
// constraint triggers of the database's own (COMMIT, SET CONSTRAINTS):
// code pgmoat does not follow, which the proxy runs under guard before
// the COMMIT (SET CONSTRAINTS ALL IMMEDIATE).
func (e *env) deferredTriggers(what, where string, out *[]Effect) {
	if e.cat == nil || len(e.cat.deferred) == 0 {
		return
	}
	e.doubting(DoubtDDL, func() {
		e.add(out, OpOpaque, everything(), what+" runs deferred constraint triggers pgmoat does not follow ("+strings.Join(e.cat.deferred, ", ")+")", where)
	})
}
