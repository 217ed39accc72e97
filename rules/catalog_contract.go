package rules

import (
	"strings"
	"sync"
)

// What the catalog knows about the contracts of tables and the objects
// that run code: which sequences feed which tables, which indexes are
// unique and on which table, which tables publications publish, which
// functions a table's defaults, checks, indexes, policies, rules,
// triggers and column casts call (and in which events), which functions
// other functions use (an aggregate's support functions), and which
// operators, casts and domains run a function when an expression names
// them. Contract analysis (contract.go) uses these to find the protected
// table a statement changes; side-door analysis (sidedoor.go) to find the
// statements that fire a function reaching outside the transaction.

// fnRef names a function: by OID when CatalogQuery said (a rename does
// not change it), else by schema and name (CatalogFromSQL; schema "" for
// any).
type fnRef struct {
	oid          string
	schema, name string
}

// callFact says that relation rel runs function fn when scope happens to
// it; what names the object that calls it ("default of column x").
type callFact struct {
	rel   qname
	fn    fnRef
	scope codeScope
	what  string
}

// doorFact says that an expression naming an operator or a type runs fn;
// what names the object ("operator public.==>", "cast from text to
// mood").
type doorFact struct {
	fn   fnRef
	what string
}

// indexFact is an index: its table and whether it enforces uniqueness.
type indexFact struct {
	table  qname
	unique bool
}

// contractFacts are the catalog's facts about contracts and code; the
// zero value knows nothing.
type contractFacts struct {
	calls     []callFact
	seqFeeds  map[qname][]qname     // sequence → tables whose defaults or identity it feeds
	indexes   map[qname]indexFact   // index → its table
	pubs      map[string][]qname    // publication → tables it publishes (present: known)
	fnUses    map[string][]fnRef    // function OID → functions it uses
	opDoors   map[string][]doorFact // operator name → what runs when an expression uses it
	typeDoors map[string][]doorFact // type name → what runs when a value is cast to it
	byOID     map[string]*Function

	escOnce sync.Once
	esc     *escapeIndex
	// harmless remembers which relations' code is proven harmless, by
	// harmlessKey (see codeHarmless).
	harmless sync.Map
}

// AddSequenceFeed records that sequence seq feeds table (a column
// default calls nextval on it, or it is an identity or OWNED BY
// sequence of a column of table).
func (c *Catalog) AddSequenceFeed(seqSchema, seq, tableSchema, table string) {
	f := &c.contract
	if f.seqFeeds == nil {
		f.seqFeeds = map[qname][]qname{}
	}
	s, t := qname{seqSchema, seq}, qname{tableSchema, table}
	for _, x := range f.seqFeeds[s] {
		if x == t {
			return
		}
	}
	f.seqFeeds[s] = append(f.seqFeeds[s], t)
}

// AddIndex records that index schema.name is on table, and whether it is
// unique (a unique, primary key or exclusion index).
func (c *Catalog) AddIndex(schema, name, tableSchema, table string, unique bool) {
	f := &c.contract
	if f.indexes == nil {
		f.indexes = map[qname]indexFact{}
	}
	f.indexes[qname{schema, name}] = indexFact{table: qname{tableSchema, table}, unique: unique}
}

// AddPublication records that publication pub exists, and that it
// publishes table schema.name when name is not "".
func (c *Catalog) AddPublication(pub, schema, name string) {
	f := &c.contract
	if f.pubs == nil {
		f.pubs = map[string][]qname{}
	}
	if name == "" {
		if _, ok := f.pubs[pub]; !ok {
			f.pubs[pub] = nil
		}
		return
	}
	f.pubs[pub] = append(f.pubs[pub], qname{schema, name})
}

// addCall records that relation schema.name runs fn in scope.
func (c *Catalog) addCall(schema, name string, fn fnRef, scope codeScope, what string) {
	c.contract.calls = append(c.contract.calls, callFact{rel: qname{schema, name}, fn: fn, scope: scope, what: what})
}

func (c *Catalog) addDoor(m *map[string][]doorFact, name string, fn fnRef, what string) {
	if *m == nil {
		*m = map[string][]doorFact{}
	}
	(*m)[name] = append((*m)[name], doorFact{fn: fn, what: what})
}

func (c *Catalog) addUse(fnOID string, used fnRef) {
	f := &c.contract
	if f.fnUses == nil {
		f.fnUses = map[string][]fnRef{}
	}
	f.fnUses[fnOID] = append(f.fnUses[fnOID], used)
}

// indexFunction records f under its OID (Function.ID is "oid/xmin").
func (c *Catalog) indexFunction(f *Function) {
	oid, _, _ := strings.Cut(f.ID, "/")
	if oid == "" {
		return
	}
	if c.contract.byOID == nil {
		c.contract.byOID = map[string]*Function{}
	}
	c.contract.byOID[oid] = f
}

// oidOf returns f's OID, or "" when it has none (CatalogFromSQL).
func (f *Function) oid() string {
	oid, _, _ := strings.Cut(f.ID, "/")
	return oid
}

// usesOf returns the functions of the database's own that f uses (an
// aggregate's support functions).
func (c *Catalog) usesOf(f *Function) []*Function {
	var out []*Function
	for _, r := range c.contract.fnUses[f.oid()] {
		out = append(out, c.resolveFn(r)...)
	}
	return out
}

// resolveFn returns the functions a reference may name.
func (c *Catalog) resolveFn(r fnRef) []*Function {
	if c == nil {
		return nil
	}
	if r.oid != "" {
		if f := c.contract.byOID[r.oid]; f != nil {
			return []*Function{f}
		}
		return nil
	}
	return c.functions(r.schema, r.name)
}

// addContractRow reads the CatalogQuery rows contractQuery yields.
func (c *Catalog) addContractRow(kind, schema, name, otherSchema, otherName string) bool {
	switch kind {
	case "seq":
		c.AddSequenceFeed(schema, name, otherSchema, otherName)
	case "idx:", "idx:u":
		c.AddIndex(schema, name, otherSchema, otherName, kind == "idx:u")
	case "pub":
		c.AddPublication(otherName, schema, name)
	case "fnuses":
		c.addUse(otherSchema, fnRef{oid: otherName})
	case "door:op":
		c.addDoor(&c.contract.opDoors, name, fnRef{oid: otherSchema}, otherName)
	case "door:type":
		c.addDoor(&c.contract.typeDoors, name, fnRef{oid: otherSchema}, otherName)
	default:
		letters, ok := strings.CutPrefix(kind, "calls:")
		if !ok {
			return false
		}
		s, ok := parseScope(letters)
		if !ok {
			return false
		}
		c.addCall(schema, name, fnRef{oid: otherSchema}, s, otherName)
	}
	return true
}

// parseScope reads scope letters (see scopeLetters).
func parseScope(letters string) (codeScope, bool) {
	var s codeScope
	for i := 0; i < len(letters); i++ {
		b, ok := scopeLetters[letters[i]]
		if !ok {
			return 0, false
		}
		s |= b
	}
	return s, s != 0
}

// depFn is SQL: the dependencies (classid, objid) of catalog objects on
// functions of the database's own (fn), directly or through an operator
// of its own.
const depFn = `(SELECT d.classid, d.objid, d.refobjid AS fn FROM pg_depend d
   WHERE d.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.refobjid >= 16384
 UNION
 SELECT d.classid, d.objid, o.oprcode::oid FROM pg_depend d JOIN pg_operator o ON o.oid = d.refobjid
   WHERE d.refclassid = 'pg_catalog.pg_operator'::pg_catalog.regclass AND d.refobjid >= 16384 AND o.oprcode::oid >= 16384)`

// contractQuery lists, as CatalogQuery rows (see Catalog.AddRow):
//
//	seq        sequence schema, name, table schema, name: the sequence feeds the table
//	idx:[u]    index schema, name, table schema, name (u: unique or exclusion)
//	pub        table schema, name ('' for none), '', publication
//	calls:S    relation schema, name, function OID, what calls it: the relation
//	           runs the function in scope S (letters i u d t r x, see scopeLetters)
//	fnuses     '', '', function OID, OID of a function it uses (aggregate support
//	           functions, BEGIN ATOMIC bodies)
//	door:op    operator schema, name, OID of its function, description
//	door:type  type schema, name, function OID, description: a cast to the type,
//	           or a check of the domain, runs the function
var contractQuery = `
UNION ALL
SELECT DISTINCT 'seq', sn.nspname, s.relname, tn.nspname, t.relname
  FROM pg_depend d JOIN pg_attrdef ad ON ad.oid = d.objid
  JOIN pg_class s ON s.oid = d.refobjid AND s.relkind = 'S' JOIN pg_namespace sn ON sn.oid = s.relnamespace
  JOIN pg_class t ON t.oid = ad.adrelid JOIN pg_namespace tn ON tn.oid = t.relnamespace
 WHERE d.classid = 'pg_catalog.pg_attrdef'::pg_catalog.regclass AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
UNION ALL
SELECT DISTINCT 'seq', sn.nspname, s.relname, tn.nspname, t.relname
  FROM pg_depend d
  JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' JOIN pg_namespace sn ON sn.oid = s.relnamespace
  JOIN pg_class t ON t.oid = d.refobjid JOIN pg_namespace tn ON tn.oid = t.relnamespace
 WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
   AND d.deptype IN ('a', 'i')
UNION ALL
SELECT 'idx:' || CASE WHEN i.indisunique OR i.indisexclusion THEN 'u' ELSE '' END, xn.nspname, x.relname, n.nspname, c.relname
  FROM pg_index i JOIN pg_class x ON x.oid = i.indexrelid JOIN pg_namespace xn ON xn.oid = x.relnamespace
  JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
UNION ALL
SELECT 'pub', '', '', '', p.pubname FROM pg_publication p
UNION ALL
SELECT 'pub', t.schemaname, t.tablename, '', t.pubname FROM pg_publication_tables t
UNION ALL
SELECT DISTINCT 'calls:' || CASE WHEN a.attgenerated = 's' THEN 'iux' ELSE 'iu' END, n.nspname, c.relname, f.fn::text,
       CASE WHEN a.attgenerated = 's' THEN 'generated column ' ELSE 'default of column ' END || a.attname
  FROM ` + depFn + ` f
  JOIN pg_attrdef ad ON f.classid = 'pg_catalog.pg_attrdef'::pg_catalog.regclass AND ad.oid = f.objid
  JOIN pg_attribute a ON a.attrelid = ad.adrelid AND a.attnum = ad.adnum
  JOIN pg_class c ON c.oid = ad.adrelid JOIN pg_namespace n ON n.oid = c.relnamespace
UNION ALL
SELECT DISTINCT 'calls:iux', n.nspname, c.relname, f.fn::text, 'check constraint ' || k.conname
  FROM ` + depFn + ` f
  JOIN pg_constraint k ON f.classid = 'pg_catalog.pg_constraint'::pg_catalog.regclass AND k.oid = f.objid
  JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
UNION ALL
SELECT DISTINCT 'calls:iux', n.nspname, c.relname, f.fn::text, 'check of domain ' || t.typname || ' on column ' || a.attname
  FROM ` + depFn + ` f
  JOIN pg_constraint k ON f.classid = 'pg_catalog.pg_constraint'::pg_catalog.regclass AND k.oid = f.objid AND k.contypid <> 0
  JOIN pg_type t ON t.oid = k.contypid
  JOIN pg_attribute a ON a.atttypid = k.contypid AND a.attnum > 0 AND NOT a.attisdropped
  JOIN pg_class c ON c.oid = a.attrelid AND c.relkind IN ('r', 'p', 'f') JOIN pg_namespace n ON n.oid = c.relnamespace
UNION ALL
SELECT DISTINCT 'calls:iux', n.nspname, c.relname, f.fn::text, 'index ' || x.relname
  FROM ` + depFn + ` f
  JOIN pg_index i ON f.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND i.indexrelid = f.objid
  JOIN pg_class x ON x.oid = i.indexrelid JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
UNION ALL
SELECT DISTINCT 'calls:iudr', n.nspname, c.relname, f.fn::text, 'policy ' || p.polname
  FROM ` + depFn + ` f
  JOIN pg_policy p ON f.classid = 'pg_catalog.pg_policy'::pg_catalog.regclass AND p.oid = f.objid
  JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace
UNION ALL
SELECT DISTINCT 'calls:' || CASE r.ev_type WHEN '1' THEN 'riud' WHEN '2' THEN 'u' WHEN '3' THEN 'i' ELSE 'd' END,
       n.nspname, c.relname, f.fn::text, CASE WHEN r.rulename = '_RETURN' THEN 'query of the view' ELSE 'rule ' || r.rulename END
  FROM ` + depFn + ` f
  JOIN pg_rewrite r ON f.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND r.oid = f.objid
  JOIN pg_class c ON c.oid = r.ev_class JOIN pg_namespace n ON n.oid = c.relnamespace
UNION ALL
SELECT DISTINCT 'calls:' || CASE WHEN t.tgtype::int & 4 <> 0 THEN 'i' ELSE '' END || CASE WHEN t.tgtype::int & 8 <> 0 THEN 'd' ELSE '' END
                || CASE WHEN t.tgtype::int & 16 <> 0 THEN 'u' ELSE '' END || CASE WHEN t.tgtype::int & 32 <> 0 THEN 't' ELSE '' END,
       n.nspname, c.relname, g.fn::text, 'trigger ' || t.tgname
  FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN (SELECT t2.oid, t2.tgfoid AS fn FROM pg_trigger t2 WHERE t2.tgfoid >= 16384
        UNION SELECT f.objid, f.fn FROM ` + depFn + ` f WHERE f.classid = 'pg_catalog.pg_trigger'::pg_catalog.regclass) g ON g.oid = t.oid
 WHERE NOT t.tgisinternal AND t.tgtype::int & 60 <> 0
UNION ALL
SELECT DISTINCT 'calls:iu', n.nspname, c.relname, k.castfunc::text,
       'cast from ' || pg_catalog.format_type(k.castsource, NULL) || ' to ' || pg_catalog.format_type(k.casttarget, NULL) || ' into column ' || a.attname
  FROM pg_cast k JOIN pg_attribute a ON a.atttypid = k.casttarget AND a.attnum > 0 AND NOT a.attisdropped
  JOIN pg_class c ON c.oid = a.attrelid AND c.relkind IN ('r', 'p', 'f') JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE k.castfunc >= 16384 AND k.castcontext IN ('a', 'i')
UNION ALL
SELECT DISTINCT 'fnuses', '', '', f.objid::text, f.fn::text
  FROM ` + depFn + ` f WHERE f.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND f.objid >= 16384
UNION ALL
SELECT 'door:op', n.nspname, o.oprname, o.oprcode::oid::text, 'operator ' || n.nspname || '.' || o.oprname
  FROM pg_operator o JOIN pg_namespace n ON n.oid = o.oprnamespace
 WHERE o.oid >= 16384 AND o.oprcode::oid >= 16384
UNION ALL
SELECT 'door:type', n.nspname, t.typname, k.castfunc::text,
       'cast from ' || pg_catalog.format_type(k.castsource, NULL) || ' to ' || pg_catalog.format_type(k.casttarget, NULL)
  FROM pg_cast k JOIN pg_type t ON t.oid = k.casttarget JOIN pg_namespace n ON n.oid = t.typnamespace
 WHERE k.castfunc >= 16384
UNION ALL
SELECT DISTINCT 'door:type', n.nspname, t.typname, f.fn::text, 'check of domain ' || n.nspname || '.' || t.typname
  FROM ` + depFn + ` f
  JOIN pg_constraint k ON f.classid = 'pg_catalog.pg_constraint'::pg_catalog.regclass AND k.oid = f.objid AND k.contypid <> 0
  JOIN pg_type t ON t.oid = k.contypid JOIN pg_namespace n ON n.oid = t.typnamespace`
