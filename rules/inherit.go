package rules

import "slices"

// Protection flows down. The rows of a partitioned table live in its
// partitions, and a parent's query reads its inheritance children's rows:
// DROP, TRUNCATE, DELETE or UPDATE of a partition or child destroys rows of
// the protected table above it, and so does ALTER of one (or DETACH
// PARTITION, NO INHERIT, then DROP). A relation that descends, at any
// depth, from a table the policy protects therefore counts as protected
// itself, for every operation. pgmoat knows the lineage from the catalog
// snapshot (pg_inherits), from what the database's sessions made through
// pgmoat since (Engine.Learn; in pgmoat check, the earlier files of the
// run) and from the session's own statements (CREATE TABLE ... PARTITION
// OF or INHERITS, ATTACH PARTITION, ALTER TABLE ... INHERIT).

// maxLineage bounds how many relations the search for a protected
// ancestor visits.
const maxLineage = 64

// hasLineage reports whether any relation may descend from another:
// otherwise no search is needed.
func (e *env) hasLineage() bool {
	return e.pol.ProtectsAnything() && (e.cat != nil && len(e.cat.parents) > 0 || e.ov.hasEdges() || e.shared.hasEdges())
}

// protectedAncestor returns the nearest protected table that obj (any of
// the relations it may be) descends from, or nil.
func (e *env) protectedAncestor(obj Object) *Ancestor {
	if obj.Kind != KindTable || !e.hasLineage() {
		return nil
	}
	for _, q := range e.relsOf(obj) {
		if a := e.ancestorOf(q); a != nil {
			return a
		}
	}
	return nil
}

// ancestorOf searches the tables q descends from, nearest first, for one
// the policy protects.
func (e *env) ancestorOf(q qname) *Ancestor {
	type node struct {
		rel     qname
		lineage string // how q descends from rel
	}
	queue := []node{{rel: q, lineage: qualified(q.schema, q.name)}}
	seen := map[qname]bool{q: true}
	for i := 0; i < len(queue) && i < maxLineage; i++ {
		cur := queue[i]
		var found *Ancestor
		e.parentsOf(cur.rel, func(p qname) {
			if found != nil || seen[p] {
				return
			}
			seen[p] = true
			name := QuoteIdent(p.name) + " (in any schema)"
			if p.schema != "" {
				name = qualified(p.schema, p.name)
			}
			lineage := cur.lineage + " is " + e.descentWord(cur.rel, p) + " " + name
			if i > 0 {
				lineage = cur.lineage + ", which is " + e.descentWord(cur.rel, p) + " " + name
			}
			protected := e.pol.anySchemaProtectedBy(p.name) != ""
			if p.schema != "" {
				protected = e.pol.protectedBy(p.schema, p.name) != ""
			}
			if protected {
				found = &Ancestor{Schema: p.schema, Name: p.name, Lineage: lineage}
				return
			}
			queue = append(queue, node{rel: p, lineage: lineage})
		})
		if found != nil {
			return found
		}
	}
	return nil
}

// descentWord says what child is of parent, as far as pgmoat knows.
func (e *env) descentWord(child, parent qname) string {
	if e.cat != nil {
		switch e.cat.relkinds[parent] {
		case 'p':
			return "a partition of"
		case 'r', 'f':
			return "an inheritance child of"
		}
	}
	return "a partition or inheritance child of"
}

// parentsOf calls fn for each table q descends from directly: from the
// catalog (also under the names q had before the session renamed it, and
// for a parent renamed since, under its new names), and from the edges
// the database's sessions and this session added. A parent whose schema
// pgmoat does not know comes with schema "" (the name in any schema); its
// own parents are those of every table of that name.
func (e *env) parentsOf(q qname, fn func(qname)) {
	var names []qname
	if q.schema == "" {
		names = e.relsOf(Object{Kind: KindTable, Name: q.name, AnySchema: true})
	} else {
		names = append(append([]qname{q}, e.ov.formerNames(q)...), e.shared.formerNames(q)...)
	}
	if e.cat != nil {
		for _, n := range names {
			for _, p := range e.cat.parents[n] {
				if !e.ov.hides(p.schema, p.name) {
					fn(p)
					continue
				}
				// Renamed since, or dropped (then nothing descends from it).
				e.ov.renamedFrom(p, fn)
				e.shared.renamedFrom(p, fn)
			}
		}
	}
	for _, o := range [...]*overlay{e.shared, e.ov} {
		o.childEdgesTo(names, fn)
	}
}

// hasEdges reports whether the overlay holds any edge.
func (o *overlay) hasEdges() bool { return o != nil && len(o.edges) > 0 }

// renamedFrom calls fn for each name relation p has now, after renames
// the overlay holds.
func (o *overlay) renamedFrom(p qname, fn func(qname)) {
	if o == nil {
		return
	}
	for now, before := range o.formerly {
		if slices.Contains(before, p) {
			fn(now)
		}
	}
}

// childEdgesTo calls fn for the source of each child edge (a partition or
// inheritance child added) whose child may be one of names.
func (o *overlay) childEdgesTo(names []qname, fn func(qname)) {
	if o == nil {
		return
	}
	for from, es := range o.edges {
		for _, ed := range es {
			if ed.kind == EdgeChild && slices.ContainsFunc(names, func(n qname) bool { return mayBe(ed.to, n) }) {
				fn(from)
			}
		}
	}
}

// mayBe reports whether obj may name relation q.
func mayBe(obj Object, q qname) bool {
	if obj.Kind != KindTable || obj.Name != q.name {
		return false
	}
	if obj.Schema != "" {
		return obj.Schema == q.schema
	}
	return obj.AnySchema || len(obj.Candidates) == 0 || slices.Contains(obj.Candidates, q.schema) || q.schema == ""
}

// protectedRel reports whether the policy protects q or a table it
// descends from.
func (e *env) protectedRel(q qname) bool {
	return e.pol.protectedBy(q.schema, q.name) != "" || e.hasLineage() && e.ancestorOf(q) != nil
}
