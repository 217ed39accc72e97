package rules

import (
	"slices"
	"strings"
)

// DDL on a relation pgmoat does not know. With a catalog (the proxy),
// DELETE, UPDATE and TRUNCATE of every row of an unknown relation count as
// reaching every protected table (reachEffects). DROP and ALTER get their
// own fail-safe here, at any depth (in DO blocks and function bodies too),
// as DoubtDDL effects: which relation the name turns out to be only the
// database knows, so the guard settles it, and pgmoat check, which cannot
// run it, leaves them out, because dropping a name that does not exist
// (DROP TABLE IF EXISTS) is common and harmless:
//   - an unqualified name that no schema of the search path pgmoat knows
//     holds, but other schemas do, resolves to one of those if the
//     session's real search_path is not what pgmoat believes (a change it
//     could not see): the effect counts against them;
//   - a name pgmoat knows nowhere may be a partition or inheritance child
//     of a protected table, or a partitioned table or parent over
//     protected ones, made since the catalog snapshot outside pgmoat: the
//     effect counts against every protected table.

// unknownTarget adds the fail-safe effects of op on obj, which the
// statement names unqualified or not; every says whether a relation known
// nowhere counts as every protected table (DROP TABLE and ALTER TABLE;
// not DROP INDEX, which removes no rows).
func (e *env) unknownTarget(op Operation, obj Object, unqualified, every bool, what, where string, out *[]Effect) {
	if !e.strict || obj.Kind != KindTable || obj.Name == "" || isCatalogSchema(obj.Schema) || e.known(obj) {
		return
	}
	var others []string
	if unqualified && e.tx.cur.path.known {
		for _, s := range e.cat.schemasOf[obj.Name] {
			if !e.ov.hides(s, obj.Name) && !slices.Contains(obj.Candidates, s) && s != obj.Schema {
				others = append(others, s)
			}
		}
		for _, s := range e.madeSchemas(obj.Name) {
			if !slices.Contains(others, s) && !slices.Contains(obj.Candidates, s) && s != obj.Schema {
				others = append(others, s)
			}
		}
	}
	e.doubting(DoubtDDL, func() {
		switch {
		case len(others) > 0:
			e.add(out, op, Object{Kind: KindTable, Name: obj.Name, Candidates: others},
				what+": no schema of the search_path pgmoat knows holds "+QuoteIdent(obj.Name)+", but "+strings.Join(others, ", ")+
					" does; the name resolves there if the session's search_path is not what pgmoat believes", where)
		case every:
			e.add(out, op, everything(), what+": "+QuoteIdent(obj.Name)+
				" is not in pgmoat's catalog snapshot nor made by this session, so it may be a partition or child of protected tables, or a partitioned table or parent over them", where)
		}
	})
}
