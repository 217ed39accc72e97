package rules

import (
	"slices"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// Relations: how a name resolves, whether pgmoat knows the relation it
// names, and what an operation on it reaches (views' bases, children and
// partitions, tables with foreign keys to it), from the catalog snapshot
// and the session's overlay together; and the changes to relations that
// statements report for the overlay.

// resolveRel resolves a relation reference as PostgreSQL would, as far as
// pgmoat knows the search path, the catalog and the session's overlay.
func (e *env) resolveRel(rv *pg_query.RangeVar) Object {
	if rv == nil {
		return Object{}
	}
	name := rv.Relname
	if rv.Schemaname != "" {
		return Object{Kind: KindTable, Schema: rv.Schemaname, Name: name}
	}
	if rv.Relpersistence == "t" {
		return Object{Kind: KindTable, Schema: "pg_temp", Name: name}
	}
	return e.resolveName(name)
}

// resolveName resolves an unqualified relation name. The catalog's
// relations shadow those later on the search path, as on the server.
// Relations made since, by this session or another, do not: one may be
// gone by means pgmoat did not see (a function it could not follow, ON
// COMMIT DROP, a rolled-back transaction) or not committed yet, and then
// the name resolves further on, so the relations further on stay
// candidates (without a catalog, every schema further on). A temporary
// relation is the first candidate (pg_temp is searched first).
func (e *env) resolveName(name string) Object {
	// System catalogs are found before anything else on the path.
	if strings.HasPrefix(name, "pg_") && !e.pathLists("pg_catalog") {
		return Object{Kind: KindTable, Schema: "pg_catalog", Name: name}
	}
	var cands []string
	if e.ov.hasRel("pg_temp", name) {
		cands = append(cands, "pg_temp")
	}
	path := e.tx.cur.path
	if path.known {
		schemas := e.expandPath(path.entries)
		for _, s := range schemas {
			if e.made(s, name) {
				cands = append(cands, s)
				continue
			}
			if e.catHas(s, name) {
				cands = append(cands, s)
				break
			}
		}
		if len(cands) > 0 {
			if e.cat == nil {
				for _, s := range schemas {
					if !slices.Contains(cands, s) {
						cands = append(cands, s)
					}
				}
			}
			return objectIn(name, cands)
		}
		if len(schemas) == 1 {
			// Only a temporary table could shadow it, which is not protected.
			return Object{Kind: KindTable, Schema: schemas[0], Name: name}
		}
		return Object{Kind: KindTable, Name: name, Candidates: schemas}
	}
	if e.cat != nil {
		for _, s := range e.cat.schemasOf[name] {
			if !e.ov.hides(s, name) {
				cands = append(cands, s)
			}
		}
	}
	for _, s := range e.madeSchemas(name) {
		if !slices.Contains(cands, s) {
			cands = append(cands, s)
		}
	}
	switch {
	case len(cands) == 0:
		return Object{Kind: KindTable, Name: name, AnySchema: true}
	case e.cat == nil:
		return Object{Kind: KindTable, Name: name, Candidates: cands, AnySchema: true}
	}
	return objectIn(name, cands)
}

func objectIn(name string, schemas []string) Object {
	if len(schemas) == 1 {
		return Object{Kind: KindTable, Schema: schemas[0], Name: name}
	}
	return Object{Kind: KindTable, Name: name, Candidates: schemas}
}

func (e *env) pathLists(schema string) bool {
	if !e.tx.cur.path.known {
		return false
	}
	for _, s := range e.tx.cur.path.entries {
		if s == schema {
			return true
		}
	}
	return false
}

// expandPath turns search_path entries into schema names: $user becomes
// the current role, pg_temp and pg_catalog are left out (they hold no
// protected tables).
func (e *env) expandPath(entries []string) []string {
	out := make([]string, 0, len(entries))
	for _, s := range entries {
		switch {
		case s == "$user":
			u := e.tx.cur.role
			if u == "" {
				u = e.user
			}
			if u != "" {
				out = append(out, truncateIdent(u))
			}
		case s == "pg_temp" || strings.HasPrefix(s, "pg_temp_") || s == "pg_catalog":
		default:
			out = append(out, s)
		}
	}
	return out
}

// catHas reports whether the catalog snapshot holds schema.name and the
// session has not dropped or moved it since.
func (e *env) catHas(schema, name string) bool {
	return e.cat != nil && e.cat.has(schema, name) && !e.ov.hides(schema, name)
}

// made reports whether the session, or another session of the database
// through pgmoat, made schema.name since the snapshot (and this session
// has not dropped it since).
func (e *env) made(schema, name string) bool {
	return e.ov.hasRel(schema, name) || (e.shared.hasRel(schema, name) && !e.ov.hides(schema, name))
}

// madeSchemas returns the schemas in which a relation called name was
// made since the snapshot (see made).
func (e *env) madeSchemas(name string) []string {
	out := e.ov.schemasOf(name)
	for _, s := range e.shared.schemasOf(name) {
		if !slices.Contains(out, s) && !e.ov.hides(s, name) {
			out = append(out, s)
		}
	}
	return out
}

// known reports whether pgmoat knows the relation obj names, from the
// catalog or from the session's own statements: then it also knows what
// an operation on it reaches. A name it does not know may be a view,
// parent or partitioned table made after the catalog snapshot, by another
// session or outside pgmoat.
func (e *env) known(obj Object) bool {
	if obj.Kind != KindTable {
		return true
	}
	if obj.Schema != "" {
		return isCatalogSchema(obj.Schema) || e.made(obj.Schema, obj.Name) || e.catHas(obj.Schema, obj.Name)
	}
	for _, s := range obj.Candidates {
		if e.made(s, obj.Name) || e.catHas(s, obj.Name) {
			return true
		}
	}
	return false
}

// relsOf returns the relations obj may be, for looking up their edges.
func (e *env) relsOf(obj Object) []qname {
	if obj.Kind != KindTable || obj.Name == "" {
		return nil
	}
	if obj.Schema != "" {
		return []qname{{obj.Schema, obj.Name}}
	}
	schemas := obj.Candidates
	if obj.AnySchema {
		if e.cat != nil {
			schemas = append(slices.Clip(schemas), e.cat.schemasOf[obj.Name]...)
		}
		schemas = append(slices.Clip(schemas), e.madeSchemas(obj.Name)...)
	}
	out := make([]qname, 0, len(schemas))
	for _, s := range schemas {
		out = append(out, qname{s, obj.Name})
	}
	return out
}

// edgesOf calls fn for each edge from relation q: the catalog's (also
// those of the names q had before a session renamed it), the database's
// sessions' and this session's.
func (e *env) edgesOf(q qname, fn func(edge)) {
	if e.cat != nil {
		names := append(append([]qname{q}, e.ov.formerNames(q)...), e.shared.formerNames(q)...)
		for _, n := range names {
			for _, b := range e.cat.viewBases[n] {
				fn(edge{EdgeBase, Object{Kind: KindTable, Schema: b.schema, Name: b.name}})
			}
			for _, c := range e.cat.children[n] {
				fn(edge{EdgeChild, Object{Kind: KindTable, Schema: c.schema, Name: c.name}})
			}
			for _, c := range e.cat.fkChildren[n] {
				fn(edge{EdgeReferencedBy, Object{Kind: KindTable, Schema: c.schema, Name: c.name}})
			}
			for _, a := range e.cat.fkActs[n] {
				fn(edge{a.kind, Object{Kind: KindTable, Schema: a.child.schema, Name: a.child.name}})
			}
		}
	}
	e.shared.edgesFrom(q, fn)
	e.ov.edgesFrom(q, fn)
}

// follows selects the edges an operation follows.
type follows struct {
	base     bool // DML goes through views and rules
	child    bool // to children and partitions
	fk       bool // TRUNCATE ... CASCADE, to tables with foreign keys to it
	onDelete bool // DELETE, to tables whose foreign keys to it act ON DELETE
	onUpdate bool // UPDATE, to tables whose foreign keys to it act ON UPDATE
}

var (
	followDelete   = follows{base: true, child: true, onDelete: true}
	followUpdate   = follows{base: true, child: true, onUpdate: true}
	followTruncate = follows{child: true}
	followChildren = follows{child: true}
)

// reachedRel is a relation an operation reaches, and how.
type reachedRel struct {
	obj Object
	how string // "" for the relation the statement names
	// rewritten: a DELETE reaches it through ON DELETE SET NULL or SET
	// DEFAULT, so its rows are updated, not deleted.
	rewritten bool
}

// reach returns the relations an operation on obj reaches, obj first,
// following edges transitively as f says; only (ONLY in the statement)
// keeps the operation from obj's own children. unknown is the first
// relation reached that pgmoat does not know (nil when it knows them
// all); remote says the operation reaches a foreign table.
func (e *env) reach(obj Object, f follows, only bool) (out []reachedRel, unknown *Object, remote bool) {
	out = []reachedRel{{obj: obj}}
	seen := map[string]bool{objectKey(obj): true}
	for i := 0; i < len(out); i++ {
		cur := out[i].obj
		if unknown == nil && !e.known(cur) {
			u := cur
			unknown = &u
		}
		rewritten := out[i].rewritten
		for _, q := range e.relsOf(cur) {
			e.edgesOf(q, func(ed edge) {
				switch ed.kind {
				case EdgeBase:
					if !f.base {
						return
					}
				case EdgeChild:
					if !f.child || (i == 0 && only) {
						return
					}
				case EdgeReferencedBy:
					if !f.fk {
						return
					}
				case EdgeDeleteCascade:
					if !f.onDelete || rewritten {
						return
					}
				case EdgeDeleteSet:
					if !f.onDelete || rewritten {
						return
					}
					// Its rows are rewritten; what their new values reach
					// follows as from an UPDATE.
				case EdgeUpdateAction:
					if !f.onUpdate && !rewritten {
						return
					}
				case EdgeRemote:
					remote = remote || f.base
					return
				}
				k := objectKey(ed.to)
				if seen[k] {
					return
				}
				seen[k] = true
				rw := rewritten || ed.kind == EdgeDeleteSet
				out = append(out, reachedRel{obj: ed.to, how: edgeHow(ed.kind, cur), rewritten: rw})
			})
		}
	}
	return out, unknown, remote
}

func edgeHow(k EdgeKind, from Object) string {
	switch k {
	case EdgeBase:
		return "through view or rule " + from.String()
	case EdgeChild:
		return "child or partition of " + from.String()
	case EdgeReferencedBy:
		return "references " + from.String() + " by foreign key"
	case EdgeDeleteCascade:
		return "its rows are deleted with those of " + from.String() + " through ON DELETE CASCADE of its foreign key"
	case EdgeDeleteSet:
		return "its rows are rewritten when those of " + from.String() + " are deleted, through ON DELETE SET NULL or SET DEFAULT of its foreign key"
	case EdgeUpdateAction:
		return "its rows are rewritten when the key of " + from.String() + " is updated, through ON UPDATE CASCADE, SET NULL or SET DEFAULT of its foreign key"
	}
	return ""
}

// notInSnapshot says why an operation on target, which reaches unknown,
// a relation pgmoat does not know, counts as reaching every protected
// table.
func notInSnapshot(target, unknown Object) string {
	const why = " is not in pgmoat's catalog snapshot nor made by this session, so it may be a view, parent or partitioned table over protected tables; reconnect to refresh the snapshot"
	if objectKey(target) == objectKey(unknown) {
		return QuoteIdent(unknown.Name) + why
	}
	return "it reaches " + unknown.String() + ", which" + why
}

// reachEffects adds op's effects on what an operation on obj reaches: obj
// itself (what describes the operation), then each relation reached
// through it. Reaching a foreign table counts as reaching every protected
// table; so does reaching a relation pgmoat does not know when strict.
func (e *env) reachEffects(op Operation, obj Object, f follows, only, strict bool, what, where string, out *[]Effect) {
	rs, unknown, remote := e.reach(obj, f, only)
	for _, r := range rs {
		w, o := what, op
		if r.how != "" {
			w = what + " reaches " + r.obj.String() + " (" + r.how + ")"
		}
		if r.rewritten {
			o = OpUpdateAll
		}
		e.add(out, o, r.obj, w, where)
	}
	if remote {
		e.add(out, op, everything(), what+" reaches a foreign table, whose server may be this database", where)
	}
	if strict && unknown != nil {
		e.add(out, op, everything(), what+": "+notInSnapshot(obj, *unknown), where)
	}
}

// --- changes to relations, for the overlay ---

// createdObject returns the relation a CREATE makes: in the schema given,
// pg_temp when temporary, else the creation schema of the search path.
// When pgmoat cannot tell the schema, the object has none.
func (e *env) createdObject(rv *pg_query.RangeVar) Object {
	schema := rv.Schemaname
	switch {
	case rv.Relpersistence == "t":
		schema = "pg_temp"
	case schema == "":
		schema = e.creationSchema()
	}
	if schema == "" {
		return Object{Kind: KindTable, Name: rv.Relname, AnySchema: true}
	}
	return Object{Kind: KindTable, Schema: schema, Name: rv.Relname}
}

// creationSchema returns where an unqualified CREATE goes: the first
// schema of the search path that exists. $user names a schema that
// usually does not exist (the default path is "$user", public), so it
// counts only when the catalog knows it; other entries count as existing.
// "" when the search path is unknown.
func (e *env) creationSchema() string {
	p := e.tx.cur.path
	if !p.known {
		return ""
	}
	for _, ent := range p.entries {
		switch {
		case ent == "$user":
			u := e.tx.cur.role
			if u == "" {
				u = e.user
			}
			if u = truncateIdent(u); u != "" && e.cat != nil && e.cat.schemas[u] && !e.ov.schemaGone(u) {
				return u
			}
		case ent == "pg_temp" || strings.HasPrefix(ent, "pg_temp_") || ent == "pg_catalog":
		default:
			return ent
		}
	}
	return ""
}

// created reports that a statement creates obj. CREATE ... IF NOT EXISTS
// counts too (golang-migrate's schema_migrations, scripts' staging
// tables): if a relation of that name was there already, either the
// snapshot has it, and what it reaches still counts, or another session
// made it after the snapshot, the same blind spot as a relation another
// session drops and re-creates under a name pgmoat knows.
func (e *env) created(obj Object) {
	if obj.Schema == "" {
		return
	}
	e.change(StateChange{Kind: ChangeCreateRelation, Relation: obj})
}

func (e *env) linked(from Object, kind EdgeKind, to ...Object) {
	if from.Kind != KindTable || from.Name == "" || (len(to) == 0 && kind != EdgeRemote) {
		return
	}
	e.change(StateChange{Kind: ChangeEdge, Relation: from, Edge: kind, Objects: to})
}

// createTable reports what CREATE TABLE (or CREATE FOREIGN TABLE) makes:
// the table, and edges to it from the tables it inherits from or is a
// partition of and from those its foreign keys reference.
func (e *env) createTable(c *pg_query.CreateStmt) Object {
	if c == nil || c.Relation == nil {
		return Object{}
	}
	obj := e.createdObject(c.Relation)
	e.created(obj)
	for _, n := range c.InhRelations {
		if rv := n.GetRangeVar(); rv != nil {
			e.linked(e.resolveRel(rv), EdgeChild, obj)
		}
	}
	for _, el := range c.TableElts {
		if col := el.GetColumnDef(); col != nil {
			e.foreignKeys(obj, col.Constraints)
		}
	}
	// Table constraints (FOREIGN KEY (...) REFERENCES) are elements too.
	e.foreignKeys(obj, c.TableElts)
	e.foreignKeys(obj, c.Constraints)
	return obj
}

// foreignKeys reports the edges from the tables that constraints reference
// to table, which TRUNCATE ... CASCADE of them reaches, and, for keys with
// ON DELETE or ON UPDATE actions, which DELETE or UPDATE of them reaches.
func (e *env) foreignKeys(table Object, cons []*pg_query.Node) {
	for _, n := range cons {
		if k := n.GetConstraint(); k != nil && k.Contype == pg_query.ConstrType_CONSTR_FOREIGN && k.Pktable != nil {
			parent := e.resolveRel(k.Pktable)
			e.linked(parent, EdgeReferencedBy, table)
			for _, kind := range fkActionEdges(k.FkDelAction, k.FkUpdAction) {
				e.linked(parent, kind, table)
			}
		}
	}
}

// directBases returns the relations a view's query reads, resolved now
// (a view binds its names when it is created).
func (e *env) directBases(q *pg_query.Node) []Object {
	var out []Object
	for _, rv := range rangeVars(q) {
		out = append(out, e.resolveRel(rv))
	}
	return out
}

// createView reports what CREATE VIEW or CREATE MATERIALIZED VIEW ... AS
// makes: the view, and the edges to what it reads. A view that reads a
// temporary relation is temporary itself.
func (e *env) createView(rv *pg_query.RangeVar, query *pg_query.Node) {
	if rv == nil {
		return
	}
	bases := e.directBases(query)
	obj := e.createdObject(rv)
	temp := func(b Object) bool {
		return b.Schema == "pg_temp" || len(b.Candidates) > 0 && b.Candidates[0] == "pg_temp"
	}
	if rv.Schemaname == "" && slices.ContainsFunc(bases, temp) {
		obj.Schema, obj.AnySchema = "pg_temp", false
	}
	e.created(obj)
	e.linked(obj, EdgeBase, bases...)
}

// createRule reports the edges a rule adds: DELETE or UPDATE of its
// relation runs its actions, and an ON SELECT rule makes the relation a
// view over what the action reads.
func (e *env) createRule(r *pg_query.RuleStmt) {
	var to []Object
	for _, a := range r.Actions {
		switch x := a.Node.(type) {
		case *pg_query.Node_DeleteStmt:
			to = append(to, e.resolveRel(x.DeleteStmt.Relation))
		case *pg_query.Node_UpdateStmt:
			to = append(to, e.resolveRel(x.UpdateStmt.Relation))
		case *pg_query.Node_SelectStmt:
			if r.Event == pg_query.CmdType_CMD_SELECT {
				to = append(to, e.directBases(a)...)
			}
		}
	}
	switch r.Event {
	case pg_query.CmdType_CMD_DELETE, pg_query.CmdType_CMD_UPDATE, pg_query.CmdType_CMD_SELECT:
		e.linked(e.resolveRel(r.Relation), EdgeBase, to...)
	}
}

// moved reports that relation obj is now schema.name (schema "" for the
// schema it is in: RENAME). When obj may be one of several relations,
// each that pgmoat knows may be the one that moved, and the new name
// reaches what any of them did. When pgmoat knows none, it does not know
// what the new name is either: only the old name goes.
func (e *env) moved(obj Object, schema, name string) {
	var from []qname
	for _, q := range e.relsOf(obj) {
		if e.known(Object{Kind: KindTable, Schema: q.schema, Name: q.name}) {
			from = append(from, q)
		}
	}
	if len(from) == 0 {
		e.change(StateChange{Kind: ChangeDropRelation, Relation: obj})
		return
	}
	for _, q := range from {
		to := Object{Kind: KindTable, Schema: schema, Name: name}
		if schema == "" {
			to.Schema = q.schema
		}
		e.change(StateChange{Kind: ChangeRenameRelation, Relation: Object{Kind: KindTable, Schema: q.schema, Name: q.name}, Objects: []Object{to}})
	}
}

// deferred runs fn, the analysis of code that runs later if ever (a
// function body, a prepared statement, a rule's actions). What that code
// creates or renames counts only within it; what it drops and the edges
// it adds stay for the rest of the message and the session, the
// strictest assumption.
func (e *env) deferred(fn func()) {
	saved, n, stale := e.ov, len(e.changes), e.stale
	fn()
	e.stale = stale
	body := slices.Clone(e.changes[n:])
	e.changes, e.ov = e.changes[:n], saved
	for _, c := range body {
		switch {
		case !touchesRelations(c.Kind):
			e.changes = append(e.changes, c) // already applied to e.tx
		case c.Kind == ChangeCreateRelation:
		case c.Kind == ChangeRenameRelation:
			e.change(StateChange{Kind: ChangeDropRelation, Relation: c.Relation})
		default:
			e.change(c)
		}
	}
}

// dropSchemaCascade judges DROP SCHEMA name CASCADE with a catalog: it
// drops the schema (protected when a pattern names tables in it), every
// relation in it, the inheritance children and partitions of those
// wherever they are, the foreign keys of other tables that reference them
// (alter_destructive: DROP CONSTRAINT), and the columns of other tables
// whose type lives in it. A relation made in the schema since the
// snapshot, by any session, may have more of these than pgmoat knows:
// then it may touch every protected table.
func (e *env) dropSchemaCascade(name, what, where string, out *[]Effect) {
	e.add(out, OpDrop, Object{Kind: KindSchema, Name: name}, what, where)
	if !e.cat.schemas[name] {
		// Made since the snapshot: pgmoat does not know what is in it.
		e.add(out, OpDrop, everything(), what+": schema "+QuoteIdent(name)+" is not in pgmoat's catalog snapshot", where)
		return
	}
	if e.ov.madeIn(name) || e.shared.madeIn(name) {
		e.add(out, OpDrop, everything(), what+": relations were made in schema "+QuoteIdent(name)+" since pgmoat's catalog snapshot", where)
		return
	}
	for _, rel := range e.cat.relationsIn(name) {
		if e.ov.hides(name, rel) {
			continue
		}
		obj := Object{Kind: KindTable, Schema: name, Name: rel}
		w := what + " drops " + obj.String()
		e.reachEffects(OpDrop, obj, followChildren, false, false, w, where, out)
		for _, ref := range e.cat.fkChildren[qname{name, rel}] {
			if ref.schema != name {
				e.add(out, OpAlterDestructive, Object{Kind: KindTable, Schema: ref.schema, Name: ref.name},
					w+" and the foreign key of "+qualified(ref.schema, ref.name)+" that references it", where)
			}
		}
	}
	for _, t := range e.cat.typeUsers[name] {
		if t.schema != name {
			e.add(out, OpAlterDestructive, Object{Kind: KindTable, Schema: t.schema, Name: t.name},
				what+" drops the columns of "+qualified(t.schema, t.name)+" whose type is in it", where)
		}
	}
}
