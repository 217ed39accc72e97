package rules

import (
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// Sequences feed the defaults and identity columns of tables: restarting
// one, changing its increment or bounds, making it cycle or moving its
// ownership makes the table's next INSERTs collide with its keys or fail,
// with every row in place. With a catalog pgmoat knows which sequences
// feed which tables (pg_depend: column defaults calling nextval, OWNED BY
// and identity sequences); for a sequence it does not know, and without a
// catalog, a sequence may feed a table whose name starts its own the way
// PostgreSQL names them (users_id_seq feeds users), and any table when
// pgmoat cannot tell the sequence at all (setval of a computed name).
// setval and ALTER SEQUENCE ... RESTART are not undone by a rollback the
// way the guard's are, so they are judged here, statically.

// seqAlterOptions are the ALTER SEQUENCE options that change what the
// sequence hands out next; START, CACHE and the rest do not.
var seqAlterOptions = map[string]string{
	"restart": "RESTART", "increment": "INCREMENT", "minvalue": "MINVALUE", "maxvalue": "MAXVALUE",
	"cycle": "CYCLE", "owned_by": "OWNED BY", "as": "AS",
}

// seqTargets returns what a change to sequence seq changes: seq itself
// and the tables it may feed.
func (e *env) seqTargets(seq Object) []Object {
	out := []Object{seq}
	known := false
	for _, q := range e.relsOf(seq) {
		if e.cat == nil {
			continue
		}
		for _, t := range e.cat.contract.seqFeeds[q] {
			out = append(out, Object{Kind: KindTable, Schema: t.schema, Name: t.name})
		}
		if len(e.cat.contract.seqFeeds[q]) > 0 || e.catHas(q.schema, q.name) {
			known = true
		}
	}
	if !known {
		out = append(out, seqNameTables(seq)...)
	}
	return out
}

// seqNameTables returns the tables a sequence called seq may feed by
// PostgreSQL's naming (table_column_seq): each prefix of its name that
// ends before an underscore, in the sequence's schema.
func seqNameTables(seq Object) []Object {
	var out []Object
	for i := 1; i < len(seq.Name); i++ {
		if seq.Name[i] == '_' {
			t := seq
			t.Name = seq.Name[:i]
			out = append(out, t)
		}
	}
	return out
}

func feedsWord(seq, t Object) string {
	if objectKey(seq) == objectKey(t) {
		return ""
	}
	return " (it feeds " + t.String() + ")"
}

// sequenceContract adds a contract effect on each table sequence seq may
// feed (and on seq itself when self). A sequence the session made itself
// feeds only what the catalog says (nothing, or what the session then
// made it feed, which counted then): its name says nothing.
func (e *env) sequenceContract(seq Object, what string, self bool, where string, out *[]Effect) {
	mine := e.newlyMade(seq)
	for i, t := range e.seqTargets(seq) {
		if i == 0 && (!self || mine) || i > 0 && mine {
			continue
		}
		e.contract(t, what+feedsWord(seq, t), where, out)
	}
	if mine || e.cat == nil {
		return
	}
	// A sequence that a function of the database's own names may feed
	// whatever calls the function (a column default, a trigger, the
	// application): pg_depend does not follow function bodies.
	for _, q := range e.relsOf(seq) {
		if len(e.cat.contract.seqFeeds[q]) > 0 {
			continue
		}
		if f := e.cat.functionNaming(q.name); f != nil {
			e.add(out, OpContract, everything(), what+" (function "+qualified(f.Schema, f.Name)+" uses it, which may feed a protected table)", where)
			return
		}
	}
}

// tableFeedsContract adds a contract effect on the tables the catalog
// says relation obj feeds, when obj is a sequence (REVOKE ... ON TABLE
// works on sequences too).
func (e *env) tableFeedsContract(obj Object, what, where string, out *[]Effect) {
	if e.cat == nil {
		return
	}
	for _, q := range e.relsOf(obj) {
		for _, t := range e.cat.contract.seqFeeds[q] {
			to := Object{Kind: KindTable, Schema: t.schema, Name: t.name}
			e.contract(to, what+feedsWord(obj, to), where, out)
		}
	}
}

// feedsFromSchema adds a contract effect on the tables fed by the
// sequences of schema, as the catalog says.
func (e *env) feedsFromSchema(schema, what, where string, out *[]Effect) {
	if e.cat == nil {
		return
	}
	for s, tables := range e.cat.contract.seqFeeds {
		if s.schema != schema {
			continue
		}
		seq := Object{Kind: KindTable, Schema: s.schema, Name: s.name}
		for _, t := range tables {
			to := Object{Kind: KindTable, Schema: t.schema, Name: t.name}
			e.contract(to, what+" ("+seq.String()+" feeds "+to.String()+")", where, out)
		}
	}
}

// alterSequenceContract judges ALTER SEQUENCE: RESTART, INCREMENT,
// MINVALUE, MAXVALUE, CYCLE, OWNED BY and AS change what the tables it
// feeds get next.
func (e *env) alterSequenceContract(a *pg_query.AlterSeqStmt, where string, out *[]Effect) {
	if a.Sequence == nil {
		return
	}
	var opts []string
	for _, o := range a.Options {
		if d := o.GetDefElem(); d != nil {
			if w, ok := seqAlterOptions[d.Defname]; ok {
				opts = append(opts, w)
			}
		}
	}
	if len(opts) == 0 {
		return
	}
	seq := e.resolveRel(a.Sequence)
	e.sequenceContract(seq, "ALTER SEQUENCE "+seq.String()+" "+strings.Join(opts, ", "), true, where, out)
}

// moveSequenceContract judges ALTER SEQUENCE ... RENAME TO or SET
// SCHEMA (what): defaults hold their sequence by OID, but the
// application's own nextval('users_id_seq') calls no longer find it.
func (e *env) moveSequenceContract(rv *pg_query.RangeVar, what, where string, out *[]Effect) {
	if rv == nil {
		return
	}
	seq := e.resolveRel(rv)
	e.sequenceContract(seq, "ALTER SEQUENCE "+seq.String()+" "+what, false, where, out)
}

// setvalCall judges setval(sequence, value[, is_called]): the sequence is
// the first argument, a regclass given as text ('public.users_id_seq')
// or as pg_get_serial_sequence('table', 'column').
func (e *env) setvalCall(f *pg_query.FuncCall, where string, out *[]Effect) {
	if len(f.Args) < 2 {
		return
	}
	arg := f.Args[0]
	for arg.GetTypeCast() != nil {
		arg = arg.GetTypeCast().Arg
	}
	if s, ok := e.constString(arg); ok && !isOID(s) {
		if names, ok := splitQualifiedName(s); ok {
			seq := e.qualifiedObject(names)
			e.sequenceContract(seq, "setval("+strings.Join(names, ".")+")", true, where, out)
			return
		}
	}
	if g := arg.GetFuncCall(); g != nil && len(g.Args) == 2 {
		if fn := nodeStrings(g.Funcname); fn[len(fn)-1] == "pg_get_serial_sequence" {
			if s, ok := e.constString(g.Args[0]); ok {
				if names, ok := splitQualifiedName(s); ok {
					t := e.qualifiedObject(names)
					e.contract(t, "setval(pg_get_serial_sequence("+strings.Join(names, ".")+", ...)) restarts a sequence feeding "+t.String(), where, out)
					return
				}
			}
		}
	}
	e.add(out, OpContract, everything(), "setval() of a sequence pgmoat cannot tell, which may feed a protected table", where)
}

// isOID reports whether regclass input s is an OID (digits), which
// names a relation pgmoat cannot tell.
func isOID(s string) bool {
	s = strings.TrimSpace(s)
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return false
		}
	}
	return true
}

// splitQualifiedName parses a relation name as regclass input and
// pg_get_serial_sequence read it (stringToQualifiedNameList): parts
// separated by dots, read as splitIdentList reads names. ok is false when
// the server would reject it.
func splitQualifiedName(s string) (names []string, ok bool) {
	names, ok = splitIdentifiers(s, '.')
	switch {
	case !ok || len(names) == 0 || len(names) > 3:
		return nil, false
	case len(names) == 3:
		names = names[1:] // database.schema.name
	}
	return names, true
}
