package rules

import (
	"fmt"
	"strings"
	"time"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/proto"
)

// maxBodyDepth bounds how deep analysis follows code inside code (a DO
// block that EXECUTEs a string that creates a function ...); deeper is
// opaque.
const maxBodyDepth = 6

// env is the analysis of one message (or script): the session settings as
// they evolve statement by statement, and what earlier statements of the
// message created.
type env struct {
	pol   *Policy
	cat   *Catalog
	user  string // session user, for $user
	tx    txState
	depth int

	// lookupPrepared finds a prepared statement of the session; nil when
	// there is none to look in.
	lookupPrepared func(name string) (text string, ok bool)
	// lookupCursor finds a cursor the session declared.
	lookupCursor func(name string) (text string, ok bool)
	cursors      map[string]string // cursors this message declared

	// What earlier statements of this message created.
	prepared   map[string]string      // name → PREPARE statement text
	localFuncs map[string]funcSummary // function name → what its body does

	// ov is the session's overlay with the relation changes of the
	// message's earlier statements applied; shared, what the database's
	// sessions made through pgmoat (Engine.Learn).
	ov, shared *overlay
	// strict: an operation that may reach every row of a relation pgmoat
	// does not know counts as reaching every protected table (the proxy,
	// with a catalog snapshot).
	strict bool

	// params are names that stand for values pgmoat cannot see
	// (PL/pgSQL variables, SQL function parameters) in a body.
	params map[string]bool

	// Sensitivity of the result, for the caches.
	literalSensitive bool // a literal's value decided something
	stateSensitive   bool // a session prepared statement decided something

	// seen marks DML nodes already analysed by the typed walk, so the
	// generic walk does not count them twice.
	seen map[proto.Message]bool

	// settingNames are the settings a set_config call whose name is a
	// column can change, when its SELECT pins the column (bindSettingNames).
	settingNames map[*pg_query.FuncCall][]string

	changes []StateChange

	// doubt marks the effects added now as only possible (see possibly).
	doubt Doubt
	// code counts the code bodies (functions, DO blocks) being analysed:
	// there a statement may run any number of times.
	code int
	// calling holds the functions whose bodies are being analysed for a
	// call, against recursion.
	calling map[*Function]bool
	// stale says the statement being analysed may change settings where
	// pgmoat cannot see (see stale.go).
	stale staleness

	// fresh are the tables, sequences and schemas (name "") made earlier
	// in this message or script by CREATE without IF NOT EXISTS,
	// madeIndexes its indexes: nothing relies on their contract yet (see
	// newlyMade).
	fresh, madeIndexes map[qname]bool
	// probe, when set, collects the functions a body calls instead of
	// following them (see computeEscapes).
	probe *escapeProbe
	// now is the engine's clock; clockSensitive says it decided something
	// (VALID UNTIL), so the result must not be cached.
	now            func() time.Time
	clockSensitive bool
}

func (e *env) clock() time.Time {
	if e.now != nil {
		return e.now()
	}
	return time.Now()
}

type funcSummary struct {
	effects []Effect
	stale   staleness // calling it may change settings unseen
}

func newEnv(pol *Policy, cat *Catalog, user string, tx txState) *env {
	return &env{pol: pol, cat: cat, user: user, tx: tx}
}

// stmtText is a statement and the text it came from (needed for PL/pgSQL
// bodies and for telling identifiers from literals in SET).
type stmtText struct {
	node *pg_query.Node
	text string // the statement's own text
}

// analyzeStmt returns the effects of one parsed statement. where names the
// enclosing construct for nested statements ("" at the top).
func (e *env) analyzeStmt(st stmtText, where string) []Effect {
	var out []Effect
	e.stmt(st, where, &out)
	if interesting(st.text) || e.cat.hasFunctions() || len(e.localFuncs) > 0 || e.mayFireDoors() {
		e.genericWalk(st, where, &out)
	}
	e.readsRunCode(st.node, where, &out)
	e.readsFireDoors(st.node, where, &out)
	if e.depth == 0 && e.cat != nil && isDDL(st.node) && !e.additiveDDL(st.node) {
		e.doubting(DoubtDDL, func() {
			e.add(&out, OpContract, everything(), "DDL whose reach through dependencies only the database knows", where)
		})
	}
	if len(e.cat.eventTriggersOrNil()) > 0 && isDDL(st.node) {
		e.possibly(func() {
			e.add(&out, OpOpaque, everything(), "event triggers run code pgmoat does not follow on DDL ("+strings.Join(e.cat.eventTriggers, ", ")+")", where)
		})
	}
	if e.depth == 0 {
		e.settleStale()
	}
	return out
}

func (e *env) add(out *[]Effect, op Operation, obj Object, what, where string) {
	if obj.Kind == KindTable && obj.Under == nil {
		obj.Under = e.protectedAncestor(obj)
	}
	*out = append(*out, Effect{Op: op, Object: obj, What: what, Where: where, Doubt: e.doubt})
}

func everything() Object { return Object{Kind: KindEverything} }

func (e *env) stmt(st stmtText, where string, out *[]Effect) {
	n := st.node
	if n == nil {
		return
	}
	switch s := n.Node.(type) {
	case *pg_query.Node_SelectStmt:
		e.selectStmt(s.SelectStmt, st.text, where, out)
	case *pg_query.Node_InsertStmt:
		e.insertStmt(s.InsertStmt, st.text, where, out)
	case *pg_query.Node_DeleteStmt:
		e.deleteStmt(s.DeleteStmt, st.text, where, out)
	case *pg_query.Node_UpdateStmt:
		e.updateStmt(s.UpdateStmt, st.text, where, out)
	case *pg_query.Node_MergeStmt:
		e.mergeStmt(s.MergeStmt, st.text, where, out)
	case *pg_query.Node_DropStmt:
		e.dropStmt(s.DropStmt, where, out)
	case *pg_query.Node_TruncateStmt:
		e.truncateStmt(s.TruncateStmt, where, out)
	case *pg_query.Node_AlterTableStmt:
		e.alterTableStmt(s.AlterTableStmt, where, out)
	case *pg_query.Node_RenameStmt:
		e.renameStmt(s.RenameStmt, where, out)
	case *pg_query.Node_AlterObjectSchemaStmt:
		a := s.AlterObjectSchemaStmt
		if a.Relation != nil {
			obj := e.resolveRel(a.Relation)
			what := fmt.Sprintf("ALTER %s %s SET SCHEMA %s", objTypeWord(a.ObjectType), obj, QuoteIdent(a.Newschema))
			e.add(out, OpAlterDestructive, obj, what, where)
			e.unknownTarget(OpAlterDestructive, obj, unqualifiedRel(a.Relation), isRelationType(a.ObjectType), what, where, out)
			if isRelationType(a.ObjectType) {
				e.moved(obj, a.Newschema, obj.Name)
			}
		}
	case *pg_query.Node_AlterEnumStmt:
		if a := s.AlterEnumStmt; a.OldVal != "" {
			e.possibly(func() {
				e.add(out, OpAlterDestructive, everything(), "ALTER TYPE "+strings.Join(nodeStrings(a.TypeName), ".")+" RENAME VALUE "+QuoteIdent(a.OldVal)+" changes what the rows of every table using it mean", where)
			})
		}
	case *pg_query.Node_AlterDomainStmt:
		a := s.AlterDomainStmt
		e.possibly(func() {
			e.add(out, OpContract, everything(), "ALTER DOMAIN "+strings.Join(nodeStrings(a.TypeName), ".")+" changes the columns of every table using it", where)
		})
	case *pg_query.Node_DropOwnedStmt:
		e.add(out, OpDrop, everything(), "DROP OWNED BY "+roleList(s.DropOwnedStmt.Roles)+" (may own protected tables)", where)
	case *pg_query.Node_DropdbStmt:
		e.add(out, OpDrop, Object{Kind: KindDatabase, Name: s.DropdbStmt.Dbname}, "DROP DATABASE "+QuoteIdent(s.DropdbStmt.Dbname), where)
	case *pg_query.Node_VariableSetStmt:
		e.setStmt(s.VariableSetStmt, st.text, where, out, true)
	case *pg_query.Node_AlterRoleSetStmt:
		e.setStmt(s.AlterRoleSetStmt.Setstmt, st.text, where, out, false)
	case *pg_query.Node_AlterDatabaseSetStmt:
		e.setStmt(s.AlterDatabaseSetStmt.Setstmt, st.text, where, out, false)
	case *pg_query.Node_AlterSystemStmt:
		e.setStmt(s.AlterSystemStmt.Setstmt, st.text, where, out, false)
	case *pg_query.Node_ExplainStmt:
		if e.explainAnalyze(s.ExplainStmt.Options) {
			e.stmt(stmtText{s.ExplainStmt.Query, st.text}, joinWhere(where, "EXPLAIN ANALYZE"), out)
		}
	case *pg_query.Node_PrepareStmt:
		p := s.PrepareStmt
		e.deferred(func() {
			e.stmt(stmtText{p.Query, st.text}, joinWhere(where, "PREPARE "+QuoteIdent(p.Name)), out)
		})
		if e.depth == 0 {
			if e.prepared == nil {
				e.prepared = map[string]string{}
			}
			e.prepared[p.Name] = st.text
			e.change(StateChange{Kind: ChangePrepare, Name: p.Name, Text: st.text})
		}
	case *pg_query.Node_ExecuteStmt:
		e.executeStmt(s.ExecuteStmt.Name, where, out)
	case *pg_query.Node_DeallocateStmt:
		if e.depth == 0 {
			name := s.DeallocateStmt.Name
			if s.DeallocateStmt.Isall {
				name = ""
				e.prepared = nil
			} else {
				delete(e.prepared, name)
			}
			e.change(StateChange{Kind: ChangeDeallocate, Name: name})
		}
	case *pg_query.Node_DiscardStmt:
		if e.depth == 0 {
			switch s.DiscardStmt.Target {
			case pg_query.DiscardMode_DISCARD_ALL:
				e.prepared = nil
				e.change(StateChange{Kind: ChangeDiscardAll})
			case pg_query.DiscardMode_DISCARD_TEMP:
				e.change(StateChange{Kind: ChangeDiscardTemp})
			}
		}
	case *pg_query.Node_TransactionStmt:
		if e.depth == 0 {
			e.transactionStmt(s.TransactionStmt)
		}
		switch s.TransactionStmt.Kind {
		case pg_query.TransactionStmtKind_TRANS_STMT_COMMIT, pg_query.TransactionStmtKind_TRANS_STMT_PREPARE:
			e.deferredTriggers("COMMIT", where, out)
		}
	case *pg_query.Node_ConstraintsSetStmt:
		e.deferredTriggers("SET CONSTRAINTS", where, out)
	case *pg_query.Node_CopyStmt:
		e.copyStmt(s.CopyStmt, st.text, where, out)
	case *pg_query.Node_CreateTableAsStmt:
		c := s.CreateTableAsStmt
		e.stmt(stmtText{c.Query, st.text}, joinWhere(where, "CREATE TABLE AS"), out)
		if c.Into != nil && c.Into.Rel != nil {
			if c.Objtype == pg_query.ObjectType_OBJECT_MATVIEW {
				e.createView(c.Into.Rel, c.Query)
			} else {
				e.created(e.createdObject(c.Into.Rel))
			}
		}
	case *pg_query.Node_CreateStmt:
		e.createTable(s.CreateStmt)
	case *pg_query.Node_CreateForeignTableStmt:
		e.linked(e.createTable(s.CreateForeignTableStmt.BaseStmt), EdgeRemote)
	case *pg_query.Node_ViewStmt:
		e.stmt(stmtText{s.ViewStmt.Query, st.text}, joinWhere(where, "CREATE VIEW"), out)
		e.createView(s.ViewStmt.View, s.ViewStmt.Query)
	case *pg_query.Node_RuleStmt:
		r := s.RuleStmt
		w := joinWhere(where, "rule "+QuoteIdent(r.Rulename)+" on "+e.resolveRel(r.Relation).String())
		e.deferred(func() {
			for _, a := range r.Actions {
				e.stmt(stmtText{a, st.text}, w, out)
			}
		})
		e.createRule(r)
	case *pg_query.Node_CreateTrigStmt:
		e.triggerFunc(s.CreateTrigStmt.Funcname, "trigger "+QuoteIdent(s.CreateTrigStmt.Trigname), where, out)
	case *pg_query.Node_CreateEventTrigStmt:
		e.triggerFunc(s.CreateEventTrigStmt.Funcname, "event trigger "+QuoteIdent(s.CreateEventTrigStmt.Trigname), where, out)
	case *pg_query.Node_CreateFunctionStmt:
		e.createFunction(s.CreateFunctionStmt, st.text, where, out)
	case *pg_query.Node_DoStmt:
		e.doStmt(s.DoStmt, where, out)
	case *pg_query.Node_DeclareCursorStmt:
		e.stmt(stmtText{s.DeclareCursorStmt.Query, st.text}, where, out)
		if e.depth == 0 {
			if e.cursors == nil {
				e.cursors = map[string]string{}
			}
			e.cursors[s.DeclareCursorStmt.Portalname] = st.text
			e.change(StateChange{Kind: ChangeDeclareCursor, Name: s.DeclareCursorStmt.Portalname, Text: st.text})
		}
	case *pg_query.Node_FetchStmt:
		e.fetchStmt(s.FetchStmt, where, out)
	case *pg_query.Node_ClosePortalStmt:
		if e.depth == 0 {
			delete(e.cursors, s.ClosePortalStmt.Portalname)
			e.change(StateChange{Kind: ChangeCloseCursor, Name: s.ClosePortalStmt.Portalname})
		}
	}
	e.beyondRows(n, where, out)
}

func joinWhere(outer, inner string) string {
	if outer == "" {
		return inner
	}
	return inner + " in " + outer
}

func (e *env) change(c StateChange) {
	e.changes = append(e.changes, c)
	e.tx.apply(c)
	e.ov = e.ov.with(c)
}

// --- relations and names ---

func isCatalogSchema(s string) bool {
	return s == "pg_catalog" || s == "information_schema" || s == "pg_toast"
}

// nameObject resolves a qualified name given as a list of String nodes
// (DROP TABLE a.b, DROP TABLE b).
func (e *env) nameObject(n *pg_query.Node) Object {
	parts := stringList(n)
	switch len(parts) {
	case 0:
		return Object{Kind: KindTable}
	case 1:
		return e.resolveName(parts[0])
	default:
		return Object{Kind: KindTable, Schema: parts[len(parts)-2], Name: parts[len(parts)-1]}
	}
}

func stringList(n *pg_query.Node) []string {
	if n == nil {
		return nil
	}
	if l := n.GetList(); l != nil {
		out := make([]string, 0, len(l.Items))
		for _, it := range l.Items {
			out = append(out, it.GetString_().GetSval())
		}
		return out
	}
	if s := n.GetString_(); s != nil {
		return []string{s.Sval}
	}
	return nil
}

func nodeStrings(ns []*pg_query.Node) []string {
	out := make([]string, 0, len(ns))
	for _, n := range ns {
		out = append(out, n.GetString_().GetSval())
	}
	return out
}

func roleList(ns []*pg_query.Node) string {
	var names []string
	for _, n := range ns {
		if r := n.GetRoleSpec(); r != nil {
			switch r.Roletype {
			case pg_query.RoleSpecType_ROLESPEC_CSTRING:
				names = append(names, QuoteIdent(r.Rolename))
			case pg_query.RoleSpecType_ROLESPEC_CURRENT_USER:
				names = append(names, "CURRENT_USER")
			case pg_query.RoleSpecType_ROLESPEC_SESSION_USER:
				names = append(names, "SESSION_USER")
			default:
				names = append(names, "CURRENT_ROLE")
			}
		}
	}
	return strings.Join(names, ", ")
}

func objTypeWord(t pg_query.ObjectType) string {
	switch t {
	case pg_query.ObjectType_OBJECT_TABLE:
		return "TABLE"
	case pg_query.ObjectType_OBJECT_VIEW:
		return "VIEW"
	case pg_query.ObjectType_OBJECT_MATVIEW:
		return "MATERIALIZED VIEW"
	case pg_query.ObjectType_OBJECT_INDEX:
		return "INDEX"
	case pg_query.ObjectType_OBJECT_SEQUENCE:
		return "SEQUENCE"
	case pg_query.ObjectType_OBJECT_FOREIGN_TABLE:
		return "FOREIGN TABLE"
	case pg_query.ObjectType_OBJECT_SCHEMA:
		return "SCHEMA"
	case pg_query.ObjectType_OBJECT_TYPE:
		return "TYPE"
	case pg_query.ObjectType_OBJECT_DOMAIN:
		return "DOMAIN"
	case pg_query.ObjectType_OBJECT_EXTENSION:
		return "EXTENSION"
	case pg_query.ObjectType_OBJECT_COLUMN:
		return "COLUMN"
	case pg_query.ObjectType_OBJECT_DATABASE:
		return "DATABASE"
	}
	s := strings.TrimPrefix(t.String(), "OBJECT_")
	return strings.ReplaceAll(s, "_", " ")
}

// --- DML ---

func (e *env) with(w *pg_query.WithClause, text, where string, out *[]Effect) {
	if w == nil {
		return
	}
	for _, c := range w.Ctes {
		cte := c.GetCommonTableExpr()
		if cte == nil {
			continue
		}
		e.stmt(stmtText{cte.Ctequery, text}, joinWhere(where, "WITH "+QuoteIdent(cte.Ctename)), out)
	}
}

func (e *env) selectStmt(s *pg_query.SelectStmt, text, where string, out *[]Effect) {
	if s == nil {
		return
	}
	e.with(s.WithClause, text, where, out)
	e.selectStmt(s.Larg, text, where, out)
	e.selectStmt(s.Rarg, text, where, out)
	if s.IntoClause != nil && s.IntoClause.Rel != nil {
		e.created(e.createdObject(s.IntoClause.Rel))
	}
}

func (e *env) markSeen(m proto.Message) {
	if e.seen == nil {
		e.seen = map[proto.Message]bool{}
	}
	e.seen[m] = true
}

func (e *env) deleteStmt(d *pg_query.DeleteStmt, text, where string, out *[]Effect) {
	e.markSeen(d)
	e.with(d.WithClause, text, where, out)
	obj := e.resolveRel(d.Relation)
	if e.catalogDML(obj, "DELETE FROM", where, out) {
		return
	}
	e.runsCodeOnWrite(obj, followDelete, !d.Relation.Inh, "DELETE FROM", where, out)
	switch e.dmlFilter(d.WhereClause, dmlTarget(d.Relation, obj, d.WithClause), d.UsingClause) {
	case rowsSome:
		e.targetedDML(OpDeleteAll, obj, d.Relation, d.WhereClause, followDelete, "DELETE FROM "+obj.String()+" with a WHERE", where, out)
	case rowsAll:
		e.reachEffects(OpDeleteAll, obj, followDelete, !d.Relation.Inh, e.strict, "DELETE FROM "+obj.String()+" "+e.whereWord(d.WhereClause), where, out)
	}
}

func (e *env) updateStmt(u *pg_query.UpdateStmt, text, where string, out *[]Effect) {
	e.markSeen(u)
	e.with(u.WithClause, text, where, out)
	obj := e.resolveRel(u.Relation)
	if e.catalogDML(obj, "UPDATE", where, out) {
		return
	}
	e.runsCodeOnWrite(obj, followUpdate, !u.Relation.Inh, "UPDATE", where, out)
	switch e.dmlFilter(u.WhereClause, dmlTarget(u.Relation, obj, u.WithClause), u.FromClause) {
	case rowsSome:
		e.targetedDML(OpUpdateAll, obj, u.Relation, u.WhereClause, followUpdate, "UPDATE "+obj.String()+" with a WHERE", where, out)
	case rowsAll:
		e.reachEffects(OpUpdateAll, obj, followUpdate, !u.Relation.Inh, e.strict, "UPDATE "+obj.String()+" "+e.whereWord(u.WhereClause), where, out)
	}
}

func (e *env) whereWord(w *pg_query.Node) string {
	if w == nil {
		return "without a WHERE"
	}
	return "with a WHERE that may be true for every row"
}

func (e *env) mergeStmt(m *pg_query.MergeStmt, text, where string, out *[]Effect) {
	e.markSeen(m)
	e.with(m.WithClause, text, where, out)
	obj := e.resolveRel(m.Relation)
	if e.catalogDML(obj, "MERGE INTO", where, out) {
		return
	}
	t := dmlTarget(m.Relation, obj, m.WithClause)
	join := e.dmlFilter(m.JoinCondition, t, []*pg_query.Node{m.SourceRelation})
	for _, wn := range m.MergeWhenClauses {
		w := wn.GetMergeWhenClause()
		if w == nil {
			continue
		}
		var op Operation
		switch w.CommandType {
		case pg_query.CmdType_CMD_DELETE:
			op = OpDeleteAll
		case pg_query.CmdType_CMD_UPDATE:
			op = OpUpdateAll
		default:
			continue
		}
		cond := e.filter(w.Condition, t)
		all := cond == rowsAll
		switch w.MatchKind {
		case pg_query.MergeMatchKind_MERGE_WHEN_MATCHED:
			all = all && join == rowsAll
		case pg_query.MergeMatchKind_MERGE_WHEN_NOT_MATCHED_BY_SOURCE:
			// Every target row without a partner: all of them when the
			// source may be empty.
		default:
			continue
		}
		verb := "DELETE"
		if op == OpUpdateAll {
			verb = "UPDATE"
		}
		f := followDelete
		if op == OpUpdateAll {
			f = followUpdate
		}
		if !all {
			e.rowsDoubt(func() {
				e.reachEffects(op, obj, f, !m.Relation.Inh, e.strict, "MERGE INTO "+obj.String()+" ... THEN "+verb+" (which rows it matches, only running it tells)", where, out)
			})
			continue
		}
		e.reachEffects(op, obj, f, !m.Relation.Inh, e.strict, "MERGE INTO "+obj.String()+" ... THEN "+verb+" matching every row", where, out)
	}
	e.runsCodeOnWrite(obj, followUpdate, !m.Relation.Inh, "MERGE INTO", where, out)
}

// catalogDML reports (and records) DML on a system catalog: it edits
// PostgreSQL's metadata behind its back and can destroy anything.
func (e *env) catalogDML(obj Object, verb, where string, out *[]Effect) bool {
	if !isCatalogSchema(obj.Schema) {
		return false
	}
	e.add(out, OpOpaque, everything(), verb+" "+obj.String()+" edits the system catalog directly", where)
	return true
}

// --- DDL ---

func (e *env) dropStmt(d *pg_query.DropStmt, where string, out *[]Effect) {
	cascade := d.Behavior == pg_query.DropBehavior_DROP_CASCADE
	word := objTypeWord(d.RemoveType)
	suffix := ""
	if cascade {
		suffix = " CASCADE"
	}
	switch d.RemoveType {
	case pg_query.ObjectType_OBJECT_TABLE, pg_query.ObjectType_OBJECT_VIEW, pg_query.ObjectType_OBJECT_MATVIEW,
		pg_query.ObjectType_OBJECT_FOREIGN_TABLE, pg_query.ObjectType_OBJECT_SEQUENCE, pg_query.ObjectType_OBJECT_INDEX:
		for _, o := range d.Objects {
			obj := e.nameObject(o)
			what := "DROP " + word + " " + obj.String() + suffix
			table := d.RemoveType == pg_query.ObjectType_OBJECT_TABLE || d.RemoveType == pg_query.ObjectType_OBJECT_FOREIGN_TABLE
			if table {
				// Partitions go with their table, inheritance children
				// with CASCADE; a table pgmoat does not know may have
				// either.
				e.reachEffects(OpDrop, obj, followChildren, false, e.strict && cascade, what, where, out)
			} else {
				e.add(out, OpDrop, obj, what, where)
			}
			if !cascade {
				e.unknownTarget(OpDrop, obj, len(stringList(o)) == 1, table, what, where, out)
			}
			if isRelationType(d.RemoveType) {
				e.change(StateChange{Kind: ChangeDropRelation, Relation: obj})
			}
		}
	case pg_query.ObjectType_OBJECT_SCHEMA:
		for _, o := range d.Objects {
			name := o.GetString_().GetSval()
			what := "DROP SCHEMA " + QuoteIdent(name) + suffix
			switch {
			case !cascade:
				e.add(out, OpDrop, Object{Kind: KindSchema, Name: name}, what, where)
			case e.cat != nil:
				e.dropSchemaCascade(name, what, where, out)
			default:
				e.add(out, OpDrop, everything(), what, where)
			}
			e.change(StateChange{Kind: ChangeDropSchema, Name: name})
		}
	case pg_query.ObjectType_OBJECT_TRIGGER, pg_query.ObjectType_OBJECT_RULE, pg_query.ObjectType_OBJECT_POLICY,
		pg_query.ObjectType_OBJECT_PUBLICATION, pg_query.ObjectType_OBJECT_STATISTIC_EXT, pg_query.ObjectType_OBJECT_EVENT_TRIGGER:
	default:
		if cascade {
			// Columns and tables that depend on a type, domain, extension,
			// function, collation ... go with it.
			e.possibly(func() {
				e.add(out, OpDrop, everything(), "DROP "+word+" ... CASCADE (dependent columns and tables go too)", where)
			})
		}
	}
}

func (e *env) truncateStmt(t *pg_query.TruncateStmt, where string, out *[]Effect) {
	cascade := t.Behavior == pg_query.DropBehavior_DROP_CASCADE
	f, suffix := followTruncate, ""
	if cascade {
		f.fk, suffix = true, " CASCADE"
	}
	for _, r := range t.Relations {
		rv := r.GetRangeVar()
		if rv == nil {
			continue
		}
		obj := e.resolveRel(rv)
		e.runsCodeOnWrite(obj, f, !rv.Inh, "TRUNCATE", where, out)
		rs, unknown, _ := e.reach(obj, f, !rv.Inh)
		for i, rr := range rs {
			what := "TRUNCATE " + obj.String()
			if i > 0 {
				what += suffix + " reaches " + rr.obj.String() + " (" + rr.how + ")"
			}
			e.add(out, OpTruncate, rr.obj, what, where)
		}
		switch {
		case unknown == nil:
		case cascade:
			// Which tables reference one pgmoat does not know, it cannot
			// tell, with or without a catalog.
			e.add(out, OpTruncate, everything(), "TRUNCATE "+obj.String()+" CASCADE (tables referencing "+unknown.String()+" by foreign key)", where)
		case e.strict:
			e.add(out, OpTruncate, everything(), "TRUNCATE "+obj.String()+": "+notInSnapshot(obj, *unknown), where)
		}
	}
}

var destructiveSubtypes = map[pg_query.AlterTableType]string{
	pg_query.AlterTableType_AT_DropColumn:                "DROP COLUMN",
	pg_query.AlterTableType_AT_AlterColumnType:           "ALTER COLUMN TYPE",
	pg_query.AlterTableType_AT_DropConstraint:            "DROP CONSTRAINT",
	pg_query.AlterTableType_AT_SetUnLogged:               "SET UNLOGGED",
	pg_query.AlterTableType_AT_DetachPartition:           "DETACH PARTITION",
	pg_query.AlterTableType_AT_DetachPartitionFinalize:   "DETACH PARTITION FINALIZE",
	pg_query.AlterTableType_AT_DropInherit:               "NO INHERIT",
	pg_query.AlterTableType_AT_DropExpression:            "DROP EXPRESSION",
	pg_query.AlterTableType_AT_AlterColumnGenericOptions: "ALTER COLUMN OPTIONS",
}

// recurses lists the destructive ALTER TABLE subcommands that also change
// the table's children and partitions (unless ONLY).
var recurses = map[pg_query.AlterTableType]bool{
	pg_query.AlterTableType_AT_DropColumn:      true,
	pg_query.AlterTableType_AT_AlterColumnType: true,
	pg_query.AlterTableType_AT_DropConstraint:  true,
	pg_query.AlterTableType_AT_DropExpression:  true,
}

func (e *env) alterTableStmt(a *pg_query.AlterTableStmt, where string, out *[]Effect) {
	var obj Object
	resolved := false
	table := func() Object {
		if !resolved {
			obj, resolved = e.resolveRel(a.Relation), true
		}
		return obj
	}
	index := a.Objtype == pg_query.ObjectType_OBJECT_INDEX
	if a.Objtype == pg_query.ObjectType_OBJECT_TYPE {
		e.alterCompositeType(a, where, out)
		return
	}
	failsafe := false
	for _, c := range a.Cmds {
		cmd := c.GetAlterTableCmd()
		if cmd == nil {
			continue
		}
		e.alterTableContract(a, cmd, table, where, out)
		switch cmd.Subtype {
		case pg_query.AlterTableType_AT_AddInherit:
			if rv := cmd.Def.GetRangeVar(); rv != nil && !index {
				parent := e.resolveRel(rv)
				e.rewired(table(), parent, "ALTER TABLE "+table().String()+" INHERIT "+parent.String(), where, out)
				e.linked(parent, EdgeChild, table())
			}
			continue
		case pg_query.AlterTableType_AT_AttachPartition:
			if pc := cmd.Def.GetPartitionCmd(); pc != nil && pc.Name != nil && !index {
				part := e.resolveRel(pc.Name)
				e.rewired(part, table(), "ALTER TABLE "+table().String()+" ATTACH PARTITION "+part.String(), where, out)
				e.linked(table(), EdgeChild, part)
			}
			continue
		case pg_query.AlterTableType_AT_AddConstraint:
			if cmd.Def != nil {
				e.foreignKeys(table(), []*pg_query.Node{cmd.Def})
			}
			continue
		}
		what, ok := destructiveSubtypes[cmd.Subtype]
		if !ok {
			continue
		}
		if cmd.Name != "" {
			what += " " + QuoteIdent(cmd.Name)
		}
		what = "ALTER " + objTypeWord(a.Objtype) + " " + table().String() + " " + what
		if recurses[cmd.Subtype] && !index {
			e.reachEffects(OpAlterDestructive, obj, followChildren, !a.Relation.Inh, false, what, where, out)
		} else {
			e.add(out, OpAlterDestructive, obj, what, where)
		}
		if !failsafe {
			failsafe = true
			e.unknownTarget(OpAlterDestructive, obj, unqualifiedRel(a.Relation), !index, what, where, out)
		}
	}
}

// unqualifiedRel reports whether a statement names a relation without a
// schema (a temporary one's schema is pg_temp).
func unqualifiedRel(rv *pg_query.RangeVar) bool {
	return rv != nil && rv.Schemaname == "" && rv.Relpersistence != "t"
}

// rewired adds the effect of making child a new child or partition of
// parent: DELETE, UPDATE, TRUNCATE and DROP of parent would then reach
// child, so for a protected child it is a destructive change. Not when
// parent is protected itself: every way to parent already counts as
// touching a protected table.
func (e *env) rewired(child, parent Object, what, where string, out *[]Effect) {
	if q, ok := exactRel(parent); ok && e.protectedRel(q) {
		return
	}
	e.add(out, OpAlterDestructive, child, what+" (DELETE, UPDATE and TRUNCATE of "+parent.String()+" would reach "+child.String()+")", where)
}

func isRelationType(t pg_query.ObjectType) bool {
	switch t {
	case pg_query.ObjectType_OBJECT_TABLE, pg_query.ObjectType_OBJECT_VIEW, pg_query.ObjectType_OBJECT_MATVIEW, pg_query.ObjectType_OBJECT_FOREIGN_TABLE:
		return true
	}
	return false
}

func (e *env) renameStmt(r *pg_query.RenameStmt, where string, out *[]Effect) {
	switch r.RenameType {
	case pg_query.ObjectType_OBJECT_TABLE, pg_query.ObjectType_OBJECT_VIEW, pg_query.ObjectType_OBJECT_MATVIEW,
		pg_query.ObjectType_OBJECT_INDEX, pg_query.ObjectType_OBJECT_FOREIGN_TABLE, pg_query.ObjectType_OBJECT_SEQUENCE:
		obj := e.resolveRel(r.Relation)
		what := "ALTER " + objTypeWord(r.RenameType) + " " + obj.String() + " RENAME TO " + QuoteIdent(r.Newname)
		e.add(out, OpAlterDestructive, obj, what, where)
		e.unknownTarget(OpAlterDestructive, obj, unqualifiedRel(r.Relation), isRelationType(r.RenameType), what, where, out)
		if isRelationType(r.RenameType) {
			e.moved(obj, "", r.Newname)
		}
	case pg_query.ObjectType_OBJECT_ATTRIBUTE:
		e.possibly(func() {
			e.add(out, OpAlterDestructive, everything(), "ALTER TYPE "+r.Relation.GetRelname()+" RENAME ATTRIBUTE "+QuoteIdent(r.Subname)+" changes typed tables and composite columns using it", where)
		})
	case pg_query.ObjectType_OBJECT_COLUMN:
		obj := e.resolveRel(r.Relation)
		what := "ALTER " + objTypeWord(r.RelationType) + " " + obj.String() + " RENAME COLUMN " + QuoteIdent(r.Subname) + " TO " + QuoteIdent(r.Newname)
		e.add(out, OpAlterDestructive, obj, what, where)
		e.unknownTarget(OpAlterDestructive, obj, unqualifiedRel(r.Relation), true, what, where, out)
	case pg_query.ObjectType_OBJECT_SCHEMA:
		e.add(out, OpAlterDestructive, Object{Kind: KindSchema, Name: r.Subname}, "ALTER SCHEMA "+QuoteIdent(r.Subname)+" RENAME TO "+QuoteIdent(r.Newname), where)
	case pg_query.ObjectType_OBJECT_DATABASE:
		e.add(out, OpAlterDestructive, Object{Kind: KindDatabase, Name: r.Subname}, "ALTER DATABASE "+QuoteIdent(r.Subname)+" RENAME TO "+QuoteIdent(r.Newname), where)
	}
}

func (e *env) copyStmt(c *pg_query.CopyStmt, text, where string, out *[]Effect) {
	// An empty file name and STDIN/STDOUT look alike in the tree.
	e.literalSensitive = true
	switch {
	case c.IsProgram:
		e.add(out, OpOpaque, everything(), "COPY ... PROGRAM runs a shell command on the database server", where)
	case c.Filename != "":
		e.add(out, OpOpaque, everything(), "COPY to or from a file on the database server", where)
	}
	if c.Query != nil {
		e.stmt(stmtText{c.Query, text}, joinWhere(where, "COPY"), out)
	}
	if c.IsFrom && c.Relation != nil {
		e.runsCodeOnWrite(e.resolveRel(c.Relation), followUpdate, false, "COPY INTO", where, out)
	}
}

func (e *env) explainAnalyze(opts []*pg_query.Node) bool {
	on := false
	for _, o := range opts {
		d := o.GetDefElem()
		if d == nil || d.Defname != "analyze" {
			continue
		}
		if d.Arg != nil {
			e.literalSensitive = true
		}
		on = defElemBool(d)
	}
	return on
}

// defElemBool reads a boolean option as the server's defGetBoolean does;
// a value it would reject counts as true (the statement then fails anyway).
func defElemBool(d *pg_query.DefElem) bool {
	if d.Arg == nil {
		return true
	}
	switch a := d.Arg.Node.(type) {
	case *pg_query.Node_Integer:
		return a.Integer.Ival != 0
	case *pg_query.Node_Boolean:
		return a.Boolean.Boolval
	case *pg_query.Node_String_:
		if v, ok := parseBool(a.String_.Sval); ok {
			return v
		}
	case *pg_query.Node_AConst:
		if v, ok := constBool(a.AConst); ok {
			return v
		}
	}
	return true
}

func (e *env) executeStmt(name, where string, out *[]Effect) {
	text, ok := e.prepared[name]
	if !ok && e.lookupPrepared != nil {
		text, ok = e.lookupPrepared(name)
		e.stateSensitive = true
	}
	if !ok {
		e.possibly(func() {
			e.add(out, OpOpaque, everything(), "EXECUTE "+QuoteIdent(name)+": prepared statement unknown to pgmoat", where)
		})
		return
	}
	e.analyzeBody(text, joinWhere(where, "EXECUTE "+QuoteIdent(name)), out, func(n *pg_query.Node) *pg_query.Node {
		if p := n.GetPrepareStmt(); p != nil {
			return p.Query
		}
		return n
	})
}

func (e *env) transactionStmt(t *pg_query.TransactionStmt) {
	var k ChangeKind
	switch t.Kind {
	case pg_query.TransactionStmtKind_TRANS_STMT_BEGIN, pg_query.TransactionStmtKind_TRANS_STMT_START:
		k = ChangeBegin
	case pg_query.TransactionStmtKind_TRANS_STMT_COMMIT, pg_query.TransactionStmtKind_TRANS_STMT_PREPARE:
		k = ChangeCommit
	case pg_query.TransactionStmtKind_TRANS_STMT_ROLLBACK:
		k = ChangeRollback
	case pg_query.TransactionStmtKind_TRANS_STMT_SAVEPOINT:
		k = ChangeSavepoint
	case pg_query.TransactionStmtKind_TRANS_STMT_RELEASE:
		k = ChangeRelease
	case pg_query.TransactionStmtKind_TRANS_STMT_ROLLBACK_TO:
		k = ChangeRollbackTo
	default:
		return
	}
	ch := StateChange{Kind: k, Name: t.SavepointName}
	if t.Kind == pg_query.TransactionStmtKind_TRANS_STMT_PREPARE {
		ch.Text = "PREPARE TRANSACTION"
	}
	e.change(ch)
	if t.Chain && (k == ChangeCommit || k == ChangeRollback) {
		e.change(StateChange{Kind: ChangeBegin})
	}
}

// --- nested code ---

// analyzeBody parses SQL text found inside a statement (a function body,
// an EXECUTEd constant, a prepared statement) and adds its effects. pick
// chooses the node to analyse from each parsed statement.
func (e *env) analyzeBody(text, where string, out *[]Effect, pick func(*pg_query.Node) *pg_query.Node) {
	if e.depth >= maxBodyDepth {
		e.ranCode(staleCode)
		e.possibly(func() {
			e.add(out, OpOpaque, everything(), "code nested too deeply for pgmoat to follow", where)
		})
		return
	}
	if err := checkBounds(text, DefaultLimits); err != nil {
		e.ranCode(staleCode)
		e.possibly(func() {
			e.add(out, OpOpaque, everything(), "code pgmoat cannot parse: "+err.Error(), where)
		})
		return
	}
	tree, err := pg_query.Parse(text)
	if err != nil {
		e.ranCode(staleCode)
		e.possibly(func() {
			e.add(out, OpOpaque, everything(), "code pgmoat cannot parse: "+err.Error(), where)
		})
		return
	}
	e.depth++
	defer func() { e.depth-- }()
	for _, raw := range tree.Stmts {
		st := stmtText{node: raw.Stmt, text: stmtSlice(text, raw)}
		if pick != nil {
			st.node = pick(st.node)
		}
		*out = append(*out, e.analyzeStmt(st, where)...)
	}
}

// stmtSlice returns the text of one parsed statement.
func stmtSlice(text string, raw *pg_query.RawStmt) string {
	start := int(raw.StmtLocation)
	end := len(text)
	if raw.StmtLen > 0 {
		end = start + int(raw.StmtLen)
	}
	if start < 0 || start > end || end > len(text) {
		return text
	}
	return text[start:end]
}

func (e *env) triggerFunc(funcname []*pg_query.Node, what, where string, out *[]Effect) {
	names := nodeStrings(funcname)
	if len(names) == 0 {
		return
	}
	if f, ok := e.localFuncs[names[len(names)-1]]; ok {
		for _, ef := range f.effects {
			ef.Where = joinWhere(where, what)
			*out = append(*out, ef)
		}
	}
}

// --- generic walk for constructs that may hide anywhere ---

// interesting reports whether a statement's text may hold something only
// the generic walk finds: DML below the top (in a subquery or CTE the
// typed walk missed), or a call to a function that runs SQL or changes
// settings. It only decides whether to spend the walk; the decision is
// still made from the parse tree. Keywords cannot be escaped, so a
// statement without these words cannot hold nested DML; function names can
// be spelled with U&"..." escapes, so those always walk.
func interesting(text string) bool {
	dml := countWord(text, "delete") + countWord(text, "update") + countWord(text, "insert") + countWord(text, "merge")
	if dml > 1 || (dml == 1 && !startsWithDML(text)) {
		return true
	}
	for _, w := range [...]string{"dblink", "set_config", "pg_reload_conf", "query_to_xml", "ts_stat", "u&", "setval", "lo_import", "lo_export", "pg_file_", "heap_force"} {
		if indexFold(text, w) >= 0 {
			return true
		}
	}
	return false
}

func startsWithDML(text string) bool {
	i := 0
	for i < len(text) && (isSpace(text[i]) || text[i] == '(') {
		i++
	}
	for _, w := range [...]string{"delete", "update", "insert", "merge"} {
		if len(text)-i >= len(w) && strings.EqualFold(text[i:i+len(w)], w) {
			return true
		}
	}
	return false
}

// countWord counts ASCII case-insensitive occurrences of lower-case word
// in s that stand alone (not part of a longer identifier).
func countWord(s, word string) int {
	n := 0
	for off := 0; ; {
		i := indexFold(s[off:], word)
		if i < 0 {
			return n
		}
		i += off
		end := i + len(word)
		if (i == 0 || !isIdentCont(s[i-1])) && (end == len(s) || !isIdentCont(s[end])) {
			n++
		}
		off = i + 1
	}
}

func indexFold(s, word string) int {
	first := word[0]
	for i := 0; i+len(word) <= len(s); i++ {
		if s[i]|0x20 != first {
			continue
		}
		j := 1
		for ; j < len(word); j++ {
			d := s[i+j]
			if d >= 'A' && d <= 'Z' {
				d += 'a' - 'A'
			}
			if d != word[j] {
				break
			}
		}
		if j == len(word) {
			return i
		}
	}
	return -1
}

func (e *env) genericWalk(st stmtText, where string, out *[]Effect) {
	walk(st.node, func(m proto.Message) bool {
		switch x := m.(type) {
		case *pg_query.ExplainStmt:
			// Without ANALYZE nothing below runs.
			if e.explainAnalyze(x.Options) {
				e.genericWalk(stmtText{x.Query, st.text}, joinWhere(where, "EXPLAIN ANALYZE"), out)
			}
			return false
		case *pg_query.DeleteStmt:
			if !e.seen[x] {
				e.deleteStmt(x, st.text, joinWhere(where, "nested statement"), out)
			}
		case *pg_query.UpdateStmt:
			if !e.seen[x] {
				e.updateStmt(x, st.text, joinWhere(where, "nested statement"), out)
			}
		case *pg_query.MergeStmt:
			if !e.seen[x] {
				e.mergeStmt(x, st.text, joinWhere(where, "nested statement"), out)
			}
		case *pg_query.SelectStmt:
			e.bindSettingNames(x)
		case *pg_query.FuncCall:
			e.funcCall(x, st.text, where, out)
		case *pg_query.ColumnRef:
			// t.f may call f(t) (attribute notation), when t has no
			// column f: a name of the database's own functions counts.
			if n := len(x.Fields); n >= 2 && e.cat != nil {
				if f := x.Fields[n-1].GetString_(); f != nil && len(e.cat.functions("", f.Sval)) > 0 {
					e.userFunction([]string{f.Sval}, where, out)
				}
			}
		case *pg_query.A_Expr:
			e.namedDoor(nodeStrings(x.Name), true, where, out)
		case *pg_query.SubLink:
			e.namedDoor(nodeStrings(x.OperName), true, where, out)
		case *pg_query.SortBy:
			e.namedDoor(nodeStrings(x.UseOp), true, where, out)
		case *pg_query.TypeCast:
			if x.TypeName != nil {
				e.namedDoor(nodeStrings(x.TypeName.Names), false, where, out)
			}
		}
		return true
	})
}

// funcCall judges calls of functions that run SQL or change settings.
func (e *env) funcCall(f *pg_query.FuncCall, text, where string, out *[]Effect) {
	names := nodeStrings(f.Funcname)
	if len(names) == 0 {
		return
	}
	name := names[len(names)-1]
	switch name {
	case "dblink", "dblink_exec", "dblink_send_query", "dblink_open":
		e.add(out, OpOpaque, everything(), name+"() runs SQL pgmoat cannot see", where)
	case "query_to_xml", "query_to_xmlschema", "query_to_xml_and_xmlschema", "ts_stat":
		e.possibly(func() {
			e.add(out, OpOpaque, everything(), name+"() runs a query given as a string", where)
		})
	case "lo_export", "lo_import":
		e.add(out, OpOpaque, everything(), name+"() reads or writes a file on the database server", where)
	case "pg_file_write", "pg_file_rename", "pg_file_unlink", "heap_force_kill", "heap_force_freeze":
		e.add(out, OpOpaque, everything(), name+"() "+escapeNames[name], where)
	case "setval":
		e.setvalCall(f, where, out)
	case "set_config":
		e.setConfig(f, text, where, out)
	case "pg_reload_conf":
		// After ALTER SYSTEM (or an edited configuration file), settings
		// that come from the configuration change in live sessions.
		e.ranCode(staleReload)
	default:
		if f, ok := e.localFuncs[name]; ok {
			e.ranCode(f.stale)
		}
		if e.cat.hasFunctions() {
			e.userFunction(names, where, out)
		}
	}
}

func (e *env) setConfig(f *pg_query.FuncCall, text, where string, out *[]Effect) {
	e.literalSensitive = true
	if len(f.Args) != 3 {
		return
	}
	value, valueOK := e.constString(f.Args[1])
	local, localOK := constBoolNode(f.Args[2])
	local = localOK && local
	if name, ok := e.constString(f.Args[0]); ok {
		e.setConfigNamed(strings.ToLower(name), value, valueOK, local, where, out)
		return
	}
	// pg_dump's SELECT set_config(name, ...) FROM pg_settings WHERE name
	// = '...': the WHERE says which settings the call can change.
	if names, ok := e.settingNames[f]; ok {
		for _, name := range names {
			e.setConfigNamed(strings.ToLower(name), value, valueOK, local, where, out)
		}
		return
	}
	// A name pgmoat cannot read (a Bind parameter, a column): the call
	// runs under guard, which compares the settings that change lexing
	// or switch triggers off before and after, and the session's
	// search_path and role are read back from the server afterwards.
	// Judged statically (pgmoat check), it stays refused.
	e.possibly(func() {
		e.add(out, OpLexerState, everything(), "set_config() of a setting pgmoat cannot read", where)
	})
	if e.depth == 0 {
		e.ranCode(staleCode)
	} else {
		e.bodySetsPath(pathVal{})
	}
}

// setConfigNamed judges set_config(name, value, local) for a setting name
// pgmoat knows (lower case); value is known when valueOK.
func (e *env) setConfigNamed(name, value string, valueOK, local bool, where string, out *[]Effect) {
	switch settingKinds[name] {
	case settingSearchPath:
		var v pathVal
		if valueOK {
			v.entries, v.known = splitIdentList(value)
		}
		if e.depth > 0 {
			e.bodySetsPath(v)
			return
		}
		e.change(StateChange{Kind: ChangeSearchPath, Merge: true, Local: local, SearchPath: v.entries, Known: v.known})
	case settingRole:
		if e.depth > 0 {
			// $user follows the current role.
			e.bodySetsPath(pathVal{})
			return
		}
		if !valueOK {
			// The role decides what $user in search_path means: with a
			// role pgmoat cannot read, the search path is unknown.
			e.change(StateChange{Kind: ChangeSearchPath, Known: false})
			return
		}
		r := value
		if name == "role" && strings.EqualFold(r, "none") {
			r = ""
		}
		e.change(StateChange{Kind: ChangeRole, Local: local, Name: r})
	case settingLexer:
		if msg := unsafeSetting(name, value, valueOK); msg != "" {
			e.add(out, OpLexerState, everything(), "set_config("+name+"): "+msg, where)
		}
	}
	e.sessionSetting(name, value, valueOK, false, "set_config("+name+")", where, out)
}

// constString evaluates a string constant (possibly cast, possibly
// concatenated with ||).
func (e *env) constString(n *pg_query.Node) (string, bool) {
	if n == nil {
		return "", false
	}
	switch x := n.Node.(type) {
	case *pg_query.Node_AConst:
		e.literalSensitive = true
		if s := x.AConst.GetSval(); s != nil {
			return s.Sval, true
		}
		if i := x.AConst.GetIval(); i != nil {
			return fmt.Sprint(i.Ival), true
		}
		if b := x.AConst.GetBoolval(); b != nil {
			if b.Boolval {
				return "true", true
			}
			return "false", true
		}
		if fv := x.AConst.GetFval(); fv != nil {
			return fv.Fval, true
		}
	case *pg_query.Node_TypeCast:
		return e.constString(x.TypeCast.Arg)
	case *pg_query.Node_AExpr:
		a := x.AExpr
		if a.Kind == pg_query.A_Expr_Kind_AEXPR_OP && len(a.Name) == 1 && a.Name[0].GetString_().GetSval() == "||" {
			l, ok1 := e.constString(a.Lexpr)
			r, ok2 := e.constString(a.Rexpr)
			if ok1 && ok2 {
				return l + r, true
			}
		}
	}
	return "", false
}
