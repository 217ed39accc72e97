package rules

import (
	"fmt"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/proto"
)

// ddlLearner reads, for CatalogFromSQL, what contract and side-door
// analysis need from DDL, where the DDL says it cheaply: functions (their
// language, body or library and symbol), sequences and the tables they
// feed (serial and identity columns, DEFAULT nextval, OWNED BY), indexes
// and their uniqueness (with PostgreSQL's default names for keys),
// triggers, the functions defaults, checks, index expressions, policies
// and views call, operators, casts, domains and aggregates and the
// functions they run, and publications. Functions get IDs of their own
// ("ddl:N") since DDL has no OIDs.
type ddlLearner struct {
	c       *Catalog
	n       int
	domains map[string][]fnRef // domain name → functions its checks call
}

func newDDLLearner(c *Catalog) *ddlLearner {
	return &ddlLearner{c: c, domains: map[string][]fnRef{}}
}

func ddlSchema(s string) string {
	if s == "" {
		return "public"
	}
	return s
}

func ddlRel(rv *pg_query.RangeVar) qname {
	return qname{ddlSchema(rv.Schemaname), rv.Relname}
}

// ddlName splits a qualified name given as its parts.
func ddlName(parts []string) (schema, name string) {
	switch len(parts) {
	case 0:
		return "", ""
	case 1:
		return "public", parts[0]
	}
	return parts[len(parts)-2], parts[len(parts)-1]
}

// learn reads one statement of the DDL; text is its own text.
func (l *ddlLearner) learn(n *pg_query.Node, text string) {
	c := l.c
	switch s := n.Node.(type) {
	case *pg_query.Node_CreateFunctionStmt:
		l.function(s.CreateFunctionStmt, text)
	case *pg_query.Node_CreateSeqStmt:
		seq := ddlRel(s.CreateSeqStmt.Sequence)
		c.AddRelationKind(seq.schema, seq.name, 'S')
		l.ownedBy(seq, s.CreateSeqStmt.Options)
	case *pg_query.Node_AlterSeqStmt:
		l.ownedBy(ddlRel(s.AlterSeqStmt.Sequence), s.AlterSeqStmt.Options)
	case *pg_query.Node_CreateStmt:
		t := ddlRel(s.CreateStmt.Relation)
		for _, el := range s.CreateStmt.TableElts {
			if col := el.GetColumnDef(); col != nil {
				l.column(t, col)
			}
			if k := el.GetConstraint(); k != nil {
				l.constraint(t, k, nil)
			}
		}
		for _, k := range s.CreateStmt.Constraints {
			if k := k.GetConstraint(); k != nil {
				l.constraint(t, k, nil)
			}
		}
	case *pg_query.Node_AlterTableStmt:
		t := ddlRel(s.AlterTableStmt.Relation)
		for _, cn := range s.AlterTableStmt.Cmds {
			cmd := cn.GetAlterTableCmd()
			if cmd == nil {
				continue
			}
			switch cmd.Subtype {
			case pg_query.AlterTableType_AT_AddColumn:
				if col := cmd.Def.GetColumnDef(); col != nil {
					l.column(t, col)
				}
			case pg_query.AlterTableType_AT_AddConstraint:
				if k := cmd.Def.GetConstraint(); k != nil {
					l.constraint(t, k, nil)
				}
			case pg_query.AlterTableType_AT_ColumnDefault:
				if cmd.Def != nil {
					l.expr(t, cmd.Def, codeOnInsert|codeOnUpdate, "default of column "+cmd.Name)
					l.nextval(t, cmd.Def)
				}
			case pg_query.AlterTableType_AT_AddIdentity:
				c.AddSequenceFeed(t.schema, t.name+"_"+cmd.Name+"_seq", t.schema, t.name)
			}
		}
	case *pg_query.Node_IndexStmt:
		ix := s.IndexStmt
		t := ddlRel(ix.Relation)
		name := ix.Idxname
		if name == "" {
			name = t.name + "_idx"
		}
		c.AddRelationKind(t.schema, name, 'i')
		c.AddIndex(t.schema, name, t.schema, t.name, ix.Unique)
		for _, p := range ix.IndexParams {
			if el := p.GetIndexElem(); el != nil && el.Expr != nil {
				l.expr(t, el.Expr, codeOnInsert|codeOnUpdate|codeOnRebuild, "index "+name)
			}
		}
		if ix.WhereClause != nil {
			l.expr(t, ix.WhereClause, codeOnInsert|codeOnUpdate|codeOnRebuild, "index "+name)
		}
	case *pg_query.Node_CreateTrigStmt:
		tr := s.CreateTrigStmt
		t := ddlRel(tr.Relation)
		var scope codeScope
		for bit, sc := range map[int32]codeScope{4: codeOnInsert, 8: codeOnDelete, 16: codeOnUpdate, 32: codeOnTruncate} {
			if tr.Events&bit != 0 {
				scope |= sc
			}
		}
		schema, name := ddlName(nodeStrings(tr.Funcname))
		if len(tr.Funcname) == 1 {
			schema = ""
		}
		if scope != 0 {
			c.addCall(t.schema, t.name, fnRef{schema: schema, name: name}, scope, "trigger "+tr.Trigname)
		}
		if tr.WhenClause != nil {
			l.expr(t, tr.WhenClause, scope, "trigger "+tr.Trigname)
		}
	case *pg_query.Node_CreatePolicyStmt:
		p := s.CreatePolicyStmt
		t := ddlRel(p.Table)
		all := codeOnInsert | codeOnUpdate | codeOnDelete | codeOnRead
		l.expr(t, p.Qual, all, "policy "+p.PolicyName)
		l.expr(t, p.WithCheck, all, "policy "+p.PolicyName)
	case *pg_query.Node_ViewStmt:
		v := ddlRel(s.ViewStmt.View)
		c.AddRelationKind(v.schema, v.name, 'v')
		l.expr(v, s.ViewStmt.Query, codeOnRead|codeOnInsert|codeOnUpdate|codeOnDelete, "query of the view")
	case *pg_query.Node_DefineStmt:
		l.define(s.DefineStmt)
	case *pg_query.Node_CreateCastStmt:
		k := s.CreateCastStmt
		if k.Func != nil && k.Targettype != nil {
			schema, name := ddlName(nodeStrings(k.Func.Objname))
			if len(k.Func.Objname) == 1 {
				schema = ""
			}
			target := nodeStrings(k.Targettype.Names)
			c.addDoor(&c.contract.typeDoors, target[len(target)-1], fnRef{schema: schema, name: name},
				"cast from "+strings.Join(nodeStrings(k.Sourcetype.GetNames()), ".")+" to "+strings.Join(target, "."))
		}
	case *pg_query.Node_CreateDomainStmt:
		d := s.CreateDomainStmt
		names := nodeStrings(d.Domainname)
		dom := names[len(names)-1]
		for _, k := range d.Constraints {
			if kc := k.GetConstraint(); kc != nil && kc.RawExpr != nil {
				for _, r := range l.refs(kc.RawExpr) {
					l.domains[dom] = append(l.domains[dom], r)
					c.addDoor(&c.contract.typeDoors, dom, r, "check of domain "+strings.Join(names, "."))
				}
			}
		}
	case *pg_query.Node_CreatePublicationStmt:
		p := s.CreatePublicationStmt
		if p.ForAllTables {
			return // its tables are every table: left unknown
		}
		c.AddPublication(p.Pubname, "", "")
		for _, o := range p.Pubobjects {
			if spec := o.GetPublicationObjSpec(); spec != nil && spec.Pubtable != nil && spec.Pubtable.Relation != nil {
				t := ddlRel(spec.Pubtable.Relation)
				c.AddPublication(p.Pubname, t.schema, t.name)
			}
		}
	}
}

// function learns CREATE FUNCTION.
func (l *ddlLearner) function(f *pg_query.CreateFunctionStmt, text string) {
	schema, name := ddlName(nodeStrings(f.Funcname))
	lang, as := languageAndBody(f.Options)
	fn := &Function{Schema: schema, Name: name, Lang: lang, Volatile: 'v', Kind: 'f', ID: l.nextID()}
	if f.IsProcedure {
		fn.Kind = 'p'
	}
	switch lang {
	case "sql", "plpgsql":
		fn.Def = text
	case "internal":
		if len(as) > 0 {
			fn.Def = ":" + as[0]
			fn.Escapes = escapingCode(lang, "", as[0])
		}
	default:
		lib, sym := "", name
		if len(as) > 0 {
			lib = as[0]
		}
		if len(as) > 1 {
			sym = as[1]
		}
		fn.Def = lib + ":" + sym
		fn.Escapes = escapingCode(lang, lib, sym)
	}
	l.c.AddFunction(fn)
}

func (l *ddlLearner) nextID() string {
	l.n++
	return fmt.Sprintf("ddl:%d", l.n)
}

// define learns CREATE OPERATOR and CREATE AGGREGATE.
func (l *ddlLearner) define(d *pg_query.DefineStmt) {
	c := l.c
	schema, name := ddlName(nodeStrings(d.Defnames))
	switch d.Kind {
	case pg_query.ObjectType_OBJECT_OPERATOR:
		for _, o := range d.Definition {
			if de := o.GetDefElem(); de != nil && (de.Defname == "function" || de.Defname == "procedure") {
				fs, fn := ddlName(defElemNames(de))
				if len(defElemNames(de)) == 1 {
					fs = ""
				}
				c.addDoor(&c.contract.opDoors, name, fnRef{schema: fs, name: fn}, "operator "+schema+"."+name)
			}
		}
	case pg_query.ObjectType_OBJECT_AGGREGATE:
		agg := &Function{Schema: schema, Name: name, Lang: "internal", Volatile: 'v', Kind: 'a', ID: l.nextID()}
		c.AddFunction(agg)
		for _, o := range d.Definition {
			if de := o.GetDefElem(); de != nil && functionOption[de.Defname] {
				fs, fn := ddlName(defElemNames(de))
				if len(defElemNames(de)) == 1 {
					fs = ""
				}
				c.addUse(agg.oid(), fnRef{schema: fs, name: fn})
			}
		}
	}
}

// column learns a column definition of table t.
func (l *ddlLearner) column(t qname, col *pg_query.ColumnDef) {
	c := l.c
	if isSerial(col.TypeName) {
		seq := t.name + "_" + col.Colname + "_seq"
		c.AddRelationKind(t.schema, seq, 'S')
		c.AddSequenceFeed(t.schema, seq, t.schema, t.name)
	}
	if col.TypeName != nil && len(col.TypeName.Names) > 0 {
		typ := col.TypeName.Names[len(col.TypeName.Names)-1].GetString_().GetSval()
		for _, r := range l.domains[typ] {
			c.addCall(t.schema, t.name, r, codeOnInsert|codeOnUpdate|codeOnRebuild, "check of domain "+typ+" on column "+col.Colname)
		}
	}
	for _, kn := range col.Constraints {
		if k := kn.GetConstraint(); k != nil {
			l.constraint(t, k, col)
		}
	}
}

// constraint learns a column or table constraint of table t.
func (l *ddlLearner) constraint(t qname, k *pg_query.Constraint, col *pg_query.ColumnDef) {
	c := l.c
	colName := ""
	if col != nil {
		colName = col.Colname
	}
	switch k.Contype {
	case pg_query.ConstrType_CONSTR_DEFAULT:
		l.expr(t, k.RawExpr, codeOnInsert|codeOnUpdate, "default of column "+colName)
		l.nextval(t, k.RawExpr)
	case pg_query.ConstrType_CONSTR_GENERATED:
		l.expr(t, k.RawExpr, codeOnInsert|codeOnUpdate|codeOnRebuild, "generated column "+colName)
	case pg_query.ConstrType_CONSTR_IDENTITY:
		c.AddSequenceFeed(t.schema, t.name+"_"+colName+"_seq", t.schema, t.name)
	case pg_query.ConstrType_CONSTR_CHECK:
		l.expr(t, k.RawExpr, codeOnInsert|codeOnUpdate|codeOnRebuild, "check constraint "+k.Conname)
	case pg_query.ConstrType_CONSTR_PRIMARY, pg_query.ConstrType_CONSTR_UNIQUE, pg_query.ConstrType_CONSTR_EXCLUSION:
		name := k.Indexname
		if name == "" {
			name = k.Conname
		}
		if name == "" {
			name = defaultKeyName(t.name, k, colName)
		}
		c.AddRelationKind(t.schema, name, 'i')
		c.AddIndex(t.schema, name, t.schema, t.name, true)
	}
}

// defaultKeyName is the name PostgreSQL gives a key's index when the DDL
// gives none (for names short enough not to be truncated).
func defaultKeyName(table string, k *pg_query.Constraint, col string) string {
	cols := nodeStrings(k.Keys)
	if len(cols) == 0 && col != "" {
		cols = []string{col}
	}
	switch k.Contype {
	case pg_query.ConstrType_CONSTR_PRIMARY:
		return table + "_pkey"
	case pg_query.ConstrType_CONSTR_EXCLUSION:
		return table + "_" + strings.Join(cols, "_") + "_excl"
	}
	return table + "_" + strings.Join(cols, "_") + "_key"
}

// ownedBy learns OWNED BY table.column of a sequence.
func (l *ddlLearner) ownedBy(seq qname, opts []*pg_query.Node) {
	for _, o := range opts {
		d := o.GetDefElem()
		if d == nil || d.Defname != "owned_by" {
			continue
		}
		parts := stringList(d.Arg)
		if len(parts) >= 2 {
			schema, table := ddlName(parts[:len(parts)-1])
			l.c.AddSequenceFeed(seq.schema, seq.name, schema, table)
		}
	}
}

// nextval learns DEFAULT nextval('sequence') of table t.
func (l *ddlLearner) nextval(t qname, n *pg_query.Node) {
	walk(n, func(m proto.Message) bool {
		f, ok := m.(*pg_query.FuncCall)
		if !ok || len(f.Args) == 0 {
			return true
		}
		if names := nodeStrings(f.Funcname); names[len(names)-1] != "nextval" {
			return true
		}
		arg := f.Args[0]
		for arg.GetTypeCast() != nil {
			arg = arg.GetTypeCast().Arg
		}
		if s := arg.GetAConst().GetSval(); s != nil {
			if names, ok := splitQualifiedName(s.Sval); ok {
				schema, seq := ddlName(names)
				l.c.AddSequenceFeed(schema, seq, t.schema, t.name)
			}
		}
		return true
	})
}

// expr records that table t runs, in scope, the functions expression n
// calls (what names the object).
func (l *ddlLearner) expr(t qname, n *pg_query.Node, scope codeScope, what string) {
	if n == nil || scope == 0 {
		return
	}
	for _, r := range l.refs(n) {
		l.c.addCall(t.schema, t.name, r, scope, what)
	}
}

// refs returns the functions an expression may run: the functions it
// calls and those of the operators, casts and domains it names that the
// DDL made.
func (l *ddlLearner) refs(n *pg_query.Node) []fnRef {
	var out []fnRef
	named := func(m map[string][]doorFact, names []string) {
		if len(names) > 0 {
			for _, d := range m[names[len(names)-1]] {
				out = append(out, d.fn)
			}
		}
	}
	walk(n, func(m proto.Message) bool {
		switch x := m.(type) {
		case *pg_query.FuncCall:
			parts := nodeStrings(x.Funcname)
			schema, name := ddlName(parts)
			if len(parts) == 1 {
				schema = ""
			}
			if schema != "pg_catalog" {
				out = append(out, fnRef{schema: schema, name: name})
			}
		case *pg_query.A_Expr:
			named(l.c.contract.opDoors, nodeStrings(x.Name))
		case *pg_query.TypeCast:
			if x.TypeName != nil {
				named(l.c.contract.typeDoors, nodeStrings(x.TypeName.Names))
			}
		}
		return true
	})
	return out
}
