package rules

import (
	"slices"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// Side doors out of the transaction. Guarded execution sees only what a
// statement does inside the session's transaction; a function that opens
// another connection (dblink), writes the server's files (adminpack,
// lo_export) or changes pages in place (pg_surgery) escapes it. Such a
// function is known by what it is — its language, library and symbol,
// or an untrusted language (Function.Escapes) — not by its name, and so
// is everything that reaches one: a function whose body calls it, an
// aggregate whose support function it is, an operator, a cast or a
// domain check that runs it, and the defaults, generated columns,
// checks, index expressions, policies, rules, triggers and views that
// call any of those. A statement that fires one is blocked as certainly
// opaque, with a sentence naming the object and the function it reaches:
// INSERT and COPY FROM (defaults, generated columns, checks, domain
// checks, index expressions, column casts, triggers, rules, policies),
// UPDATE and DELETE (triggers, rules, policies, index expressions),
// reading a view or a table with such a policy, REINDEX, CLUSTER, VACUUM
// FULL, ANALYZE and ALTER TABLE rewrites (index expressions, generated
// columns, checks), and any expression naming such an operator, casting
// to such a type or calling such an aggregate.
//
// While anything is protected, making a new door is refused too:
// creating a LANGUAGE c or internal function (code pgmoat cannot read
// that may be any of the above, or a built-in pgmoat judges by name under
// another name), renaming or moving a function that escapes (analysis
// without a catalog knows those by name), and binding one to an
// operator, aggregate, cast, trigger, type or other object.

// escapeNames are functions analysis knows by name when it has no
// catalog (pgmoat check), and why each reaches outside the transaction.
var escapeNames = map[string]string{
	"dblink":            "runs SQL pgmoat cannot see, on another connection",
	"dblink_exec":       "runs SQL pgmoat cannot see, on another connection",
	"dblink_send_query": "runs SQL pgmoat cannot see, on another connection",
	"dblink_open":       "runs SQL pgmoat cannot see, on another connection",
	"lo_export":         "reads or writes a file on the database server",
	"lo_import":         "reads or writes a file on the database server",
	"pg_file_write":     "writes a file on the database server",
	"pg_file_rename":    "renames a file on the database server",
	"pg_file_unlink":    "deletes a file on the database server",
	"heap_force_kill":   "kills rows in place, where no rollback restores them",
	"heap_force_freeze": "freezes rows in place, where no rollback restores them",
}

// contribTriggers are C trigger functions of PostgreSQL's contrib
// modules: code pgmoat cannot read. check_foreign_key and
// check_primary_key (refint) run SQL on the tables their arguments name,
// cascading deletes included; the others change only the row being
// written (or unlink its large objects).
var contribTriggers = map[string]bool{
	"check_foreign_key": true, "check_primary_key": true,
	"insert_username": false, "moddatetime": false, "autoinc": false, "lo_manage": false,
	"tsvector_update_trigger": false, "tsvector_update_trigger_column": false,
}

// escapingCode reports whether a function in language lang, with probin
// lib and prosrc sym, reaches outside the transaction: escapeCondition in
// Go, for functions learnt from DDL (CatalogFromSQL, CREATE FUNCTION).
func escapingCode(lang, lib, sym string) bool {
	switch lang {
	case "c":
		for _, l := range escapeLibraries {
			if strings.Contains(lib, l) {
				return true
			}
		}
		if strings.HasPrefix(sym, "dblink") || slices.Contains(escapeCSymbols, sym) {
			return true
		}
		return slices.Contains(escapeSymbols, sym)
	case "internal":
		return slices.Contains(escapeSymbols, sym)
	case "sql", "plpgsql":
		return false
	}
	// Untrusted languages end in u by convention (plperlu, plpython3u).
	return strings.HasSuffix(lang, "u")
}

// escapeIndex is what reaches outside the transaction in one catalog,
// computed once (Catalog.escapes) and read-only after.
type escapeIndex struct {
	fn    map[*Function]string // function → why it reaches outside
	ops   map[string][]string  // operator name → what runs, why
	types map[string][]string  // type name → what runs, why
	rels  map[qname][]relDoor  // relation → objects that run such a function
}

// relDoor is an object of a relation that runs a function reaching
// outside the transaction when scope happens to the relation.
type relDoor struct {
	scope codeScope
	what  string // "default of column x"
	why   string
}

// escapeProbe collects, while analysis reads one function's body to find
// out whether it escapes, the functions the body calls (directly, or
// through doors it fires) instead of following them.
type escapeProbe struct {
	calls []*Function
}

// TypeInputEscapes returns why converting a value to type schema.name in
// database db (a domain's check, a cast's function) reaches outside the
// transaction, as far as the database's catalog says, or "".
func (e *Engine) TypeInputEscapes(db, schema, name string) string {
	ce := e.catalog(db)
	if ce == nil || schema == "pg_catalog" {
		return ""
	}
	if whys := ce.cat.escapes().types[name]; len(whys) > 0 {
		return whys[0]
	}
	return ""
}

func (c *Catalog) escapes() *escapeIndex {
	if c == nil {
		return nil
	}
	c.contract.escOnce.Do(func() { c.contract.esc = c.computeEscapes() })
	return c.contract.esc
}

// computeEscapes finds the functions that reach outside the transaction:
// those that do themselves (Function.Escapes, or a body pgmoat reads that
// certainly does something opaque: dblink by name, COPY ... PROGRAM, an
// untrusted language), then every function that calls or uses one,
// transitively; then the operators, types and relation objects that run
// one.
func (c *Catalog) computeEscapes() *escapeIndex {
	idx := &escapeIndex{fn: map[*Function]string{}, ops: map[string][]string{}, types: map[string][]string{}, rels: map[qname][]relDoor{}}
	callers := map[*Function][]*Function{}
	var queue []*Function
	for _, fs := range c.funcs {
		for _, f := range fs {
			uses := c.usesOf(f)
			why := ""
			switch {
			case f.Escapes:
				why = directEscape(f)
			case f.Lang == "sql" || f.Lang == "plpgsql":
				var calls []*Function
				why, calls = c.probeBody(f)
				uses = append(uses, calls...)
			}
			for _, u := range uses {
				if u != f {
					callers[u] = append(callers[u], f)
				}
			}
			if why != "" {
				idx.fn[f] = why
				queue = append(queue, f)
			}
		}
	}
	for len(queue) > 0 {
		f := queue[0]
		queue = queue[1:]
		for _, g := range callers[f] {
			if _, done := idx.fn[g]; !done {
				idx.fn[g] = qualified(g.Schema, g.Name) + "() calls " + idx.fn[f]
				queue = append(queue, g)
			}
		}
	}
	doors := func(m map[string][]doorFact, into map[string][]string) {
		for name, ds := range m {
			for _, d := range ds {
				for _, f := range c.resolveFn(d.fn) {
					if why := idx.fn[f]; why != "" {
						into[name] = append(into[name], d.what+" runs "+why)
					}
				}
			}
		}
	}
	doors(c.contract.opDoors, idx.ops)
	doors(c.contract.typeDoors, idx.types)
	for _, cf := range c.contract.calls {
		for _, f := range c.resolveFn(cf.fn) {
			if why := idx.fn[f]; why != "" {
				idx.rels[cf.rel] = append(idx.rels[cf.rel], relDoor{scope: cf.scope, what: cf.what, why: why})
			}
		}
	}
	return idx
}

func directEscape(f *Function) string {
	return qualified(f.Schema, f.Name) + "() reaches outside the transaction (" + f.Lang + " " + strings.TrimPrefix(f.Def, "$libdir/") + ")"
}

// probeBody reads f's body: why it certainly does something opaque
// itself ("" if not), and the functions it calls.
func (c *Catalog) probeBody(f *Function) (string, []*Function) {
	stmt, text := f.createStmt()
	if stmt == nil {
		return "", nil
	}
	e := newEnv(&Policy{}, c, "", txState{})
	e.probe = &escapeProbe{}
	var out []Effect
	e.callFunction(stmt, text, "", &out)
	for _, ef := range out {
		if ef.Op == OpOpaque && ef.Doubt == DoubtNone {
			return qualified(f.Schema, f.Name) + "(): " + ef.What, e.probe.calls
		}
	}
	return "", e.probe.calls
}

// escapeWhy returns why function f reaches outside the transaction, or
// "".
func (e *env) escapeWhy(f *Function) string {
	if e.probe != nil {
		return ""
	}
	if idx := e.cat.escapes(); idx != nil {
		return idx.fn[f]
	}
	return ""
}

// mayFireDoors reports whether the catalog has doors that statements
// naming an operator or a type may fire, so that the generic walk must
// look.
func (e *env) mayFireDoors() bool {
	if e.cat == nil {
		return false
	}
	if e.probe != nil {
		return len(e.cat.contract.opDoors)+len(e.cat.contract.typeDoors) > 0
	}
	idx := e.cat.escapes()
	return len(idx.ops)+len(idx.types) > 0
}

// namedDoor adds the effect of an expression naming operator or type
// name (kind "operator" or "type"); in a probe it records what runs.
func (e *env) namedDoor(names []string, ops bool, where string, out *[]Effect) {
	if e.cat == nil || len(names) == 0 {
		return
	}
	name := names[len(names)-1]
	if e.probe != nil {
		facts := e.cat.contract.typeDoors
		if ops {
			facts = e.cat.contract.opDoors
		}
		for _, d := range facts[name] {
			e.probe.calls = append(e.probe.calls, e.cat.resolveFn(d.fn)...)
		}
		return
	}
	idx := e.cat.escapes()
	whys, word := idx.types[name], "casts to "+name
	if ops {
		whys, word = idx.ops[name], "uses operator "+name
	}
	if len(whys) > 0 {
		e.add(out, OpOpaque, everything(), "the statement "+word+": "+whys[0], where)
		return
	}
	// An operator, cast or domain check of the database's own written in
	// SQL or PL/pgSQL runs its function's body wherever the name is used
	// (an operator on varchar beats the built-in one on text): it is
	// analysed as a call. Which overload the server picks is left open:
	// every one of the name counts. C functions of extensions (citext's =)
	// are judged by what they reach (escapes), not followed.
	facts := e.cat.contract.typeDoors
	if ops {
		facts = e.cat.contract.opDoors
	}
	for _, d := range facts[name] {
		var readable []*Function
		for _, f := range e.cat.resolveFn(d.fn) {
			if f.Lang == "sql" || f.Lang == "plpgsql" {
				readable = append(readable, f)
			}
		}
		if len(readable) > 0 {
			e.callFunctions(readable, joinWhere(where, word), out)
		}
	}
}

// firesDoors adds a certain opaque effect when scope happening to
// relation q (verb: "INSERT INTO") runs an object of it that reaches
// outside the transaction. In a probe it records the functions q runs.
func (e *env) firesDoors(q qname, scope codeScope, verb, where string, out *[]Effect) {
	if e.cat == nil {
		return
	}
	if e.probe != nil {
		for _, cf := range e.cat.contract.calls {
			if cf.rel == q && cf.scope&scope != 0 {
				e.probe.calls = append(e.probe.calls, e.cat.resolveFn(cf.fn)...)
			}
		}
		return
	}
	for _, d := range e.cat.escapes().rels[q] {
		if d.scope&scope != 0 {
			e.add(out, OpOpaque, everything(), verb+" "+qualified(q.schema, q.name)+" runs the "+d.what+": "+d.why, where)
			return
		}
	}
}

// hasRelDoors reports whether any relation of the catalog runs an
// object that reaches outside the transaction (in a probe: any object
// calling a function).
func (e *env) hasRelDoors() bool {
	if e.cat == nil {
		return false
	}
	if e.probe != nil {
		return len(e.cat.contract.calls) > 0
	}
	return len(e.cat.escapes().rels) > 0
}

// readsFireDoors adds the doors fired by reading the relations a
// statement that runs queries names, and the relations those views read.
func (e *env) readsFireDoors(n *pg_query.Node, where string, out *[]Effect) {
	if !e.hasRelDoors() || !runsQueries(n) {
		return
	}
	for _, rv := range rangeVars(n) {
		rs, _, _ := e.reach(e.resolveRel(rv), follows{base: true}, false)
		for _, r := range rs {
			for _, q := range e.relsOf(r.obj) {
				e.firesDoors(q, codeOnRead, "reading", where, out)
			}
		}
	}
}

// runsQueries reports whether a statement runs (or plans, which may
// evaluate immutable functions) the queries of the relations it names:
// not DDL, but CREATE TABLE AS and REFRESH MATERIALIZED VIEW.
func runsQueries(n *pg_query.Node) bool {
	switch n.GetNode().(type) {
	case *pg_query.Node_CreateTableAsStmt, *pg_query.Node_RefreshMatViewStmt:
		return true
	}
	return !isDDL(n)
}

// maintenanceFiresDoors adds the doors that rebuilding a relation's rows
// or indexes fires: REINDEX, CLUSTER, VACUUM FULL and ANALYZE evaluate
// index expressions (and rewrites, generated columns and checks).
func (e *env) maintenanceFiresDoors(n *pg_query.Node, where string, out *[]Effect) {
	if !e.hasRelDoors() {
		return
	}
	fire := func(obj Object, verb string) {
		for _, q := range e.relsOf(obj) {
			if ix, ok := e.cat.contract.indexes[q]; ok {
				q = ix.table
			}
			e.firesDoors(q, codeOnRebuild, verb, where, out)
		}
	}
	all := func(verb string, inSchema func(string) bool) {
		var qs []qname
		for q := range e.cat.escapes().rels {
			if inSchema == nil || inSchema(q.schema) {
				qs = append(qs, q)
			}
		}
		slices.SortFunc(qs, func(a, b qname) int { return strings.Compare(qkey(a), qkey(b)) })
		for _, q := range qs {
			e.firesDoors(q, codeOnRebuild, verb, where, out)
		}
	}
	switch s := n.GetNode().(type) {
	case *pg_query.Node_ReindexStmt:
		r := s.ReindexStmt
		switch {
		case r.Relation != nil:
			fire(e.resolveRel(r.Relation), "REINDEX")
		case r.Kind == pg_query.ReindexObjectType_REINDEX_OBJECT_SCHEMA:
			all("REINDEX SCHEMA", func(s string) bool { return s == r.Name })
		default:
			all("REINDEX", nil)
		}
	case *pg_query.Node_ClusterStmt:
		if s.ClusterStmt.Relation != nil {
			fire(e.resolveRel(s.ClusterStmt.Relation), "CLUSTER")
		} else {
			all("CLUSTER", nil)
		}
	case *pg_query.Node_VacuumStmt:
		v := s.VacuumStmt
		verb := "ANALYZE"
		if v.IsVacuumcmd {
			verb = ""
			for _, o := range v.Options {
				if d := o.GetDefElem(); d != nil && (d.Defname == "full" || d.Defname == "analyze") && defElemBool(d) {
					verb = "VACUUM " + strings.ToUpper(d.Defname)
				}
			}
			if verb == "" {
				return
			}
		}
		if len(v.Rels) == 0 {
			all(verb, nil)
		}
		for _, r := range v.Rels {
			if vr := r.GetVacuumRelation(); vr != nil && vr.Relation != nil {
				fire(e.resolveRel(vr.Relation), verb)
			}
		}
	case *pg_query.Node_AlterTableStmt:
		a := s.AlterTableStmt
		for _, c := range a.Cmds {
			switch c.GetAlterTableCmd().GetSubtype() {
			case pg_query.AlterTableType_AT_AlterColumnType, pg_query.AlterTableType_AT_ValidateConstraint,
				pg_query.AlterTableType_AT_SetAccessMethod, pg_query.AlterTableType_AT_SetLogged, pg_query.AlterTableType_AT_SetUnLogged:
				fire(e.resolveRel(a.Relation), "ALTER TABLE (rewriting or checking every row of)")
				return
			}
		}
	}
}

// bindsFunction adds the effect of DDL that makes an object run the
// function names (how: "CREATE OPERATOR === with procedure"): certainly
// opaque when the function reaches outside the transaction, by name or
// by what the catalog says it is.
func (e *env) bindsFunction(names []string, how, where string, out *[]Effect) {
	if len(names) == 0 {
		return
	}
	name := names[len(names)-1]
	schema := ""
	if len(names) > 1 {
		schema = names[len(names)-2]
	}
	if e.probe != nil {
		e.probe.calls = append(e.probe.calls, e.cat.functions(schema, name)...)
		return
	}
	if why, ok := escapeNames[name]; ok {
		e.add(out, OpOpaque, everything(), how+" "+strings.Join(names, ".")+"(), which "+why, where)
		return
	}
	for _, f := range e.cat.functions(schema, name) {
		if why := e.escapeWhy(f); why != "" {
			e.add(out, OpOpaque, everything(), how+" "+strings.Join(names, ".")+"(): "+why, where)
			return
		}
	}
}

// bindsFunctions finds the functions a DDL statement binds to the object
// it makes or changes, and judges each with bindsFunction.
func (e *env) bindsFunctions(n *pg_query.Node, where string, out *[]Effect) {
	owa := func(o *pg_query.ObjectWithArgs) []string {
		if o == nil {
			return nil
		}
		return nodeStrings(o.Objname)
	}
	switch s := n.GetNode().(type) {
	case *pg_query.Node_DefineStmt:
		d := s.DefineStmt
		what := "CREATE " + objTypeWord(d.Kind) + " " + strings.Join(nodeStrings(d.Defnames), ".")
		for _, o := range d.Definition {
			de := o.GetDefElem()
			if de == nil || !functionOption[de.Defname] {
				continue
			}
			e.bindsFunction(defElemNames(de), what+" with "+de.Defname, where, out)
		}
	case *pg_query.Node_AlterOperatorStmt:
		for _, o := range s.AlterOperatorStmt.Options {
			if de := o.GetDefElem(); de != nil && functionOption[de.Defname] {
				e.bindsFunction(defElemNames(de), "ALTER OPERATOR with "+de.Defname, where, out)
			}
		}
	case *pg_query.Node_AlterTypeStmt:
		for _, o := range s.AlterTypeStmt.Options {
			if de := o.GetDefElem(); de != nil && functionOption[de.Defname] {
				e.bindsFunction(defElemNames(de), "ALTER TYPE with "+de.Defname, where, out)
			}
		}
	case *pg_query.Node_CreateCastStmt:
		e.bindsFunction(owa(s.CreateCastStmt.Func), "CREATE CAST with function", where, out)
	case *pg_query.Node_CreateTrigStmt:
		t := s.CreateTrigStmt
		e.bindsFunction(nodeStrings(t.Funcname), "CREATE TRIGGER "+QuoteIdent(t.Trigname)+" executing", where, out)
		e.contribTrigger(nodeStrings(t.Funcname), t, where, out)
	case *pg_query.Node_CreateEventTrigStmt:
		e.bindsFunction(nodeStrings(s.CreateEventTrigStmt.Funcname), "CREATE EVENT TRIGGER executing", where, out)
	case *pg_query.Node_CreateOpClassStmt:
		for _, it := range s.CreateOpClassStmt.Items {
			if i := it.GetCreateOpClassItem(); i != nil {
				e.bindsFunction(owa(i.Name), "CREATE OPERATOR CLASS with support function", where, out)
			}
		}
	case *pg_query.Node_AlterOpFamilyStmt:
		for _, it := range s.AlterOpFamilyStmt.Items {
			if i := it.GetCreateOpClassItem(); i != nil {
				e.bindsFunction(owa(i.Name), "ALTER OPERATOR FAMILY with support function", where, out)
			}
		}
	case *pg_query.Node_CreateConversionStmt:
		e.bindsFunction(nodeStrings(s.CreateConversionStmt.FuncName), "CREATE CONVERSION with function", where, out)
	case *pg_query.Node_CreatePlangStmt:
		p := s.CreatePlangStmt
		for _, fn := range [][]*pg_query.Node{p.Plhandler, p.Plinline, p.Plvalidator} {
			e.bindsFunction(nodeStrings(fn), "CREATE LANGUAGE "+QuoteIdent(p.Plname)+" with", where, out)
		}
	case *pg_query.Node_CreateFdwStmt:
		for _, o := range s.CreateFdwStmt.FuncOptions {
			if de := o.GetDefElem(); de != nil {
				e.bindsFunction(defElemNames(de), "CREATE FOREIGN DATA WRAPPER with "+de.Defname, where, out)
			}
		}
	case *pg_query.Node_AlterFdwStmt:
		for _, o := range s.AlterFdwStmt.FuncOptions {
			if de := o.GetDefElem(); de != nil {
				e.bindsFunction(defElemNames(de), "ALTER FOREIGN DATA WRAPPER with "+de.Defname, where, out)
			}
		}
	case *pg_query.Node_CreateTransformStmt:
		t := s.CreateTransformStmt
		e.bindsFunction(owa(t.Fromsql), "CREATE TRANSFORM with FROM SQL function", where, out)
		e.bindsFunction(owa(t.Tosql), "CREATE TRANSFORM with TO SQL function", where, out)
	case *pg_query.Node_CreateAmStmt:
		e.bindsFunction(nodeStrings(s.CreateAmStmt.HandlerName), "CREATE ACCESS METHOD with handler", where, out)
	}
}

// functionOption lists the options of CREATE OPERATOR, AGGREGATE and
// TYPE (and their ALTERs) whose value is a function the object runs.
var functionOption = map[string]bool{
	"function": true, "procedure": true, "restrict": true, "join": true,
	"sfunc": true, "finalfunc": true, "combinefunc": true, "serialfunc": true, "deserialfunc": true,
	"msfunc": true, "minvfunc": true, "mfinalfunc": true,
	"input": true, "output": true, "receive": true, "send": true, "typmod_in": true, "typmod_out": true,
	"analyze": true, "subscript": true, "handler": true, "validator": true,
}

// defElemNames returns the name a DefElem's value spells: a type name, a
// list of names or one name.
func defElemNames(d *pg_query.DefElem) []string {
	switch a := d.Arg.GetNode().(type) {
	case *pg_query.Node_TypeName:
		return nodeStrings(a.TypeName.Names)
	case *pg_query.Node_List:
		return nodeStrings(a.List.Items)
	case *pg_query.Node_String_:
		return []string{a.String_.Sval}
	}
	return nil
}

// contribTrigger judges CREATE TRIGGER executing a contrib C trigger
// function: those that run SQL on other tables are code pgmoat cannot
// read, and may reach protected tables whenever the trigger fires.
func (e *env) contribTrigger(names []string, t *pg_query.CreateTrigStmt, where string, out *[]Effect) {
	if len(names) == 0 || !contribTriggers[names[len(names)-1]] {
		return
	}
	e.possibly(func() {
		e.add(out, OpOpaque, everything(), "CREATE TRIGGER "+QuoteIdent(t.Trigname)+" executing "+strings.Join(names, ".")+
			"(), C code from contrib that runs SQL pgmoat cannot read on the tables its arguments name", where)
	})
}

// createsCode judges CREATE FUNCTION in LANGUAGE c or internal: code
// pgmoat cannot read, which may reach outside the transaction or be a
// built-in pgmoat judges by name (set_config, setval, dblink_exec) under
// another name.
func (e *env) createsCode(f *pg_query.CreateFunctionStmt, where string, out *[]Effect) {
	lang, as := languageAndBody(f.Options)
	if lang != "c" && lang != "internal" {
		return
	}
	e.literalSensitive = true
	names := nodeStrings(f.Funcname)
	fname := strings.Join(names, ".")
	lib, sym := "", ""
	switch {
	case lang == "internal" && len(as) > 0:
		sym = as[0]
	case len(as) > 1:
		lib, sym = as[0], as[1]
	case len(as) == 1:
		lib = as[0]
		if len(names) > 0 {
			sym = names[len(names)-1]
		}
	}
	what := "CREATE FUNCTION " + fname + " LANGUAGE " + lang
	if lib != "" {
		what += " AS '" + lib + "', '" + sym + "'"
	} else if sym != "" {
		what += " AS '" + sym + "'"
	}
	if escapingCode(lang, lib, sym) {
		e.add(out, OpOpaque, everything(), what+" declares a function that reaches outside the transaction (another connection or the server's files)", where)
		return
	}
	e.add(out, OpOpaque, everything(), what+" declares code pgmoat cannot read, which may reach outside the transaction or be a built-in pgmoat judges by name under another name", where)
}

// languageAndBody reads CREATE FUNCTION's LANGUAGE (sql by default) and
// AS (the body, or a C function's library and symbol).
func languageAndBody(opts []*pg_query.Node) (lang string, as []string) {
	lang = "sql"
	for _, o := range opts {
		if d := o.GetDefElem(); d != nil {
			switch d.Defname {
			case "language":
				lang = strings.ToLower(d.Arg.GetString_().GetSval())
			case "as":
				as = stringList(d.Arg)
			}
		}
	}
	return lang, as
}

// movesFunction judges ALTER FUNCTION ... RENAME TO or SET SCHEMA (verb)
// of a function that reaches outside the transaction: analysis that knows
// it by name (without a catalog, or until the next snapshot) would no
// longer recognise it.
func (e *env) movesFunction(o *pg_query.ObjectWithArgs, verb, where string, out *[]Effect) {
	if o == nil {
		return
	}
	names := nodeStrings(o.Objname)
	e.bindsFunction(names, verb, where, out)
}

// subscription judges CREATE and ALTER SUBSCRIPTION: the apply worker
// writes another server's changes into this database's tables, with
// triggers off, in transactions pgmoat never sees.
func (e *env) subscription(n *pg_query.Node, where string, out *[]Effect) {
	switch s := n.GetNode().(type) {
	case *pg_query.Node_CreateSubscriptionStmt:
		for _, o := range s.CreateSubscriptionStmt.Options {
			if d := o.GetDefElem(); d != nil && d.Defname == "enabled" && !defElemBool(d) {
				return
			}
		}
		e.add(out, OpOpaque, everything(), "CREATE SUBSCRIPTION "+QuoteIdent(s.CreateSubscriptionStmt.Subname)+" applies another server's changes to this database's tables outside any session pgmoat sees", where)
	case *pg_query.Node_AlterSubscriptionStmt:
		a := s.AlterSubscriptionStmt
		switch a.Kind {
		case pg_query.AlterSubscriptionType_ALTER_SUBSCRIPTION_DROP_PUBLICATION, pg_query.AlterSubscriptionType_ALTER_SUBSCRIPTION_SKIP:
			return
		case pg_query.AlterSubscriptionType_ALTER_SUBSCRIPTION_ENABLED:
			for _, o := range a.Options {
				if d := o.GetDefElem(); d != nil && d.Defname == "enabled" && !defElemBool(d) {
					return
				}
			}
		}
		e.add(out, OpOpaque, everything(), "ALTER SUBSCRIPTION "+QuoteIdent(a.Subname)+" changes what another server writes into this database's tables outside any session pgmoat sees", where)
	}
}
