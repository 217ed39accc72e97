package rules

import (
	"fmt"
	"slices"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// Catalog is what pgmoat knows of one database's schema: which relations
// exist in which schema, which tables reference which through foreign keys
// (and with which ON DELETE and ON UPDATE actions), which relations a view reads, and which tables are inheritance children
// or partitions of which. Without a catalog pgmoat is
// conservative (an unqualified name may be in any schema of the search
// path, TRUNCATE ... CASCADE may reach every protected table); with one it
// resolves names as the server would. A Catalog is immutable once handed
// to an Engine.
type Catalog struct {
	schemasOf  map[string][]string // relation name → schemas holding a relation of that name
	fkChildren map[qname][]qname   // referenced table → tables whose foreign keys reference it
	viewBases  map[qname][]qname   // view → relations it reads
	children   map[qname][]qname   // parent → its inheritance children and partitions
	parents    map[qname][]qname   // child or partition → the tables it descends from directly
	fkActs     map[qname][]fkAct   // referenced table → foreign keys to it with an ON DELETE or ON UPDATE action
	schemas    map[string]bool     // schemas that exist
	typeUsers  map[string][]qname  // schema → tables with a column whose type is in it
	relkinds   map[qname]byte      // pg_class.relkind, when the rows said

	funcs         map[string][]*Function // the database's own functions, by name
	uniq          map[qname][][]string   // unique keys: column lists
	code          map[qname]codeInfo     // relations that run code of the database's own
	eventTriggers []string               // enabled event triggers: code that runs on DDL
	builtins      map[string]bool        // names of built-in functions, when the rows said
	deferred      []string               // deferrable constraint triggers of the database's own: table (trigger)

	contract contractFacts // sequences, indexes, publications and the code objects run (catalog_contract.go)
}

type qname struct{ schema, name string }

// fkAct is a foreign key whose referential action changes the rows of
// child when rows of the table it references are deleted or have their
// key updated: kind is EdgeDeleteCascade, EdgeDeleteSet or
// EdgeUpdateAction.
type fkAct struct {
	child qname
	kind  EdgeKind
}

// fkActionEdges returns the edges a foreign key's referential actions
// add, given as pg_constraint stores them (confdeltype, confupdtype: 'a'
// NO ACTION, 'r' RESTRICT, 'c' CASCADE, 'n' SET NULL, 'd' SET DEFAULT).
// NO ACTION and RESTRICT add none: the server refuses to delete or
// re-key referenced rows.
func fkActionEdges(onDelete, onUpdate string) []EdgeKind {
	var out []EdgeKind
	switch onDelete {
	case "c":
		out = append(out, EdgeDeleteCascade)
	case "n", "d":
		out = append(out, EdgeDeleteSet)
	}
	switch onUpdate {
	case "c", "n", "d":
		out = append(out, EdgeUpdateAction)
	}
	return out
}

// NewCatalog returns an empty catalog to fill with Add* before use.
func NewCatalog() *Catalog {
	return &Catalog{schemasOf: map[string][]string{}, fkChildren: map[qname][]qname{}, fkActs: map[qname][]fkAct{}, viewBases: map[qname][]qname{}, children: map[qname][]qname{}, parents: map[qname][]qname{}, schemas: map[string]bool{}, typeUsers: map[string][]qname{}}
}

// AddSchema records that a schema exists (where an unqualified CREATE goes
// depends on which schemas of the search path exist).
func (c *Catalog) AddSchema(schema string) { c.schemas[schema] = true }

// AddRelation records that schema holds a relation (table, view, ...) name.
func (c *Catalog) AddRelation(schema, name string) {
	c.schemas[schema] = true
	c.addRelation(schema, name)
}

// AddRelationKind records, like AddRelation, that schema holds a relation
// name, and its kind as pg_class.relkind stores it ('r' table, 'p'
// partitioned table, 'v' view, ...).
func (c *Catalog) AddRelationKind(schema, name string, relkind byte) {
	c.AddRelation(schema, name)
	if c.relkinds == nil {
		c.relkinds = map[qname]byte{}
	}
	c.relkinds[qname{schema, name}] = relkind
}

func (c *Catalog) addRelation(schema, name string) {
	for _, s := range c.schemasOf[name] {
		if s == schema {
			return
		}
	}
	c.schemasOf[name] = append(c.schemasOf[name], schema)
}

// AddForeignKey records that table child has a foreign key referencing
// table parent (so TRUNCATE parent CASCADE truncates child).
func (c *Catalog) AddForeignKey(childSchema, child, parentSchema, parent string) {
	p := qname{parentSchema, parent}
	c.fkChildren[p] = append(c.fkChildren[p], qname{childSchema, child})
}

// AddForeignKeyActions records, like AddForeignKey, that table child has a
// foreign key referencing table parent, and the key's referential actions
// as pg_constraint stores them (confdeltype, confupdtype: 'a' NO ACTION,
// 'r' RESTRICT, 'c' CASCADE, 'n' SET NULL, 'd' SET DEFAULT): with ON
// DELETE CASCADE, deleting parent's rows deletes child's; with SET NULL or
// SET DEFAULT, it rewrites them; with an ON UPDATE action other than NO
// ACTION or RESTRICT, updating parent's key rewrites child's rows.
func (c *Catalog) AddForeignKeyActions(childSchema, child, parentSchema, parent, onDelete, onUpdate string) {
	c.AddForeignKey(childSchema, child, parentSchema, parent)
	p := qname{parentSchema, parent}
	for _, k := range fkActionEdges(onDelete, onUpdate) {
		c.fkActs[p] = append(c.fkActs[p], fkAct{qname{childSchema, child}, k})
	}
}

// AddViewBase records that view reads relation base (so DML through the
// view reaches base).
func (c *Catalog) AddViewBase(viewSchema, view, baseSchema, base string) {
	v := qname{viewSchema, view}
	c.viewBases[v] = append(c.viewBases[v], qname{baseSchema, base})
}

// AddChild records that table child inherits from parent or is one of its
// partitions (so DELETE, UPDATE, TRUNCATE and DROP of parent reach child,
// and a protected parent protects child).
func (c *Catalog) AddChild(childSchema, child, parentSchema, parent string) {
	p, ch := qname{parentSchema, parent}, qname{childSchema, child}
	c.children[p] = append(c.children[p], ch)
	c.parents[ch] = append(c.parents[ch], p)
}

// AddTypeUse records that table has a column whose type is in typeSchema
// (so DROP SCHEMA typeSchema CASCADE drops that column).
func (c *Catalog) AddTypeUse(schema, table, typeSchema string) {
	q := qname{schema, table}
	if !slices.Contains(c.typeUsers[typeSchema], q) {
		c.typeUsers[typeSchema] = append(c.typeUsers[typeSchema], q)
	}
}

// relationsIn returns the relations the catalog holds in schema.
func (c *Catalog) relationsIn(schema string) []string {
	var out []string
	for name, schemas := range c.schemasOf {
		if slices.Contains(schemas, schema) {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// hasEdge reports whether the catalog holds edge ed from relation q.
func (c *Catalog) hasEdge(q qname, ed edge) bool {
	to, ok := exactRel(ed.to)
	if !ok {
		return false
	}
	var list []qname
	switch ed.kind {
	case EdgeBase:
		list = c.viewBases[q]
	case EdgeChild:
		list = c.children[q]
	case EdgeReferencedBy:
		list = c.fkChildren[q]
	case EdgeDeleteCascade, EdgeDeleteSet, EdgeUpdateAction:
		return slices.Contains(c.fkActs[q], fkAct{to, ed.kind})
	}
	return slices.Contains(list, to)
}

func (c *Catalog) has(schema, name string) bool {
	for _, s := range c.schemasOf[name] {
		if s == schema {
			return true
		}
	}
	return false
}

// CatalogQuery lists what a Catalog needs from a live database, one row
// per fact: (kind, schema, name, other_schema, other_name) where kind is
// 'ns' (a schema; name is empty), 'rel' (a relation), 'fk:DU' (name has a
// foreign key to other, whose ON DELETE and ON UPDATE actions are D and U,
// pg_constraint's confdeltype and confupdtype; see AddForeignKeyActions),
// 'view' (view name reads other), 'inh' (name inherits from other or is
// one of its partitions) or 'type' (table name has a column whose type is
// in schema other_schema). The actions ride in the kind so that every row
// keeps its five columns. Feed the rows to Catalog.AddRow.
var CatalogQuery = `
SELECT 'ns', n.nspname, ''::name, NULL, NULL
  FROM pg_namespace n
 WHERE n.nspname NOT LIKE 'pg_temp%' AND n.nspname NOT LIKE 'pg_toast%'
UNION ALL
SELECT 'rel', n.nspname, c.relname, '', c.relkind::text
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r','p','v','m','f','S','i','I')
   AND n.nspname NOT IN ('pg_toast') AND n.nspname NOT LIKE 'pg_temp%' AND n.nspname NOT LIKE 'pg_toast_temp%'
UNION ALL
SELECT 'fk:' || k.confdeltype::text || k.confupdtype::text, cn.nspname, cc.relname, pn.nspname, pc.relname
  FROM pg_constraint k
  JOIN pg_class cc ON cc.oid = k.conrelid JOIN pg_namespace cn ON cn.oid = cc.relnamespace
  JOIN pg_class pc ON pc.oid = k.confrelid JOIN pg_namespace pn ON pn.oid = pc.relnamespace
 WHERE k.contype = 'f'
UNION ALL
SELECT DISTINCT 'view', vn.nspname, v.relname, bn.nspname, b.relname
  FROM pg_rewrite r
  JOIN pg_class v ON v.oid = r.ev_class JOIN pg_namespace vn ON vn.oid = v.relnamespace
  JOIN pg_depend d ON d.objid = r.oid AND d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
  JOIN pg_class b ON b.oid = d.refobjid AND b.oid <> v.oid JOIN pg_namespace bn ON bn.oid = b.relnamespace
UNION ALL
SELECT 'inh', cn.nspname, cc.relname, pn.nspname, pc.relname
  FROM pg_inherits i
  JOIN pg_class cc ON cc.oid = i.inhrelid JOIN pg_namespace cn ON cn.oid = cc.relnamespace
  JOIN pg_class pc ON pc.oid = i.inhparent JOIN pg_namespace pn ON pn.oid = pc.relnamespace
 WHERE cc.relkind IN ('r','p','f')
UNION ALL
SELECT DISTINCT 'type', n.nspname, c.relname, tn.nspname, NULL
  FROM pg_attribute a
  JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_type t ON t.oid = a.atttypid JOIN pg_namespace tn ON tn.oid = t.typnamespace
 WHERE c.relkind IN ('r','p','f') AND a.attnum > 0 AND NOT a.attisdropped
   AND tn.nspname NOT IN ('pg_catalog', 'information_schema') AND tn.oid <> n.oid` + codeQuery + contractQuery

// AddRow adds one row of CatalogQuery's result.
func (c *Catalog) AddRow(kind, schema, name, otherSchema, otherName string) error {
	switch kind {
	case "ns":
		c.AddSchema(schema)
	case "rel":
		if len(otherName) == 1 {
			c.AddRelationKind(schema, name, otherName[0])
		} else {
			c.AddRelation(schema, name)
		}
	case "uniq":
		if otherName != "" {
			c.AddUniqueKey(schema, name, strings.Split(otherName, "\x1f"))
		}
	case "evt":
		c.eventTriggers = append(c.eventTriggers, name)
	case "bi":
		c.AddBuiltin(name)
	case "dtrig":
		c.deferred = append(c.deferred, qualified(schema, name)+" ("+otherName+")")
	case "fk":
		c.AddForeignKey(schema, name, otherSchema, otherName)
	case "view":
		c.AddViewBase(schema, name, otherSchema, otherName)
	case "inh":
		c.AddChild(schema, name, otherSchema, otherName)
	case "type":
		c.AddTypeUse(schema, name, otherSchema)
	default:
		if a, ok := strings.CutPrefix(kind, "fk:"); ok && len(a) == 2 {
			c.AddForeignKeyActions(schema, name, otherSchema, otherName, a[:1], a[1:])
			return nil
		}
		if scope, ok := strings.CutPrefix(kind, "code:"); ok && c.addCodeRow(scope, schema, name, otherName) {
			return nil
		}
		if spec, ok := strings.CutPrefix(kind, "fn:"); ok && c.addFunctionRow(spec, schema, name, otherSchema, otherName) {
			return nil
		}
		if c.addContractRow(kind, schema, name, otherSchema, otherName) {
			return nil
		}
		return fmt.Errorf("catalog row: unknown kind %q", kind)
	}
	return nil
}

// CatalogFromSQL builds a Catalog from DDL such as a schema dump or a
// migration set: CREATE TABLE (with REFERENCES, FOREIGN KEY and their ON
// DELETE and ON UPDATE actions, INHERITS and PARTITION OF), CREATE VIEW / MATERIALIZED VIEW, CREATE TABLE AS and
// ALTER TABLE ... ADD FOREIGN KEY / INHERIT / ATTACH PARTITION; and what
// contract and side-door analysis need (see ddlLearner): functions,
// sequences and what they feed, indexes, triggers, the functions
// defaults, checks, indexes, policies and views call, operators, casts,
// domains, aggregates and publications.
// Unqualified names go to schema public.
func CatalogFromSQL(ddl string) (*Catalog, error) {
	tree, err := pg_query.Parse(ddl)
	if err != nil {
		return nil, fmt.Errorf("catalog: %w", err)
	}
	c := NewCatalog()
	rel := func(rv *pg_query.RangeVar) qname {
		s := rv.Schemaname
		if s == "" {
			s = "public"
		}
		return qname{s, rv.Relname}
	}
	fks := func(child qname, cons []*pg_query.Node) {
		for _, n := range cons {
			if k := n.GetConstraint(); k != nil && k.Contype == pg_query.ConstrType_CONSTR_FOREIGN && k.Pktable != nil {
				p := rel(k.Pktable)
				c.AddForeignKeyActions(child.schema, child.name, p.schema, p.name, k.FkDelAction, k.FkUpdAction)
			}
		}
	}
	learner := newDDLLearner(c)
	for _, raw := range tree.Stmts {
		learner.learn(raw.Stmt, stmtSlice(ddl, raw))
		switch s := raw.Stmt.Node.(type) {
		case *pg_query.Node_CreateSchemaStmt:
			c.AddSchema(s.CreateSchemaStmt.Schemaname)
		case *pg_query.Node_CreateStmt:
			t := rel(s.CreateStmt.Relation)
			c.AddRelation(t.schema, t.name)
			for _, el := range s.CreateStmt.TableElts {
				if col := el.GetColumnDef(); col != nil {
					fks(t, col.Constraints)
					if col.TypeName != nil {
						if n := nodeStrings(col.TypeName.Names); len(n) == 2 && n[0] != "pg_catalog" && n[0] != t.schema {
							c.AddTypeUse(t.schema, t.name, n[0])
						}
					}
				}
			}
			// Table constraints (FOREIGN KEY (...) REFERENCES) are elements too.
			fks(t, s.CreateStmt.TableElts)
			fks(t, s.CreateStmt.Constraints)
			for _, n := range s.CreateStmt.InhRelations {
				if rv := n.GetRangeVar(); rv != nil {
					p := rel(rv)
					c.AddChild(t.schema, t.name, p.schema, p.name)
				}
			}
		case *pg_query.Node_CreateSeqStmt:
			q := rel(s.CreateSeqStmt.Sequence)
			c.AddRelation(q.schema, q.name)
		case *pg_query.Node_IndexStmt:
			if s.IndexStmt.Idxname != "" && s.IndexStmt.Relation != nil {
				t := rel(s.IndexStmt.Relation)
				c.AddRelation(t.schema, s.IndexStmt.Idxname)
			}
		case *pg_query.Node_ViewStmt:
			v := rel(s.ViewStmt.View)
			c.AddRelation(v.schema, v.name)
			for _, rv := range rangeVars(s.ViewStmt.Query) {
				b := rel(rv)
				c.AddViewBase(v.schema, v.name, b.schema, b.name)
			}
		case *pg_query.Node_CreateTableAsStmt:
			t := rel(s.CreateTableAsStmt.Into.Rel)
			c.AddRelation(t.schema, t.name)
			if s.CreateTableAsStmt.Objtype == pg_query.ObjectType_OBJECT_MATVIEW {
				for _, rv := range rangeVars(s.CreateTableAsStmt.Query) {
					b := rel(rv)
					c.AddViewBase(t.schema, t.name, b.schema, b.name)
				}
			}
		case *pg_query.Node_AlterTableStmt:
			t := rel(s.AlterTableStmt.Relation)
			for _, cmd := range s.AlterTableStmt.Cmds {
				ac := cmd.GetAlterTableCmd()
				if ac == nil || ac.Def == nil {
					continue
				}
				switch ac.Subtype {
				case pg_query.AlterTableType_AT_AddConstraint:
					fks(t, []*pg_query.Node{ac.Def})
				case pg_query.AlterTableType_AT_AddInherit:
					if rv := ac.Def.GetRangeVar(); rv != nil {
						p := rel(rv)
						c.AddChild(t.schema, t.name, p.schema, p.name)
					}
				case pg_query.AlterTableType_AT_AttachPartition:
					if pc := ac.Def.GetPartitionCmd(); pc != nil && pc.Name != nil {
						ch := rel(pc.Name)
						c.AddChild(ch.schema, ch.name, t.schema, t.name)
					}
				}
			}
		}
	}
	return c, nil
}
