package rules

import (
	"slices"
	"sort"
	"strings"
	"sync"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/proto"
)

// The contract of a protected table: what its application relies on
// besides its rows. Its columns, types, defaults, identity and the
// sequences that feed them; its constraints and the indexes that enforce
// uniqueness; privileges on it, its schema, its sequences and the
// functions its defaults and triggers call; row-level security and its
// policies; its triggers and rules, enabled or not; its owner, replica
// identity and publication membership (which decides whether UPDATE and
// DELETE work); and the functions all of these call. A statement that
// takes part of it away or changes how it behaves is OpContract, judged
// here from the statement where the statement says it; the guard
// fingerprints the contract before and after what it runs, for the
// indirect routes (a function, a cascade, ALTER DOMAIN).
//
// Additive changes pass: a nullable column or one with a default (and no
// other constraint), a non-unique index, GRANT, COMMENT, ANALYZE, VACUUM,
// ALTER INDEX ... RENAME. Changes to a table the session itself made
// (and that the catalog snapshot did not have) pass too: nothing relies
// on it yet, and migrations add a new table's keys and triggers after
// creating it.

// contract adds an OpContract effect on obj, unless the session made obj
// itself.
func (e *env) contract(obj Object, what, where string, out *[]Effect) {
	if e.newlyMade(obj) || obj.Kind == KindSchema && !e.schemaHoldsProtected(obj.Name) {
		return
	}
	e.add(out, OpContract, obj, what, where)
}

// schemaHoldsProtected reports whether schema may hold a protected table
// whose contract something relies on: one the session did not make
// itself, that exists as far as pgmoat knows (with a catalog: in the
// snapshot or made through pgmoat since). A restore that revokes a
// schema's default privileges after creating its tables changes no one
// else's contract.
func (e *env) schemaHoldsProtected(schema string) bool {
	relevant := func(name string) bool {
		obj := Object{Kind: KindTable, Schema: schema, Name: name}
		return !e.newlyMade(obj) && (e.cat == nil || e.known(obj))
	}
	if e.fresh[qname{schema, ""}] {
		return false // made by this message or script: its tables are too
	}
	for _, pat := range e.pol.protect {
		if !glob(pat.schema, schema) {
			continue
		}
		if !strings.Contains(pat.name, "*") {
			if relevant(pat.name) {
				return true
			}
			continue
		}
		if e.cat == nil {
			return true
		}
		for name, schemas := range e.cat.schemasOf {
			if glob(pat.name, name) && slices.Contains(schemas, schema) && !e.ov.hides(schema, name) && relevant(name) {
				return true
			}
		}
		for _, name := range append(e.shared.relsIn(schema), e.ov.relsIn(schema)...) {
			if glob(pat.name, name) && relevant(name) {
				return true
			}
		}
	}
	return false
}

// newlyMade reports whether relation obj is one the session made itself,
// so that nothing relies on its contract: made earlier in this message or
// script by CREATE without IF NOT EXISTS, or made by the session in an
// earlier message (its overlay, not another session's) and absent from
// the catalog snapshot. Like the overlay, it trusts the snapshot: a table
// made outside pgmoat after it and "re-made" with CREATE TABLE IF NOT
// EXISTS counts as the session's.
func (e *env) newlyMade(obj Object) bool {
	q, ok := exactRel(obj)
	if !ok {
		return false
	}
	if e.fresh[q] {
		return true
	}
	// Made earlier in the session: the catalog may have it by now (it is
	// read again after DDL), but a CREATE that fails on a taken name made it.
	return e.ov.madeHere(q) || e.cat != nil && !e.cat.has(q.schema, q.name) && e.ov.hasRel(q.schema, q.name)
}

// markFresh records that a CREATE TABLE without IF NOT EXISTS made obj
// (it fails when the name is taken).
func (e *env) markFresh(obj Object, ifNotExists bool) {
	q, ok := exactRel(obj)
	if !ok || ifNotExists {
		return
	}
	if e.fresh == nil {
		e.fresh = map[qname]bool{}
	}
	e.fresh[q] = true
	// The session remembers it too, for its later messages.
	e.change(StateChange{Kind: ChangeCreateRelation, Relation: obj, Known: true})
}

// contractCmds lists the ALTER TABLE subcommands that change a table's
// contract, and whether they also change its children and partitions.
var contractCmds = map[pg_query.AlterTableType]struct {
	what     string
	recurses bool
}{
	pg_query.AlterTableType_AT_AddConstraint:             {"ADD CONSTRAINT", true},
	pg_query.AlterTableType_AT_AddIndexConstraint:        {"ADD CONSTRAINT ... USING INDEX", false},
	pg_query.AlterTableType_AT_AlterConstraint:           {"ALTER CONSTRAINT", true},
	pg_query.AlterTableType_AT_SetNotNull:                {"SET NOT NULL", true},
	pg_query.AlterTableType_AT_DropNotNull:               {"DROP NOT NULL", true},
	pg_query.AlterTableType_AT_ColumnDefault:             {"SET DEFAULT", true},
	pg_query.AlterTableType_AT_AddIdentity:               {"ADD GENERATED AS IDENTITY", true},
	pg_query.AlterTableType_AT_SetIdentity:               {"SET identity options", true},
	pg_query.AlterTableType_AT_DropIdentity:              {"DROP IDENTITY", true},
	pg_query.AlterTableType_AT_SetExpression:             {"SET EXPRESSION", true},
	pg_query.AlterTableType_AT_EnableRowSecurity:         {"ENABLE ROW LEVEL SECURITY", false},
	pg_query.AlterTableType_AT_DisableRowSecurity:        {"DISABLE ROW LEVEL SECURITY", false},
	pg_query.AlterTableType_AT_ForceRowSecurity:          {"FORCE ROW LEVEL SECURITY", false},
	pg_query.AlterTableType_AT_NoForceRowSecurity:        {"NO FORCE ROW LEVEL SECURITY", false},
	pg_query.AlterTableType_AT_EnableTrig:                {"ENABLE TRIGGER", true},
	pg_query.AlterTableType_AT_EnableAlwaysTrig:          {"ENABLE ALWAYS TRIGGER", true},
	pg_query.AlterTableType_AT_EnableReplicaTrig:         {"ENABLE REPLICA TRIGGER", true},
	pg_query.AlterTableType_AT_DisableTrig:               {"DISABLE TRIGGER", true},
	pg_query.AlterTableType_AT_EnableTrigAll:             {"ENABLE TRIGGER ALL", true},
	pg_query.AlterTableType_AT_DisableTrigAll:            {"DISABLE TRIGGER ALL", true},
	pg_query.AlterTableType_AT_EnableTrigUser:            {"ENABLE TRIGGER USER", true},
	pg_query.AlterTableType_AT_DisableTrigUser:           {"DISABLE TRIGGER USER", true},
	pg_query.AlterTableType_AT_EnableRule:                {"ENABLE RULE", false},
	pg_query.AlterTableType_AT_EnableAlwaysRule:          {"ENABLE ALWAYS RULE", false},
	pg_query.AlterTableType_AT_EnableReplicaRule:         {"ENABLE REPLICA RULE", false},
	pg_query.AlterTableType_AT_DisableRule:               {"DISABLE RULE", false},
	pg_query.AlterTableType_AT_ReplicaIdentity:           {"REPLICA IDENTITY", false},
	pg_query.AlterTableType_AT_ChangeOwner:               {"OWNER TO", false},
	pg_query.AlterTableType_AT_AddOf:                     {"OF", false},
	pg_query.AlterTableType_AT_DropOf:                    {"NOT OF", false},
	pg_query.AlterTableType_AT_GenericOptions:            {"OPTIONS", false},
	pg_query.AlterTableType_AT_AlterColumnGenericOptions: {"ALTER COLUMN OPTIONS", false},
}

// alterTableContract judges one ALTER TABLE subcommand on table (lazily
// resolved) for the contract.
func (e *env) alterTableContract(a *pg_query.AlterTableStmt, cmd *pg_query.AlterTableCmd, table func() Object, where string, out *[]Effect) {
	if cmd.Subtype == pg_query.AlterTableType_AT_AlterColumnGenericOptions {
		return // already alter_destructive
	}
	var what string
	recurses := false
	if cmd.Subtype == pg_query.AlterTableType_AT_AddColumn {
		col := cmd.Def.GetColumnDef()
		why := addedColumnContract(col)
		if why == "" {
			return
		}
		what = "ADD COLUMN " + QuoteIdent(col.GetColname()) + " " + why
		recurses = true
	} else {
		c, ok := contractCmds[cmd.Subtype]
		if !ok {
			return
		}
		what, recurses = c.what, c.recurses
		switch {
		case cmd.Subtype == pg_query.AlterTableType_AT_ColumnDefault && cmd.Def == nil:
			what = "DROP DEFAULT"
		case cmd.Subtype == pg_query.AlterTableType_AT_AddConstraint:
			what = "ADD " + constraintWord(cmd.Def.GetConstraint())
		}
	}
	switch a.Objtype {
	case pg_query.ObjectType_OBJECT_INDEX, pg_query.ObjectType_OBJECT_TYPE:
		return
	case pg_query.ObjectType_OBJECT_SEQUENCE:
		if cmd.Subtype != pg_query.AlterTableType_AT_ChangeOwner {
			return
		}
		seq := table()
		for _, t := range e.seqTargets(seq) {
			e.contract(t, "ALTER SEQUENCE "+seq.String()+" OWNER TO"+feedsWord(seq, t), where, out)
		}
		return
	}
	if cmd.Name != "" {
		what = what + " " + QuoteIdent(cmd.Name)
		if cmd.Subtype == pg_query.AlterTableType_AT_ColumnDefault || cmd.Subtype == pg_query.AlterTableType_AT_SetNotNull ||
			cmd.Subtype == pg_query.AlterTableType_AT_DropNotNull || cmd.Subtype == pg_query.AlterTableType_AT_AddIdentity ||
			cmd.Subtype == pg_query.AlterTableType_AT_SetIdentity || cmd.Subtype == pg_query.AlterTableType_AT_DropIdentity ||
			cmd.Subtype == pg_query.AlterTableType_AT_SetExpression {
			what = "ALTER COLUMN " + QuoteIdent(cmd.Name) + " " + strings.TrimSuffix(what, " "+QuoteIdent(cmd.Name))
		}
	}
	obj := table()
	what = "ALTER " + objTypeWord(a.Objtype) + " " + obj.String() + " " + what
	if recurses && !e.newlyMade(obj) {
		rs, _, _ := e.reach(obj, followChildren, !a.Relation.Inh)
		for i, r := range rs {
			w := what
			if i > 0 {
				w += " reaches " + r.obj.String() + " (" + r.how + ")"
			}
			e.contract(r.obj, w, where, out)
		}
		return
	}
	e.contract(obj, what, where, out)
}

// addedColumnContract says why ADD COLUMN col changes the table's
// contract, or "" when it only adds to it: a column without constraints
// (nullable, or NOT NULL with a default, generated or identity) is
// additive, and so is a nullable column without a default that is a
// foreign key or UNIQUE (NULL satisfies both: no row, and no INSERT that
// leaves it out, can fail on it). One that must be set (NOT NULL without
// a default) or that brings a check, a key or an exclusion constraint
// is not.
func addedColumnContract(col *pg_query.ColumnDef) string {
	if col == nil {
		return ""
	}
	notNull, filled := col.IsNotNull, isSerial(col.TypeName)
	var nullable []*pg_query.Constraint // satisfied by NULL
	for _, n := range col.Constraints {
		k := n.GetConstraint()
		if k == nil {
			continue
		}
		switch k.Contype {
		case pg_query.ConstrType_CONSTR_NULL, pg_query.ConstrType_CONSTR_ATTR_DEFERRABLE, pg_query.ConstrType_CONSTR_ATTR_NOT_DEFERRABLE,
			pg_query.ConstrType_CONSTR_ATTR_DEFERRED, pg_query.ConstrType_CONSTR_ATTR_IMMEDIATE:
		case pg_query.ConstrType_CONSTR_DEFAULT:
			filled = filled || !isNullConst(k.RawExpr)
		case pg_query.ConstrType_CONSTR_GENERATED, pg_query.ConstrType_CONSTR_IDENTITY:
			filled = true
		case pg_query.ConstrType_CONSTR_NOTNULL:
			notNull = true
		case pg_query.ConstrType_CONSTR_FOREIGN:
			nullable = append(nullable, k)
		case pg_query.ConstrType_CONSTR_UNIQUE:
			if k.NullsNotDistinct {
				return "with a " + constraintWord(k) + " NULLS NOT DISTINCT constraint"
			}
			nullable = append(nullable, k)
		default:
			return "with a " + constraintWord(k) + " constraint"
		}
	}
	if len(nullable) > 0 && (notNull || filled) {
		return "with a " + constraintWord(nullable[0]) + " constraint on values its rows get"
	}
	if notNull && !filled {
		return "NOT NULL without a default (INSERTs that leave it out fail)"
	}
	return ""
}

// hasIdentity reports whether a column is GENERATED ... AS IDENTITY.
func hasIdentity(col *pg_query.ColumnDef) bool {
	for _, n := range col.Constraints {
		if k := n.GetConstraint(); k != nil && k.Contype == pg_query.ConstrType_CONSTR_IDENTITY {
			return true
		}
	}
	return false
}

// isSerial reports whether a column type is one of the serial
// pseudo-types, which come with a default.
func isSerial(t *pg_query.TypeName) bool {
	if t == nil || len(t.Names) == 0 {
		return false
	}
	switch t.Names[len(t.Names)-1].GetString_().GetSval() {
	case "serial", "serial4", "bigserial", "serial8", "smallserial", "serial2":
		return true
	}
	return false
}

func constraintWord(k *pg_query.Constraint) string {
	if k == nil {
		return "CONSTRAINT"
	}
	w := "CONSTRAINT"
	switch k.Contype {
	case pg_query.ConstrType_CONSTR_CHECK:
		w = "CHECK"
	case pg_query.ConstrType_CONSTR_NOTNULL:
		w = "NOT NULL"
	case pg_query.ConstrType_CONSTR_PRIMARY:
		w = "PRIMARY KEY"
	case pg_query.ConstrType_CONSTR_UNIQUE:
		w = "UNIQUE"
	case pg_query.ConstrType_CONSTR_EXCLUSION:
		w = "EXCLUDE"
	case pg_query.ConstrType_CONSTR_FOREIGN:
		w = "FOREIGN KEY"
	}
	if k.SkipValidation {
		w += " ... NOT VALID"
	}
	if k.Conname != "" {
		w = "CONSTRAINT " + QuoteIdent(k.Conname) + " " + w
	}
	return w
}

// createIndexContract judges CREATE INDEX: a new unique index refuses
// writes that succeeded before.
func (e *env) createIndexContract(ix *pg_query.IndexStmt, where string, out *[]Effect) {
	if ix.Relation == nil {
		return
	}
	table := e.resolveRel(ix.Relation)
	if ix.Idxname != "" {
		schema := table.Schema
		if ix.Relation.Schemaname == "" && schema == "" {
			schema = e.creationSchema()
		}
		if e.madeIndexes == nil {
			e.madeIndexes = map[qname]bool{}
		}
		e.madeIndexes[qname{schema, ix.Idxname}] = true
	}
	if !ix.Unique {
		return
	}
	word := "CREATE UNIQUE INDEX "
	if ix.Concurrent {
		word += "CONCURRENTLY "
	}
	e.contract(table, word+QuoteIdent(ix.Idxname)+" ON "+table.String()+" (writes that succeeded before may now fail)", where, out)
}

// dropContract judges DROP INDEX, TRIGGER, RULE, POLICY and PUBLICATION
// for the contract.
func (e *env) dropContract(d *pg_query.DropStmt, where string, out *[]Effect) {
	word := objTypeWord(d.RemoveType)
	switch d.RemoveType {
	case pg_query.ObjectType_OBJECT_INDEX:
		for _, o := range d.Objects {
			e.dropIndexContract(e.nameObject(o), where, out)
		}
	case pg_query.ObjectType_OBJECT_TRIGGER, pg_query.ObjectType_OBJECT_RULE, pg_query.ObjectType_OBJECT_POLICY:
		for _, o := range d.Objects {
			parts := stringList(o)
			if len(parts) < 2 {
				continue
			}
			table := e.qualifiedObject(parts[:len(parts)-1])
			e.contract(table, "DROP "+word+" "+QuoteIdent(parts[len(parts)-1])+" ON "+table.String(), where, out)
		}
	case pg_query.ObjectType_OBJECT_PUBLICATION:
		for _, o := range d.Objects {
			name := o.GetString_().GetSval()
			e.publicationMembers(name, "DROP PUBLICATION "+QuoteIdent(name)+" (UPDATE and DELETE of its tables change for replication)", where, out)
		}
	}
}

// qualifiedObject resolves a relation name given as its parts.
func (e *env) qualifiedObject(parts []string) Object {
	switch len(parts) {
	case 0:
		return Object{Kind: KindTable}
	case 1:
		return e.resolveName(parts[0])
	}
	return Object{Kind: KindTable, Schema: parts[len(parts)-2], Name: parts[len(parts)-1]}
}

// dropIndexContract judges DROP INDEX of idx: dropping a unique index
// lets duplicates in (and breaks ON CONFLICT on its columns). With a
// catalog pgmoat knows which indexes are unique and on which table; an
// index it does not know (made since the snapshot, outside pgmoat) is
// left to the guard (DoubtDDL: pgmoat check does not report it).
func (e *env) dropIndexContract(idx Object, where string, out *[]Effect) {
	if e.cat == nil {
		return
	}
	known := false
	for _, q := range e.relsOf(idx) {
		if ix, ok := e.cat.contract.indexes[q]; ok && !e.ov.hides(q.schema, q.name) {
			known = true
			if ix.unique {
				t := Object{Kind: KindTable, Schema: ix.table.schema, Name: ix.table.name}
				e.contract(t, "DROP INDEX "+qualified(q.schema, q.name)+", a unique index of "+t.String(), where, out)
			}
			continue
		}
		if e.madeIndexes[q] || e.catHas(q.schema, q.name) {
			known = true
		}
	}
	if !known && e.strict {
		e.doubting(DoubtDDL, func() {
			e.add(out, OpContract, everything(), "DROP INDEX "+idx.String()+": an index pgmoat does not know may be a unique index of a protected table", where)
		})
	}
}

// triggerContract judges CREATE TRIGGER: a trigger on a protected table
// changes every later write to it (a BEFORE trigger that rewrites NEW or
// returns NULL corrupts or swallows it).
func (e *env) triggerContract(t *pg_query.CreateTrigStmt, where string, out *[]Effect) {
	if t.Relation == nil {
		return
	}
	table := e.resolveRel(t.Relation)
	word := "CREATE "
	if t.Replace {
		word += "OR REPLACE "
	}
	if t.Isconstraint {
		word += "CONSTRAINT "
	}
	e.contract(table, word+"TRIGGER "+QuoteIdent(t.Trigname)+" ON "+table.String(), where, out)
}

// ruleContract judges CREATE RULE: a rule on a protected table rewrites
// every later statement on it (DO INSTEAD NOTHING swallows them).
func (e *env) ruleContract(r *pg_query.RuleStmt, where string, out *[]Effect) {
	if r.Relation == nil {
		return
	}
	table := e.resolveRel(r.Relation)
	e.contract(table, "CREATE RULE "+QuoteIdent(r.Rulename)+" ON "+table.String(), where, out)
}

// policyContract judges CREATE and ALTER POLICY: row-level security
// decides which rows the application sees and may write.
func (e *env) policyContract(verb, name string, rv *pg_query.RangeVar, where string, out *[]Effect) {
	if rv == nil {
		return
	}
	table := e.resolveRel(rv)
	e.contract(table, verb+" POLICY "+QuoteIdent(name)+" ON "+table.String()+" (row-level security decides which rows the application sees and writes)", where, out)
}

// grantContract judges REVOKE: privileges the application uses on a
// protected table, its schema, its sequences or the functions its
// defaults and triggers call. REVOKE ... ON DATABASE (CONNECT, TEMP)
// locks sessions out: cluster administration. GRANT only adds.
func (e *env) grantContract(g *pg_query.GrantStmt, where string, out *[]Effect) {
	if g.IsGrant || g.Targtype == pg_query.GrantTargetType_ACL_TARGET_DEFAULTS {
		return
	}
	privs := "ALL"
	var ps []string
	for _, p := range g.Privileges {
		if a := p.GetAccessPriv(); a != nil {
			w := strings.ToUpper(a.PrivName)
			if len(a.Cols) > 0 {
				w += " (" + strings.Join(nodeStrings(a.Cols), ", ") + ")"
			}
			ps = append(ps, w)
		}
	}
	if len(ps) > 0 {
		privs = strings.Join(ps, ", ")
	}
	verb := "REVOKE " + privs + " ON "
	if g.Targtype == pg_query.GrantTargetType_ACL_TARGET_ALL_IN_SCHEMA {
		for _, o := range g.Objects {
			schema := o.GetString_().GetSval()
			what := verb + "ALL " + objTypeWord(g.Objtype) + "S IN SCHEMA " + QuoteIdent(schema)
			switch g.Objtype {
			case pg_query.ObjectType_OBJECT_TABLE:
				e.contract(Object{Kind: KindSchema, Name: schema}, what, where, out)
			case pg_query.ObjectType_OBJECT_SEQUENCE:
				e.contract(Object{Kind: KindSchema, Name: schema}, what, where, out)
				e.feedsFromSchema(schema, what, where, out)
			default:
				e.functionsInSchemaContract(schema, what, where, out)
			}
		}
		return
	}
	switch g.Objtype {
	case pg_query.ObjectType_OBJECT_TABLE, pg_query.ObjectType_OBJECT_FOREIGN_TABLE:
		for _, o := range g.Objects {
			if rv := o.GetRangeVar(); rv != nil {
				obj := e.resolveRel(rv)
				e.contract(obj, verb+"TABLE "+obj.String(), where, out)
				e.tableFeedsContract(obj, verb+"TABLE "+obj.String(), where, out)
			}
		}
	case pg_query.ObjectType_OBJECT_SEQUENCE:
		for _, o := range g.Objects {
			if rv := o.GetRangeVar(); rv != nil {
				seq := e.resolveRel(rv)
				e.sequenceContract(seq, verb+"SEQUENCE "+seq.String(), true, where, out)
			}
		}
	case pg_query.ObjectType_OBJECT_SCHEMA:
		for _, o := range g.Objects {
			name := o.GetString_().GetSval()
			e.contract(Object{Kind: KindSchema, Name: name}, verb+"SCHEMA "+QuoteIdent(name), where, out)
		}
	case pg_query.ObjectType_OBJECT_FUNCTION, pg_query.ObjectType_OBJECT_PROCEDURE, pg_query.ObjectType_OBJECT_ROUTINE:
		for _, o := range g.Objects {
			if f := o.GetObjectWithArgs(); f != nil {
				names := nodeStrings(f.Objname)
				e.functionContract(names, verb+objTypeWord(g.Objtype)+" "+strings.Join(names, "."), where, out)
			}
		}
	case pg_query.ObjectType_OBJECT_DATABASE:
		for _, o := range g.Objects {
			name := o.GetString_().GetSval()
			e.add(out, OpClusterAdmin, Object{Kind: KindDatabase, Name: name}, verb+"DATABASE "+QuoteIdent(name)+" may lock the application's roles out of it", where)
		}
	}
}

// roleMembershipContract judges REVOKE role FROM member (and ALTER GROUP
// ... DROP USER): the members lose every privilege the role holds, on
// protected tables too, which no catalog snapshot of the tables shows.
func (e *env) roleMembershipContract(granted, members string, where string, out *[]Effect) {
	e.add(out, OpContract, everything(), "REVOKE "+granted+" FROM "+members+": the members lose the privileges of "+granted+", on protected tables too", where)
}

// functionContract adds a contract effect on each protected table whose
// defaults, checks, indexes, policies, rules or triggers call the
// function names (what: the statement changing it). It needs a catalog
// (or DDL) that says who calls what.
func (e *env) functionContract(names []string, what, where string, out *[]Effect) {
	if len(names) == 0 || e.cat == nil {
		return
	}
	name := names[len(names)-1]
	schema := ""
	if len(names) > 1 {
		schema = names[len(names)-2]
	}
	for _, cf := range e.cat.contract.calls {
		if !e.cat.refersTo(cf.fn, schema, name) {
			continue
		}
		t := Object{Kind: KindTable, Schema: cf.rel.schema, Name: cf.rel.name}
		e.contract(t, what+", which the "+cf.what+" of "+t.String()+" calls", where, out)
	}
}

// functionsInSchemaContract is functionContract for every function of
// schema.
func (e *env) functionsInSchemaContract(schema, what, where string, out *[]Effect) {
	if e.cat == nil {
		return
	}
	for _, cf := range e.cat.contract.calls {
		for _, f := range e.cat.resolveFn(cf.fn) {
			if f.Schema == schema {
				t := Object{Kind: KindTable, Schema: cf.rel.schema, Name: cf.rel.name}
				e.contract(t, what+" ("+qualified(f.Schema, f.Name)+", which the "+cf.what+" of "+t.String()+" calls)", where, out)
				break
			}
		}
	}
}

// refersTo reports whether r may name the function schema.name (schema
// "" for any).
func (c *Catalog) refersTo(r fnRef, schema, name string) bool {
	if r.oid == "" {
		return r.name == name && (schema == "" || r.schema == "" || r.schema == schema)
	}
	f := c.contract.byOID[r.oid]
	return f != nil && f.Name == name && (schema == "" || f.Schema == schema)
}

// replaceFunctionContract judges CREATE OR REPLACE FUNCTION and ALTER
// FUNCTION of a function a protected table's defaults, triggers or
// policies call: every later write to the table runs the new code.
func (e *env) replaceFunctionContract(f *pg_query.CreateFunctionStmt, where string, out *[]Effect) {
	if !f.Replace {
		return
	}
	names := nodeStrings(f.Funcname)
	if e.sameAsCatalog(f, names) {
		return // replaced by itself: nothing changes
	}
	kind := "FUNCTION"
	if f.IsProcedure {
		kind = "PROCEDURE"
	}
	e.functionContract(names, "CREATE OR REPLACE "+kind+" "+strings.Join(names, "."), where, out)
}

// sameAsCatalog reports whether CREATE OR REPLACE f defines exactly the
// function the catalog has under its name: the same parameters, result,
// language, options and body (a migration tool that re-applies its
// functions every run). An unqualified name counts only when the catalog
// has one function of that name.
func (e *env) sameAsCatalog(f *pg_query.CreateFunctionStmt, names []string) bool {
	if e.cat == nil || len(names) == 0 {
		return false
	}
	schema := ""
	if len(names) > 1 {
		schema = names[len(names)-2]
	}
	fs := e.cat.functions(schema, names[len(names)-1])
	if schema == "" && len(e.cat.functions("", names[len(names)-1])) != 1 {
		return false
	}
	want, ok := canonicalFunction(f)
	if !ok {
		return false
	}
	for _, cf := range fs {
		if old, _ := cf.createStmt(); old != nil {
			if have, ok := canonicalFunction(old); ok && have == want {
				return true
			}
		}
	}
	return false
}

// canonicalFunction deparses a CREATE FUNCTION without its schema and
// with its options in one order, leaving out those that say the default
// (pg_get_functiondef writes only the others).
func canonicalFunction(f *pg_query.CreateFunctionStmt) (string, bool) {
	c := proto.Clone(f).(*pg_query.CreateFunctionStmt)
	c.Replace = true
	if n := len(c.Funcname); n > 1 {
		c.Funcname = c.Funcname[n-1:]
	}
	var opts []*pg_query.Node
	for _, o := range c.Options {
		d := o.GetDefElem()
		if d == nil {
			return "", false
		}
		switch v := strings.ToLower(defElemText(d)); d.Defname {
		case "volatility":
			if v == "volatile" {
				continue
			}
		case "strict", "security", "leakproof", "window":
			if !defElemBool(d) {
				continue
			}
		case "parallel":
			if v == "unsafe" {
				continue
			}
		}
		d.Location = 0
		opts = append(opts, o)
	}
	sort.SliceStable(opts, func(i, j int) bool { return opts[i].GetDefElem().Defname < opts[j].GetDefElem().Defname })
	c.Options = opts
	out, err := pg_query.Deparse(&pg_query.ParseResult{Version: parserVersion(), Stmts: []*pg_query.RawStmt{{Stmt: &pg_query.Node{Node: &pg_query.Node_CreateFunctionStmt{CreateFunctionStmt: c}}}}})
	return out, err == nil
}

// parserVersion is libpg_query's PostgreSQL version number, which Deparse
// requires of the trees it is given.
var parserVersion = sync.OnceValue(func() int32 {
	t, err := pg_query.Parse("SELECT")
	if err != nil {
		return 0
	}
	return t.Version
})

// ownerContract judges ALTER ... OWNER TO of a schema or function: the
// new owner's privileges replace the old owner's.
func (e *env) ownerContract(a *pg_query.AlterOwnerStmt, where string, out *[]Effect) {
	role := roleList([]*pg_query.Node{{Node: &pg_query.Node_RoleSpec{RoleSpec: a.Newowner}}})
	switch a.ObjectType {
	case pg_query.ObjectType_OBJECT_SCHEMA:
		name := a.Object.GetString_().GetSval()
		e.contract(Object{Kind: KindSchema, Name: name}, "ALTER SCHEMA "+QuoteIdent(name)+" OWNER TO "+role, where, out)
	case pg_query.ObjectType_OBJECT_FUNCTION, pg_query.ObjectType_OBJECT_PROCEDURE, pg_query.ObjectType_OBJECT_ROUTINE:
		if f := a.Object.GetObjectWithArgs(); f != nil {
			names := nodeStrings(f.Objname)
			e.functionContract(names, "ALTER "+objTypeWord(a.ObjectType)+" "+strings.Join(names, ".")+" OWNER TO "+role, where, out)
		}
	}
}

// publicationContract judges CREATE and ALTER PUBLICATION: a table in a
// publication that publishes UPDATE or DELETE refuses them without a
// replica identity, and the set of tables replicated changes.
func (e *env) publicationContract(n *pg_query.Node, where string, out *[]Effect) {
	switch s := n.GetNode().(type) {
	case *pg_query.Node_CreatePublicationStmt:
		p := s.CreatePublicationStmt
		what := "CREATE PUBLICATION " + QuoteIdent(p.Pubname)
		if p.ForAllTables {
			e.add(out, OpContract, everything(), what+" FOR ALL TABLES publishes every protected table (UPDATE and DELETE then need a replica identity)", where)
			return
		}
		e.pubObjects(p.Pubobjects, what+" publishes", where, out)
	case *pg_query.Node_AlterPublicationStmt:
		p := s.AlterPublicationStmt
		what := "ALTER PUBLICATION " + QuoteIdent(p.Pubname)
		if len(p.Options) > 0 {
			e.publicationMembers(p.Pubname, what+" SET options changes what it publishes of its tables", where, out)
		}
		switch p.Action {
		case pg_query.AlterPublicationAction_AP_AddObjects:
			e.pubObjects(p.Pubobjects, what+" ADD", where, out)
		case pg_query.AlterPublicationAction_AP_DropObjects:
			e.pubObjects(p.Pubobjects, what+" DROP", where, out)
		case pg_query.AlterPublicationAction_AP_SetObjects:
			e.pubObjects(p.Pubobjects, what+" SET", where, out)
			e.publicationMembers(p.Pubname, what+" SET replaces the tables it publishes", where, out)
		}
	}
}

// pubObjects adds a contract effect for each table or schema of a
// publication object list.
func (e *env) pubObjects(objs []*pg_query.Node, what, where string, out *[]Effect) {
	for _, o := range objs {
		spec := o.GetPublicationObjSpec()
		if spec == nil {
			continue
		}
		switch {
		case spec.Pubtable != nil && spec.Pubtable.Relation != nil:
			t := e.resolveRel(spec.Pubtable.Relation)
			e.contract(t, what+" TABLE "+t.String(), where, out)
		case spec.Pubobjtype == pg_query.PublicationObjSpecType_PUBLICATIONOBJ_TABLES_IN_CUR_SCHEMA:
			if s := e.creationSchema(); s != "" {
				e.contract(Object{Kind: KindSchema, Name: s}, what+" TABLES IN SCHEMA CURRENT_SCHEMA ("+QuoteIdent(s)+")", where, out)
			} else {
				e.add(out, OpContract, everything(), what+" TABLES IN SCHEMA CURRENT_SCHEMA (search_path unknown)", where)
			}
		case spec.Name != "":
			e.contract(Object{Kind: KindSchema, Name: spec.Name}, what+" TABLES IN SCHEMA "+QuoteIdent(spec.Name), where, out)
		}
	}
}

// publicationMembers adds a contract effect on each table publication pub
// publishes, as the catalog says; when pgmoat does not know the
// publication, on every protected table, left to the guard.
func (e *env) publicationMembers(pub, what, where string, out *[]Effect) {
	if e.cat != nil {
		if tables, ok := e.cat.contract.pubs[pub]; ok {
			for _, q := range tables {
				e.contract(Object{Kind: KindTable, Schema: q.schema, Name: q.name}, what, where, out)
			}
			return
		}
	}
	e.possibly(func() {
		e.add(out, OpContract, everything(), what+" (a publication pgmoat does not know may publish protected tables)", where)
	})
}

// beyondRows judges what a statement does beyond the rows of tables: the
// contract of protected tables (this file), cluster-level lockouts
// (cluster.go) and side doors out of the transaction (sidedoor.go).
func (e *env) beyondRows(n *pg_query.Node, where string, out *[]Effect) {
	switch s := n.Node.(type) {
	case *pg_query.Node_AlterTableStmt:
		// alterTableStmt judges each subcommand with alterTableContract.
		e.maintenanceFiresDoors(n, where, out)
	case *pg_query.Node_CreateStmt:
		if c := s.CreateStmt; c.Relation != nil && e.code == 0 {
			t := e.createdObject(c.Relation)
			e.markFresh(t, c.IfNotExists)
			for _, el := range c.TableElts {
				if col := el.GetColumnDef(); col != nil && (isSerial(col.TypeName) || hasIdentity(col)) {
					seq := t
					seq.Name = truncateIdent(t.Name + "_" + col.Colname + "_seq")
					e.created(seq)
					e.markFresh(seq, c.IfNotExists)
				}
			}
		}
	case *pg_query.Node_CreateSchemaStmt:
		if c := s.CreateSchemaStmt; !c.IfNotExists && c.Schemaname != "" && e.code == 0 {
			if e.fresh == nil {
				e.fresh = map[qname]bool{}
			}
			e.fresh[qname{c.Schemaname, ""}] = true
		}
	case *pg_query.Node_CreateSeqStmt:
		// A sequence is a relation: the session's overlay knows the ones
		// it made, whose contract is the session's (see sequenceContract).
		if c := s.CreateSeqStmt; c.Sequence != nil && e.code == 0 {
			seq := e.createdObject(c.Sequence)
			e.created(seq)
			e.markFresh(seq, c.IfNotExists)
		}
	case *pg_query.Node_GrantStmt:
		e.grantContract(s.GrantStmt, where, out)
	case *pg_query.Node_GrantRoleStmt:
		if g := s.GrantRoleStmt; !g.IsGrant {
			var granted []string
			for _, r := range g.GrantedRoles {
				if a := r.GetAccessPriv(); a != nil {
					granted = append(granted, QuoteIdent(a.PrivName))
				}
			}
			e.roleMembershipContract(strings.Join(granted, ", "), roleList(g.GranteeRoles), where, out)
		}
	case *pg_query.Node_CreatePolicyStmt:
		e.policyContract("CREATE", s.CreatePolicyStmt.PolicyName, s.CreatePolicyStmt.Table, where, out)
	case *pg_query.Node_AlterPolicyStmt:
		e.policyContract("ALTER", s.AlterPolicyStmt.PolicyName, s.AlterPolicyStmt.Table, where, out)
	case *pg_query.Node_DropStmt:
		e.dropContract(s.DropStmt, where, out)
	case *pg_query.Node_IndexStmt:
		e.createIndexContract(s.IndexStmt, where, out)
	case *pg_query.Node_CreateTrigStmt:
		e.triggerContract(s.CreateTrigStmt, where, out)
		e.bindsFunctions(n, where, out)
	case *pg_query.Node_RuleStmt:
		e.ruleContract(s.RuleStmt, where, out)
	case *pg_query.Node_AlterSeqStmt:
		e.alterSequenceContract(s.AlterSeqStmt, where, out)
	case *pg_query.Node_CreatePublicationStmt, *pg_query.Node_AlterPublicationStmt:
		e.publicationContract(n, where, out)
	case *pg_query.Node_AlterOwnerStmt:
		e.ownerContract(s.AlterOwnerStmt, where, out)
	case *pg_query.Node_ReassignOwnedStmt:
		e.possibly(func() {
			e.add(out, OpContract, everything(), "REASSIGN OWNED BY "+roleList(s.ReassignOwnedStmt.Roles)+" (may own protected tables, their sequences or the functions they call)", where)
		})
	case *pg_query.Node_CreateFunctionStmt:
		f := s.CreateFunctionStmt
		e.replaceFunctionContract(f, where, out)
		e.createsCode(f, where, out)
		e.functionSetClause(f.Options, "function "+strings.Join(nodeStrings(f.Funcname), "."), where, out)
	case *pg_query.Node_AlterFunctionStmt:
		a := s.AlterFunctionStmt
		if a.Func != nil {
			names := nodeStrings(a.Func.Objname)
			e.functionContract(names, "ALTER "+objTypeWord(a.Objtype)+" "+strings.Join(names, "."), where, out)
			e.functionSetClause(a.Actions, "function "+strings.Join(names, "."), where, out)
		}
	case *pg_query.Node_RenameStmt:
		r := s.RenameStmt
		switch r.RenameType {
		case pg_query.ObjectType_OBJECT_SEQUENCE:
			e.moveSequenceContract(r.Relation, "RENAME TO "+QuoteIdent(r.Newname), where, out)
		case pg_query.ObjectType_OBJECT_ROLE:
			e.add(out, OpClusterAdmin, everything(), "ALTER ROLE "+QuoteIdent(r.Subname)+" RENAME TO "+QuoteIdent(r.Newname)+": sessions logging in as "+QuoteIdent(r.Subname)+" are refused", where)
		case pg_query.ObjectType_OBJECT_FUNCTION, pg_query.ObjectType_OBJECT_PROCEDURE, pg_query.ObjectType_OBJECT_ROUTINE, pg_query.ObjectType_OBJECT_AGGREGATE:
			e.movesFunction(r.Object.GetObjectWithArgs(), "ALTER "+objTypeWord(r.RenameType)+" ... RENAME TO "+QuoteIdent(r.Newname)+" hides", where, out)
		}
	case *pg_query.Node_AlterObjectSchemaStmt:
		a := s.AlterObjectSchemaStmt
		switch a.ObjectType {
		case pg_query.ObjectType_OBJECT_SEQUENCE:
			e.moveSequenceContract(a.Relation, "SET SCHEMA "+QuoteIdent(a.Newschema), where, out)
		case pg_query.ObjectType_OBJECT_FUNCTION, pg_query.ObjectType_OBJECT_PROCEDURE, pg_query.ObjectType_OBJECT_ROUTINE, pg_query.ObjectType_OBJECT_AGGREGATE:
			e.movesFunction(a.Object.GetObjectWithArgs(), "ALTER "+objTypeWord(a.ObjectType)+" ... SET SCHEMA "+QuoteIdent(a.Newschema)+" moves", where, out)
		}
	case *pg_query.Node_AlterDatabaseStmt:
		e.alterDatabaseCluster(s.AlterDatabaseStmt, where, out)
	case *pg_query.Node_AlterDatabaseSetStmt:
		a := s.AlterDatabaseSetStmt
		e.clusterSetting(a.Setstmt, "ALTER DATABASE "+QuoteIdent(a.Dbname), Object{Kind: KindDatabase, Name: a.Dbname}, where, out)
	case *pg_query.Node_AlterRoleSetStmt:
		a := s.AlterRoleSetStmt
		scope := "ALTER ROLE ALL"
		if a.Role != nil {
			scope = "ALTER ROLE " + roleList([]*pg_query.Node{{Node: &pg_query.Node_RoleSpec{RoleSpec: a.Role}}})
		}
		if a.Database != "" {
			scope += " IN DATABASE " + QuoteIdent(a.Database)
		}
		e.clusterSetting(a.Setstmt, scope, everything(), where, out)
	case *pg_query.Node_AlterSystemStmt:
		e.clusterSetting(s.AlterSystemStmt.Setstmt, "ALTER SYSTEM", everything(), where, out)
	case *pg_query.Node_VariableSetStmt:
		e.setStmtCluster(s.VariableSetStmt, where, out)
	case *pg_query.Node_AlterRoleStmt:
		e.alterRoleCluster(s.AlterRoleStmt, where, out)
	case *pg_query.Node_DropRoleStmt:
		e.dropRoleCluster(s.DropRoleStmt.Roles, where, out)
	case *pg_query.Node_TransactionStmt:
		e.prepareTransactionCluster(s.TransactionStmt, where, out)
	case *pg_query.Node_DefineStmt, *pg_query.Node_CreateCastStmt, *pg_query.Node_CreateEventTrigStmt, *pg_query.Node_CreateOpClassStmt,
		*pg_query.Node_AlterOpFamilyStmt, *pg_query.Node_CreateConversionStmt, *pg_query.Node_CreatePlangStmt, *pg_query.Node_CreateFdwStmt,
		*pg_query.Node_AlterFdwStmt, *pg_query.Node_CreateTransformStmt, *pg_query.Node_CreateAmStmt, *pg_query.Node_AlterOperatorStmt,
		*pg_query.Node_AlterTypeStmt:
		e.bindsFunctions(n, where, out)
	case *pg_query.Node_CreateSubscriptionStmt, *pg_query.Node_AlterSubscriptionStmt:
		e.subscription(n, where, out)
	case *pg_query.Node_ReindexStmt, *pg_query.Node_ClusterStmt, *pg_query.Node_VacuumStmt:
		e.maintenanceFiresDoors(n, where, out)
	}
}
