package rules

import (
	"strings"
	"sync"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// What the catalog knows about code and keys: which functions are the
// database's own (not built in) and what they are, which tables run such
// code implicitly when written or read, which unique keys a table has,
// and whether event triggers run on DDL. Analysis uses these to prove a
// statement harmless (a DELETE whose WHERE fixes a unique key of a table
// that runs no code of its own) or to find the code it runs.

// Function is a function or procedure of the database that is not built
// in (its OID is at least FirstNormalObjectId: made by CREATE FUNCTION or
// an extension).
type Function struct {
	Schema, Name string
	Lang         string // sql, plpgsql, c, internal, plperl, ...
	Volatile     byte   // 'v', 's' or 'i' (pg_proc.provolatile)
	Kind         byte   // 'f', 'p', 'a', 'w' (pg_proc.prokind)
	SecDef       bool
	// Escapes says that calling it reaches outside the session's
	// transaction, where no verification can see: another connection
	// (dblink), the server's file system, an untrusted language.
	Escapes bool
	ID      string // oid/xmin: changes when the function is replaced
	// Def is CREATE FUNCTION text (pg_get_functiondef) for SQL and
	// PL/pgSQL functions; for others "library:symbol".
	Def string

	parsed *parsedFunc
}

// parsedFunc is a function's definition parsed once; catalogs loaded later
// share it while the function's OID and xmin stay the same.
type parsedFunc struct {
	once sync.Once
	stmt *pg_query.CreateFunctionStmt
}

// createStmt parses Def once.
func (f *Function) createStmt() (*pg_query.CreateFunctionStmt, string) {
	p := f.parsed
	p.once.Do(func() {
		if f.Lang != "sql" && f.Lang != "plpgsql" || f.Def == "" {
			return
		}
		if checkBounds(f.Def, DefaultLimits) != nil {
			return
		}
		tree, err := pg_query.Parse(f.Def)
		if err != nil || len(tree.Stmts) != 1 {
			return
		}
		p.stmt = tree.Stmts[0].Stmt.GetCreateFunctionStmt()
	})
	return p.stmt, f.Def
}

// reuseParsed makes c's functions share the parses of old's functions of
// the same OID and xmin: a function is parsed once however often the
// catalog is reloaded, and again when it is replaced.
func (c *Catalog) reuseParsed(old *Catalog) {
	if c == nil || old == nil {
		return
	}
	byID := map[string]*parsedFunc{}
	for _, fs := range old.funcs {
		for _, f := range fs {
			byID[f.ID] = f.parsed
		}
	}
	for _, fs := range c.funcs {
		for _, f := range fs {
			if p, ok := byID[f.ID]; ok && f.ID != "" {
				f.parsed = p
			}
		}
	}
}

// codeScope says when a relation runs code of the database's own.
type codeScope uint8

const (
	codeOnInsert codeScope = 1 << iota
	codeOnUpdate
	codeOnDelete
	codeOnTruncate
	codeOnRead
	// codeOnRebuild: REINDEX, CLUSTER, VACUUM FULL, ANALYZE and ALTER
	// TABLE rewrites evaluate index expressions, generated columns and
	// checks of every row.
	codeOnRebuild
)

// scopeLetters are how CatalogQuery rows spell scopes: 'code:iu' runs
// code on INSERT and UPDATE.
var scopeLetters = map[byte]codeScope{'i': codeOnInsert, 'u': codeOnUpdate, 'd': codeOnDelete, 't': codeOnTruncate, 'r': codeOnRead, 'x': codeOnRebuild}

// AddFunction records a function of the database's own.
func (c *Catalog) AddFunction(f *Function) {
	if c.funcs == nil {
		c.funcs = map[string][]*Function{}
	}
	if f.parsed == nil {
		f.parsed = &parsedFunc{}
	}
	c.funcs[f.Name] = append(c.funcs[f.Name], f)
	c.indexFunction(f)
}

// functions returns the database's own functions called name, in schema
// when it is not "".
func (c *Catalog) functions(schema, name string) []*Function {
	if c == nil {
		return nil
	}
	fs := c.funcs[name]
	if schema == "" {
		return fs
	}
	var out []*Function
	for _, f := range fs {
		if f.Schema == schema {
			out = append(out, f)
		}
	}
	return out
}

// hasFunctions reports whether calls need looking up: the database has
// functions of its own, or the catalog knows which are built in (then a
// name that is neither is a function made since the snapshot).
// functionNaming returns a function of the database's own whose
// definition mentions name (a sequence's, say), or nil. It errs towards
// finding one: the name may stand in a comment or a longer name.
func (c *Catalog) functionNaming(name string) *Function {
	if c == nil || name == "" {
		return nil
	}
	for _, fs := range c.funcs {
		for _, f := range fs {
			if strings.Contains(f.Def, name) {
				return f
			}
		}
	}
	return nil
}

func (c *Catalog) hasFunctions() bool { return c != nil && (len(c.funcs) > 0 || len(c.builtins) > 0) }

// AddBuiltin records the name of a built-in function.
func (c *Catalog) AddBuiltin(name string) {
	if c.builtins == nil {
		c.builtins = map[string]bool{}
	}
	c.builtins[name] = true
}

// AddUniqueKey records a unique key of table schema.name: a valid,
// non-partial unique index (or primary key) on plain columns.
func (c *Catalog) AddUniqueKey(schema, name string, cols []string) {
	if c.uniq == nil {
		c.uniq = map[qname][][]string{}
	}
	q := qname{schema, name}
	c.uniq[q] = append(c.uniq[q], cols)
}

// AddCode records that relation schema.name runs code of the database's
// own in scope, and why.
func (c *Catalog) AddCode(schema, name string, scope codeScope, why string) {
	if c.code == nil {
		c.code = map[qname]codeInfo{}
	}
	q := qname{schema, name}
	ci := c.code[q]
	ci.scope |= scope
	if !strings.Contains(ci.why, why) {
		if ci.why != "" {
			ci.why += ", "
		}
		ci.why += why
	}
	c.code[q] = ci
}

type codeInfo struct {
	scope codeScope
	why   string
}

// runsCode returns why relation q runs code of its own in scope, or "".
func (c *Catalog) runsCode(q qname, s codeScope) string {
	if c == nil {
		return ""
	}
	if ci, ok := c.code[q]; ok && ci.scope&s != 0 {
		return ci.why
	}
	return ""
}

// addCodeRow reads a 'code:LETTERS' row.
func (c *Catalog) addCodeRow(letters, schema, name, why string) bool {
	var s codeScope
	for i := 0; i < len(letters); i++ {
		b, ok := scopeLetters[letters[i]]
		if !ok {
			return false
		}
		s |= b
	}
	if s == 0 {
		return false
	}
	c.AddCode(schema, name, s, why)
	return true
}

// addFunctionRow reads a 'fn:LANG:VOL:KIND:FLAGS' row.
func (c *Catalog) addFunctionRow(spec, schema, name, id, def string) bool {
	parts := strings.Split(spec, ":")
	if len(parts) != 4 || len(parts[1]) != 1 || len(parts[2]) != 1 {
		return false
	}
	c.AddFunction(&Function{
		Schema: schema, Name: name, Lang: parts[0], Volatile: parts[1][0], Kind: parts[2][0],
		SecDef: strings.Contains(parts[3], "s"), Escapes: strings.Contains(parts[3], "e"),
		ID: id, Def: def,
	})
	return true
}

// escapeLibraries are shared libraries whose C functions reach outside
// the session's transaction: another connection (dblink, postgres_fdw,
// pg_background's workers), files (adminpack, file_fdw), or heap pages
// changed in place where no rollback undoes it (pg_surgery).
var escapeLibraries = []string{"dblink", "adminpack", "postgres_fdw", "file_fdw", "pg_surgery", "pg_background"}

// escapeCSymbols are C entry points of those libraries, for a copy of one
// loaded under another file name: dblink's all start with dblink.
var escapeCSymbols = []string{
	"pg_file_write", "pg_file_write_v1_1", "pg_file_rename", "pg_file_rename_v1_1",
	"pg_file_unlink", "pg_file_unlink_v1_1", "pg_file_sync", "pg_logdir_ls", "pg_logdir_ls_v1_1",
	"heap_force_kill", "heap_force_freeze",
}

// escapeSymbols are built-in C entry points that do the same: server
// files read and written, large objects imported from and exported to
// files. A function of the database's own that points at one (LANGUAGE
// internal AS 'be_lo_export') is one of them, whatever its name.
var escapeSymbols = []string{
	"be_lo_import", "be_lo_import_with_oid", "be_lo_export",
	"pg_read_file", "pg_read_file_off_len", "pg_read_file_all", "pg_read_file_v2",
	"pg_read_binary_file", "pg_read_binary_file_all", "pg_read_binary_file_off_len",
	"pg_ls_dir", "pg_ls_dir_1arg", "pg_stat_file", "pg_stat_file_1arg",
}

// escapeCondition is SQL over pg_proc p and pg_language l that is true for
// a function that reaches outside the transaction.
func escapeCondition() string {
	var b strings.Builder
	b.WriteString("(NOT l.lanpltrusted AND l.lanname NOT IN ('c', 'internal'))")
	for _, lib := range escapeLibraries {
		b.WriteString(" OR (l.lanname = 'c' AND p.probin LIKE '%" + lib + "%')")
	}
	b.WriteString(" OR (l.lanname = 'c' AND (p.prosrc LIKE 'dblink%' OR p.prosrc IN (" + sqlStrings(escapeCSymbols) + ")))")
	b.WriteString(" OR (l.lanname IN ('c', 'internal') AND p.prosrc IN (" + sqlStrings(escapeSymbols) + "))")
	return b.String()
}

// sqlStrings renders names (which hold no quotes) as a list of SQL
// string constants.
func sqlStrings(names []string) string {
	return "'" + strings.Join(names, "', '") + "'"
}

// userFuncDep is SQL: pg_depend row d refers to a function of the
// database's own.
const userFuncDep = `d.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.refobjid >= 16384`

// codeQuery lists, as CatalogQuery rows, the functions of the database's
// own, the relations that run such code implicitly, the unique keys and
// the event triggers.
var codeQuery = `
UNION ALL
SELECT 'fn:' || l.lanname || ':' || p.provolatile::text || ':' || p.prokind::text || ':'
       || CASE WHEN p.prosecdef THEN 's' ELSE '' END || CASE WHEN ` + escapeCondition() + ` THEN 'e' ELSE '' END,
       n.nspname, p.proname, p.oid::text || '/' || p.xmin::text,
       CASE WHEN l.lanname IN ('sql', 'plpgsql') AND p.prokind IN ('f', 'p') THEN pg_catalog.pg_get_functiondef(p.oid)
            ELSE COALESCE(p.probin, '') || ':' || p.prosrc END
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace JOIN pg_language l ON l.oid = p.prolang
 WHERE p.oid >= 16384 AND n.nspname NOT IN ('pg_catalog', 'information_schema')
UNION ALL
SELECT 'uniq', n.nspname, c.relname, '',
       (SELECT pg_catalog.string_agg(a.attname, E'\x1f' ORDER BY k.ord)
          FROM pg_catalog.unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, ord)
          JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
         WHERE k.ord <= i.indnkeyatts)
  FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE i.indisunique AND i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL
   AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
UNION ALL
SELECT 'code:' || CASE WHEN t.tgtype::int & 4 <> 0 THEN 'i' ELSE '' END || CASE WHEN t.tgtype::int & 8 <> 0 THEN 'd' ELSE '' END
                || CASE WHEN t.tgtype::int & 16 <> 0 THEN 'u' ELSE '' END || CASE WHEN t.tgtype::int & 32 <> 0 THEN 't' ELSE '' END,
       n.nspname, c.relname, '', 'trigger ' || t.tgname
  FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE NOT t.tgisinternal
UNION ALL
SELECT 'code:' || CASE r.ev_type WHEN '2' THEN 'u' WHEN '3' THEN 'i' WHEN '4' THEN 'd' ELSE 'r' END,
       n.nspname, c.relname, '', 'rule ' || r.rulename
  FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE r.rulename <> '_RETURN' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
UNION ALL
SELECT DISTINCT 'code:iu', n.nspname, c.relname, '', 'a default or generated column calling a function'
  FROM pg_attrdef ad JOIN pg_depend d ON d.classid = 'pg_catalog.pg_attrdef'::pg_catalog.regclass AND d.objid = ad.oid
  JOIN pg_class c ON c.oid = ad.adrelid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE ` + userFuncDep + `
UNION ALL
SELECT DISTINCT 'code:iu', n.nspname, c.relname, '', 'a check constraint calling a function'
  FROM pg_constraint k JOIN pg_depend d ON d.classid = 'pg_catalog.pg_constraint'::pg_catalog.regclass AND d.objid = k.oid
  JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE ` + userFuncDep + `
UNION ALL
SELECT DISTINCT 'code:iu', n.nspname, c.relname, '', 'a domain check calling a function'
  FROM pg_constraint k JOIN pg_depend d ON d.classid = 'pg_catalog.pg_constraint'::pg_catalog.regclass AND d.objid = k.oid
  JOIN pg_attribute a ON a.atttypid = k.contypid AND a.attnum > 0 AND NOT a.attisdropped
  JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE k.contypid <> 0 AND ` + userFuncDep + `
UNION ALL
SELECT DISTINCT 'code:iu', n.nspname, c.relname, '', 'an index expression calling a function'
  FROM pg_index i JOIN pg_depend d ON d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = i.indexrelid
  JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE ` + userFuncDep + `
UNION ALL
SELECT DISTINCT 'code:iudr', n.nspname, c.relname, '', 'a row-level security policy calling a function'
  FROM pg_policy p JOIN pg_depend d ON d.classid = 'pg_catalog.pg_policy'::pg_catalog.regclass AND d.objid = p.oid
  JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE ` + userFuncDep + `
UNION ALL
SELECT DISTINCT 'code:r', n.nspname, c.relname, '', 'its query calls a function'
  FROM pg_rewrite r JOIN pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND d.objid = r.oid
  JOIN pg_class c ON c.oid = r.ev_class JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE r.rulename = '_RETURN' AND ` + userFuncDep + `
UNION ALL
SELECT 'evt', '', e.evtname, '', '' FROM pg_event_trigger e WHERE e.evtenabled <> 'D'
UNION ALL
SELECT DISTINCT 'dtrig', n.nspname, c.relname, '', t.tgname
  FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE t.tgdeferrable AND NOT t.tgisinternal AND t.tgenabled <> 'D'
UNION ALL
SELECT DISTINCT 'bi', '', p.proname, '', '' FROM pg_proc p WHERE p.oid < 16384`
