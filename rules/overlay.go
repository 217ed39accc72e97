package rules

import (
	"crypto/sha256"
	"encoding/base64"
	"maps"
	"slices"
	"strings"
)

// overlay is what a session did to relations after its database's catalog
// snapshot was taken: the relations it created, dropped or renamed, and
// the edges (view bases, children and partitions, foreign keys, rules)
// through which an operation on one relation reaches another. Analysis
// reads the catalog and the overlay together, and threads the changes of
// a message's earlier statements through the same structure.
//
// An overlay is never changed once built: with returns a new one, so that
// a Session, the analysis of its message and an Unsettled copy share it
// freely. nil is the empty overlay.
//
// Where it cannot be sure it errs towards reaching more: edges are never
// removed (a DETACH PARTITION or a rolled-back CREATE VIEW leaves its edge
// behind), and a relation the session dropped stays hidden from the
// catalog even if the drop was rolled back. Like the catalog, it trusts
// that a name it knows still names what it knew: a relation another
// session drops and re-creates under the same name is not seen.
type overlay struct {
	rels     map[qname]bool    // relations created since, and not dropped
	made     map[qname]bool    // of rels, those a CREATE without IF NOT EXISTS made: new, no one relied on them before
	gone     map[qname]bool    // relations dropped or renamed away; schema "" = the name in every schema
	goneNS   map[string]bool   // schemas dropped
	edges    map[qname][]edge  // by the relation an operation starts from; schema "" = in any schema
	formerly map[qname][]qname // relation → its earlier names, whose catalog facts it keeps
	key      string            // fingerprint of the contents, set by seal
}

// edge says that an operation on a relation also reaches to.
type edge struct {
	kind EdgeKind
	to   Object
}

// touchesRelations reports whether a change of kind k changes an overlay.
func touchesRelations(k ChangeKind) bool {
	return k >= ChangeCreateRelation && k <= ChangeDiscardTemp || k == ChangeDiscardAll
}

func (o *overlay) hasRel(schema, name string) bool {
	return o != nil && o.rels[qname{schema, name}]
}

// hides reports whether the catalog's entry for schema.name no longer
// counts: the session dropped it, renamed it away or dropped its schema.
func (o *overlay) hides(schema, name string) bool {
	return o != nil && (o.gone[qname{schema, name}] || o.gone[qname{"", name}] || o.goneNS[schema])
}

func (o *overlay) schemaGone(schema string) bool { return o != nil && o.goneNS[schema] }

// madeHere reports whether the session made schema.name by a CREATE that
// fails when the name is taken, and has not dropped it since.
func (o *overlay) madeHere(q qname) bool { return o != nil && o.made[q] }

// relsIn returns the names of the relations the overlay made in schema.
func (o *overlay) relsIn(schema string) []string {
	if o == nil {
		return nil
	}
	var out []string
	for q := range o.rels {
		if q.schema == schema {
			out = append(out, q.name)
		}
	}
	return out
}

// madeIn reports whether a relation was made in schema since the snapshot.
func (o *overlay) madeIn(schema string) bool {
	if o == nil {
		return false
	}
	for q := range o.rels {
		if q.schema == schema {
			return true
		}
	}
	return false
}

// schemasOf returns the schemas in which the session created a relation
// called name, in a stable order.
func (o *overlay) schemasOf(name string) []string {
	if o == nil {
		return nil
	}
	var out []string
	for q := range o.rels {
		if q.name == name {
			out = append(out, q.schema)
		}
	}
	slices.Sort(out)
	return out
}

// edgesFrom calls fn for each edge the session added from relation q.
func (o *overlay) edgesFrom(q qname, fn func(edge)) {
	if o == nil {
		return
	}
	for _, ed := range o.edges[q] {
		fn(ed)
	}
	if q.schema != "" {
		for _, ed := range o.edges[qname{"", q.name}] {
			fn(ed)
		}
	}
}

func (o *overlay) formerNames(q qname) []qname {
	if o == nil {
		return nil
	}
	return o.formerly[q]
}

// clone returns a copy that can be changed without touching o. Slices are
// clipped so that appending to one never writes into the other's array.
func (o *overlay) clone() *overlay {
	n := &overlay{rels: map[qname]bool{}, made: map[qname]bool{}, gone: map[qname]bool{}, goneNS: map[string]bool{}, edges: map[qname][]edge{}, formerly: map[qname][]qname{}}
	if o == nil {
		return n
	}
	maps.Copy(n.rels, o.rels)
	maps.Copy(n.made, o.made)
	maps.Copy(n.gone, o.gone)
	maps.Copy(n.goneNS, o.goneNS)
	for k, v := range o.edges {
		n.edges[k] = slices.Clip(v)
	}
	for k, v := range o.formerly {
		n.formerly[k] = slices.Clip(v)
	}
	return n
}

// exactRel returns the relation an object names when pgmoat knows its
// schema.
func exactRel(obj Object) (qname, bool) {
	if obj.Kind != KindTable || obj.Schema == "" || obj.Name == "" {
		return qname{}, false
	}
	return qname{obj.Schema, obj.Name}, true
}

// sources returns the keys under which edges from obj are kept: each
// schema it may be in, or "" for any schema.
func sources(obj Object) []qname {
	if q, ok := exactRel(obj); ok {
		return []qname{q}
	}
	if obj.Kind != KindTable || obj.Name == "" {
		return nil
	}
	if len(obj.Candidates) > 0 && !obj.AnySchema {
		out := make([]qname, len(obj.Candidates))
		for i, s := range obj.Candidates {
			out[i] = qname{s, obj.Name}
		}
		return out
	}
	return []qname{{"", obj.Name}}
}

// with returns the overlay after change c: o itself when c does not
// concern relations, else a new overlay (unsealed).
func (o *overlay) with(c StateChange) *overlay {
	if !touchesRelations(c.Kind) {
		return o
	}
	n := o.clone()
	switch c.Kind {
	case ChangeCreateRelation:
		if q, ok := exactRel(c.Relation); ok {
			n.rels[q] = true
			if c.Known {
				n.made[q] = true
			}
			delete(n.gone, q)
		}
	case ChangeEdge:
		n.addEdges(sources(c.Relation), c)
	case ChangeDropRelation:
		n.drop(c.Relation)
	case ChangeRenameRelation:
		from, ok := exactRel(c.Relation)
		var to qname
		if ok && len(c.Objects) == 1 {
			to, ok = exactRel(c.Objects[0])
		} else {
			ok = false
		}
		if !ok {
			// Which relation moved, or where to, is unknown: the new name
			// stays unknown, the old one is gone.
			n.drop(c.Relation)
			break
		}
		if from == to {
			break
		}
		n.rels[to] = true
		if n.made[from] {
			n.made[to] = true
		}
		delete(n.gone, to)
		n.edges[to] = append(n.edges[to], n.edges[from]...)
		n.formerly[to] = append(append(n.formerly[to], from), n.formerly[from]...)
		n.drop(c.Relation)
	case ChangeDropSchema:
		n.goneNS[c.Name] = true
		for q := range n.rels {
			if q.schema == c.Name {
				delete(n.rels, q)
				delete(n.made, q)
			}
		}
	case ChangeDiscardTemp, ChangeDiscardAll:
		for q := range n.rels {
			if q.schema == "pg_temp" {
				delete(n.rels, q)
				delete(n.made, q)
			}
		}
	}
	return n
}

func (o *overlay) addEdges(from []qname, c StateChange) {
	for _, q := range from {
		if c.Edge == EdgeRemote {
			o.edges[q] = append(o.edges[q], edge{kind: EdgeRemote})
			continue
		}
		for _, to := range c.Objects {
			o.edges[q] = append(o.edges[q], edge{kind: c.Edge, to: to})
		}
	}
}

// learnt returns the database's shared overlay (see Engine.Learn) after
// change c, confirmed in one of its sessions. Unlike a session's overlay
// it holds no temporary relation (pg_temp is each session's own) and no
// drop that hides the catalog's entry (a drop rolled back in one session
// would hide a table from all): a drop only forgets what the layer itself
// learnt. It returns o itself when c teaches nothing.
func (o *overlay) learnt(c StateChange) *overlay {
	shared := func(q qname) bool { return q.schema != "pg_temp" }
	switch c.Kind {
	case ChangeCreateRelation:
		if q, ok := exactRel(c.Relation); ok && shared(q) && !o.hasRel(q.schema, q.name) {
			n := o.clone()
			n.rels[q] = true
			return n
		}
	case ChangeEdge:
		from := slices.DeleteFunc(sources(c.Relation), func(q qname) bool { return !shared(q) })
		if len(from) > 0 && (len(c.Objects) > 0 || c.Edge == EdgeRemote) {
			n := o.clone()
			n.addEdges(from, c)
			return n
		}
	case ChangeDropRelation, ChangeDropSchema:
		if o == nil {
			return o
		}
		var forget []qname
		for q := range o.rels {
			r := c.Relation
			switch {
			case c.Kind == ChangeDropSchema:
				if q.schema == c.Name {
					forget = append(forget, q)
				}
			case q.name != r.Name:
			case r.Schema == q.schema, r.Schema == "" && (r.AnySchema || len(r.Candidates) == 0 || slices.Contains(r.Candidates, q.schema)):
				forget = append(forget, q)
			}
		}
		if len(forget) > 0 {
			n := o.clone()
			for _, q := range forget {
				delete(n.rels, q)
			}
			return n
		}
	case ChangeRenameRelation:
		from, ok1 := exactRel(c.Relation)
		if len(c.Objects) != 1 || !ok1 || !shared(from) {
			return o
		}
		to, ok2 := exactRel(c.Objects[0])
		if !ok2 || !shared(to) || from == to {
			return o
		}
		n := o.clone()
		n.rels[to] = true
		n.edges[to] = append(n.edges[to], n.edges[from]...)
		n.formerly[to] = append(append(n.formerly[to], from), n.formerly[from]...)
		delete(n.rels, from)
		return n
	}
	return o
}

// pruned returns the shared overlay without what cat, a newer catalog
// snapshot, already holds. What it does not hold stays: it may have been
// made in a transaction still open when the snapshot was read.
func (o *overlay) pruned(cat *Catalog) *overlay {
	if o == nil || cat == nil {
		return o
	}
	n := o.clone()
	for q := range n.rels {
		if cat.has(q.schema, q.name) {
			delete(n.rels, q)
		}
	}
	for q := range n.formerly {
		if cat.has(q.schema, q.name) {
			delete(n.formerly, q)
		}
	}
	for q, es := range n.edges {
		es = slices.DeleteFunc(slices.Clone(es), func(ed edge) bool { return cat.hasEdge(q, ed) })
		if len(es) == 0 {
			delete(n.edges, q)
		} else {
			n.edges[q] = es
		}
	}
	if len(n.rels)+len(n.edges)+len(n.formerly) == 0 {
		return nil
	}
	return n
}

// drop forgets a relation and hides the catalog's entry for it; when
// pgmoat does not know which schema's relation went, it forgets them all.
func (o *overlay) drop(obj Object) {
	if obj.Kind != KindTable || obj.Name == "" {
		return
	}
	if q, ok := exactRel(obj); ok {
		delete(o.rels, q)
		delete(o.made, q)
		o.gone[q] = true
		return
	}
	for _, s := range obj.Candidates {
		q := qname{s, obj.Name}
		delete(o.rels, q)
		delete(o.made, q)
		o.gone[q] = true
	}
	if obj.AnySchema || len(obj.Candidates) == 0 {
		o.gone[qname{"", obj.Name}] = true
		for q := range o.rels {
			if q.name == obj.Name {
				delete(o.rels, q)
				delete(o.made, q)
			}
		}
	}
}

// seal computes the overlay's fingerprint for cache keys and returns it,
// or nil when the overlay holds nothing (so that sessions that changed
// nothing share cached decisions). Two overlays with the same contents
// have the same fingerprint; different contents, different ones (SHA-256,
// so no session can make its overlay collide with another's).
func (o *overlay) seal() *overlay {
	if o == nil || len(o.rels)+len(o.gone)+len(o.goneNS)+len(o.edges)+len(o.formerly) == 0 {
		return nil
	}
	var lines []string
	for q := range o.rels {
		lines = append(lines, "r "+qkey(q))
	}
	for q := range o.made {
		lines = append(lines, "m "+qkey(q))
	}
	for q := range o.gone {
		lines = append(lines, "g "+qkey(q))
	}
	for s := range o.goneNS {
		lines = append(lines, "s "+QuoteIdent(s))
	}
	for q, es := range o.edges {
		for _, ed := range es {
			lines = append(lines, "e "+string('0'+rune(ed.kind))+" "+qkey(q)+" "+objectKey(ed.to))
		}
	}
	for q, fs := range o.formerly {
		for _, f := range fs {
			lines = append(lines, "f "+qkey(q)+" "+qkey(f))
		}
	}
	slices.Sort(lines)
	sum := sha256.Sum256([]byte(strings.Join(lines, "\n")))
	o.key = base64.RawURLEncoding.EncodeToString(sum[:18])
	return o
}

// fingerprint returns the key seal computed, "" for the empty overlay.
func (o *overlay) fingerprint() string {
	if o == nil {
		return ""
	}
	return o.key
}

func qkey(q qname) string { return QuoteIdent(q.schema) + "." + QuoteIdent(q.name) }

// objectKey renders an object unambiguously (names are quoted whenever
// they are not plain identifiers, so separators cannot be forged).
func objectKey(o Object) string {
	var b strings.Builder
	b.WriteByte('0' + byte(o.Kind))
	b.WriteString(QuoteIdent(o.Schema))
	b.WriteByte('.')
	b.WriteString(QuoteIdent(o.Name))
	b.WriteByte('[')
	for _, c := range o.Candidates {
		b.WriteString(QuoteIdent(c))
		b.WriteByte(',')
	}
	b.WriteByte(']')
	if o.AnySchema {
		b.WriteByte('*')
	}
	return b.String()
}
