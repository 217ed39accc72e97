package guard

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// The snapshot query. It reads, for every relation protection covers (the
// tables the patterns name and their partitions and inheritance children,
// transitively), what verification compares: identity (OID, name,
// schema, owner, storage, parent), shape (columns, the composite and enum
// types they use), the rows this transaction inserted, updated and
// deleted, and the table's contract. It runs on the session's own
// connection right after the statement it verifies, whatever that
// statement did to the session: every name in it is qualified with
// pg_catalog, every operator spelled OPERATOR(pg_catalog.x), so that a
// search_path, function, operator or type of the session's own cannot
// change what it reads.

// op spells a built-in operator so that no operator of the session's own
// can stand in for it.
func op(o string) string { return "OPERATOR(pg_catalog." + o + ")" }

var (
	eq  = op("=")
	gt  = op(">")
	le  = op("<=")
	add = op("+")
)

// md5Agg is the md5 of rows aggregated in order: a fingerprint that
// changes when any of them does.
func md5Agg(expr, order, from string) string {
	return "pg_catalog.md5(COALESCE((SELECT pg_catalog.string_agg(" + expr + ", ',' ORDER BY " + order + ") FROM " + from + "), ''))"
}

// listAgg is the rows aggregated in order, as a list compared item by
// item (see perColumn).
func listAgg(expr, order, from string) string {
	return "COALESCE((SELECT pg_catalog.string_agg(" + expr + ", ',' ORDER BY " + order + ") FROM " + from + "), '')"
}

// perColumn names the components that are lists of per-column items.
var perColumn = map[string]bool{"columns": true, "column_rules": true, "defaults": true, "types": true, "domains": true, "referenced_by": true}

// fields joins expressions with ':' (NULL as empty).
func fields(exprs ...string) string {
	return "pg_catalog.concat_ws(':', " + strings.Join(exprs, ", ") + ")"
}

// components are the parts of a relation's contract and shape the query
// fingerprints, in column order after the fixed columns. Each is SQL over
// pg_class c and pg_namespace n.
var components = []struct {
	name string
	sql  string
}{
	// Per-column components are lists of "attnum:..." items, not
	// fingerprints: columns may be added, none changed or taken.
	{"columns", listAgg(fields("a.attnum", "a.attname", "a.atttypid", "a.atttypmod", "a.attisdropped"), "a.attnum",
		"pg_catalog.pg_attribute a WHERE a.attrelid "+eq+" c.oid AND a.attnum "+gt+" 0")},
	{"column_rules", listAgg(fields("a.attnum", "a.attnotnull", "a.attidentity", "a.attgenerated", "a.attcollation", "a.atthasdef"), "a.attnum",
		"pg_catalog.pg_attribute a WHERE a.attrelid "+eq+" c.oid AND a.attnum "+gt+" 0 AND NOT a.attisdropped")},
	{"defaults", listAgg(fields("d.adnum", "pg_catalog.md5(d.adbin::pg_catalog.text)"), "d.adnum",
		"pg_catalog.pg_attrdef d WHERE d.adrelid "+eq+" c.oid")},
	// Composite and enum types of the columns: what a row means.
	// An item: attnum:type:md5(name and schema):typtype:md5(composite
	// fields):enum labels, each md5(label, sort order), joined by '|' (a
	// label may be added, none renamed or dropped).
	{"types", listAgg(fields("a.attnum", "t.oid", "pg_catalog.md5("+fields("t.typname", "t.typnamespace")+")", "t.typtype",
		"pg_catalog.md5(COALESCE((SELECT pg_catalog.string_agg("+fields("ta.attname", "ta.atttypid", "ta.atttypmod", "ta.attisdropped")+", ',' ORDER BY ta.attnum) FROM pg_catalog.pg_attribute ta WHERE ta.attrelid "+eq+" t.typrelid AND ta.attnum "+gt+" 0), ''))",
		"COALESCE((SELECT pg_catalog.string_agg(pg_catalog.md5("+fields("e.enumlabel", "e.enumsortorder")+"), '|' ORDER BY e.enumsortorder) FROM pg_catalog.pg_enum e WHERE e.enumtypid "+eq+" t.oid), '')"),
		"a.attnum",
		"pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid "+eq+" a.atttypid WHERE a.attrelid "+eq+" c.oid AND a.attnum "+gt+" 0 AND NOT a.attisdropped AND t.typtype "+eq+" ANY ('{c,e}'::pg_catalog.\"char\"[])")},
	// Domains of the columns: base type, NOT NULL, default and checks.
	{"domains", listAgg(fields("a.attnum", "t.oid", "pg_catalog.md5("+fields("t.typname", "t.typnamespace")+")", "t.typbasetype", "t.typnotnull", "pg_catalog.md5(COALESCE(t.typdefaultbin::pg_catalog.text, ''))",
		"pg_catalog.md5(COALESCE((SELECT pg_catalog.string_agg("+fields("k.conname", "k.convalidated", "pg_catalog.md5(COALESCE(k.conbin::pg_catalog.text, ''))")+", ',' ORDER BY k.conname) FROM pg_catalog.pg_constraint k WHERE k.contypid "+eq+" t.oid), ''))"),
		"a.attnum",
		"pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid "+eq+" a.atttypid WHERE a.attrelid "+eq+" c.oid AND a.attnum "+gt+" 0 AND NOT a.attisdropped AND t.typtype "+eq+" 'd'")},
	// Foreign keys of other tables that reference this one, and whether
	// their table has rows: a new one that can refuse the deletes and key
	// updates the application makes (NO ACTION, RESTRICT) from a table
	// with rows takes away from the contract; one from a new, empty
	// table (a migration adding orders that reference users) does not.
	{"referenced_by", listAgg(fields("k.oid", "k.confdeltype", "k.confupdtype", "pg_catalog.pg_relation_size(k.conrelid) "+gt+" 0"), "k.oid",
		"pg_catalog.pg_constraint k WHERE k.confrelid "+eq+" c.oid AND k.contype "+eq+" 'f' AND k.conrelid <> c.oid")},
	{"constraints", md5Agg(fields("k.conname", "k.contype", "k.convalidated", "k.condeferrable", "k.condeferred", "k.conkey::pg_catalog.text", "k.confrelid", "k.confdeltype", "k.confupdtype", "pg_catalog.md5(COALESCE(k.conbin::pg_catalog.text, ''))"),
		"k.conname", "pg_catalog.pg_constraint k WHERE k.conrelid "+eq+" c.oid")},
	{"unique_indexes", md5Agg(fields("x.indexrelid", "x.indisprimary", "x.indkey::pg_catalog.text", "x.indisvalid", "x.indimmediate", "x.indnullsnotdistinct",
		"pg_catalog.md5(COALESCE(x.indexprs::pg_catalog.text, ''))", "pg_catalog.md5(COALESCE(x.indpred::pg_catalog.text, ''))"),
		"x.indexrelid", "pg_catalog.pg_index x WHERE x.indrelid "+eq+" c.oid AND x.indisunique")},
	{"row_security", "pg_catalog.md5(" + fields("c.relrowsecurity", "c.relforcerowsecurity",
		"(SELECT pg_catalog.string_agg("+fields("p.polname", "p.polcmd", "p.polpermissive", "p.polroles::pg_catalog.text",
			"pg_catalog.md5(COALESCE(p.polqual::pg_catalog.text, ''))", "pg_catalog.md5(COALESCE(p.polwithcheck::pg_catalog.text, ''))")+
			", ',' ORDER BY p.polname) FROM pg_catalog.pg_policy p WHERE p.polrelid "+eq+" c.oid)") + ")"},
	{"triggers", md5Agg(fields("t.tgname", "t.tgenabled", "t.tgfoid", "t.tgtype", "pg_catalog.md5(t.tgargs::pg_catalog.text)", "pg_catalog.md5(COALESCE(t.tgqual::pg_catalog.text, ''))"),
		"t.tgname", "pg_catalog.pg_trigger t WHERE t.tgrelid "+eq+" c.oid AND NOT t.tgisinternal")},
	{"rules", md5Agg(fields("r.rulename", "r.ev_type", "r.is_instead", "r.ev_enabled", "pg_catalog.md5(r.ev_action::pg_catalog.text)", "pg_catalog.md5(COALESCE(r.ev_qual::pg_catalog.text, ''))"),
		"r.rulename", "pg_catalog.pg_rewrite r WHERE r.ev_class "+eq+" c.oid AND r.rulename <> '_RETURN'")},
	{"replica_identity", "pg_catalog.md5(" + fields("c.relreplident",
		"(SELECT x.indexrelid FROM pg_catalog.pg_index x WHERE x.indrelid "+eq+" c.oid AND x.indisreplident LIMIT 1)") + ")"},
	{"publications", md5Agg(fields("p.pubname", "p.pubinsert", "p.pubupdate", "p.pubdelete", "p.pubtruncate"), "p.pubname",
		"pg_catalog.pg_publication p WHERE p.puballtables"+
			" OR EXISTS (SELECT 1 FROM pg_catalog.pg_publication_rel r WHERE r.prpubid "+eq+" p.oid AND r.prrelid "+eq+" c.oid)"+
			" OR EXISTS (SELECT 1 FROM pg_catalog.pg_publication_namespace pn WHERE pn.pnpubid "+eq+" p.oid AND pn.pnnspid "+eq+" c.relnamespace)")},
	// The functions the table's defaults, checks, policies, triggers and
	// index expressions call: their code and privileges.
	{"functions", md5Agg(fields("f.oid", "f.prolang", "f.prosecdef", "f.provolatile", "f.proowner", "pg_catalog.md5(f.prosrc)", "f.probin", "f.proconfig::pg_catalog.text", "f.proacl::pg_catalog.text"),
		"f.oid", "pg_catalog.pg_proc f WHERE f.oid "+op(">=")+" 16384 AND (f.oid "+eq+" ANY (SELECT t.tgfoid FROM pg_catalog.pg_trigger t WHERE t.tgrelid "+eq+" c.oid)"+
			" OR f.oid "+eq+" ANY (SELECT d.refobjid FROM pg_catalog.pg_depend d WHERE d.refclassid "+eq+" 'pg_catalog.pg_proc'::pg_catalog.regclass AND ("+
			"(d.classid "+eq+" 'pg_catalog.pg_attrdef'::pg_catalog.regclass AND d.objid "+eq+" ANY (SELECT ad.oid FROM pg_catalog.pg_attrdef ad WHERE ad.adrelid "+eq+" c.oid))"+
			" OR (d.classid "+eq+" 'pg_catalog.pg_constraint'::pg_catalog.regclass AND d.objid "+eq+" ANY (SELECT k.oid FROM pg_catalog.pg_constraint k WHERE k.conrelid "+eq+" c.oid))"+
			" OR (d.classid "+eq+" 'pg_catalog.pg_policy'::pg_catalog.regclass AND d.objid "+eq+" ANY (SELECT p.oid FROM pg_catalog.pg_policy p WHERE p.polrelid "+eq+" c.oid))"+
			" OR (d.classid "+eq+" 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid "+eq+" ANY (SELECT x.indexrelid FROM pg_catalog.pg_index x WHERE x.indrelid "+eq+" c.oid)))))")},
	// The sequences that feed the table (defaults, identity, OWNED BY):
	// their parameters and privileges.
	{"sequences", md5Agg(fields("s.seqrelid", "s.seqtypid", "s.seqstart", "s.seqincrement", "s.seqmax", "s.seqmin", "s.seqcycle", "sc.relacl::pg_catalog.text"),
		"s.seqrelid", "pg_catalog.pg_sequence s JOIN pg_catalog.pg_class sc ON sc.oid "+eq+" s.seqrelid WHERE s.seqrelid "+eq+" ANY ("+feedingSequences+")")},
}

// feedingSequences is SQL listing the OIDs of the sequences that feed
// relation c: through a default that calls nextval on it, or as an
// identity or OWNED BY sequence.
const feedingSequences = `SELECT d.refobjid FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_attrdef ad ON d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_attrdef'::pg_catalog.regclass AND d.objid OPERATOR(pg_catalog.=) ad.oid
 WHERE ad.adrelid OPERATOR(pg_catalog.=) c.oid AND d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
UNION SELECT d.objid FROM pg_catalog.pg_depend d
 WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refobjid OPERATOR(pg_catalog.=) c.oid
   AND d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass AND d.deptype OPERATOR(pg_catalog.=) ANY ('{a,i}'::pg_catalog."char"[])
   AND EXISTS (SELECT 1 FROM pg_catalog.pg_sequence s WHERE s.seqrelid OPERATOR(pg_catalog.=) d.objid)`

// countPageLimit bounds the tables whose rows the snapshot counts exactly
// (128 pages: 1 MiB, about a millisecond to count); larger ones are
// estimated from the statistics (reltuples, and the live tuples the server
// counts). Counting is for the fraction limit only: the rows a statement
// changed are always the server's exact counts. A count runs in both
// snapshots whenever the session has counts not yet flushed to the
// statistics (they show in the pg_stat_get_xact_* functions too), so a
// larger limit costs every guarded statement on a big table two scans
// (200,000 pgbench rows: about 50 ms each here).
const countPageLimit = 128

// Column positions of a relation row.
const (
	colKind = iota
	colOID
	colSchema
	colName
	colRoot
	colPattern
	colRelkind
	colOwner
	colFilenode
	colParent
	colInserted
	colUpdated
	colDeleted
	colCount
	colEstimate
	colACL
	colSchemaACL
	colColumnACL
	colSequences
	colComponents // the components, in order
)

// Query returns the snapshot query for protect patterns (schema.table
// globs, as rules.Policy.Patterns returns them). The pattern column of a
// row is the index of the first pattern that covers it.
func Query(patterns []string) string {
	cte, ok := coveredCTE(patterns)
	if !ok {
		return settingsQuery
	}
	var b strings.Builder
	b.WriteString(cte + `
SELECT 'rel', c.oid::pg_catalog.text, n.nspname::pg_catalog.text, c.relname::pg_catalog.text, cov.root::pg_catalog.text, cov.pat::pg_catalog.text,
       c.relkind::pg_catalog.text, c.relowner::pg_catalog.text, c.relfilenode::pg_catalog.text,
       COALESCE((SELECT i.inhparent FROM pg_catalog.pg_inherits i WHERE i.inhrelid ` + eq + ` c.oid LIMIT 1), 0)::pg_catalog.text,
       pg_catalog.pg_stat_get_xact_tuples_inserted(c.oid)::pg_catalog.text,
       pg_catalog.pg_stat_get_xact_tuples_updated(c.oid)::pg_catalog.text,
       pg_catalog.pg_stat_get_xact_tuples_deleted(c.oid)::pg_catalog.text,
       CASE WHEN c.relkind ` + eq + ` 'r' AND c.relpages ` + le + ` ` + strconv.Itoa(countPageLimit) + `
             AND pg_catalog.has_table_privilege(c.oid, 'SELECT')
             AND pg_catalog.pg_stat_get_xact_tuples_updated(c.oid) ` + add + ` pg_catalog.pg_stat_get_xact_tuples_deleted(c.oid) ` + gt + ` 0
            THEN (pg_catalog.xpath('/row/c/text()', pg_catalog.query_to_xml(pg_catalog.format('SELECT pg_catalog.count(*) AS c FROM %I.%I', n.nspname, c.relname), false, true, '')))[1]::pg_catalog.text
            ELSE '-1' END,
       pg_catalog.concat_ws(':', c.reltuples::pg_catalog.int8, pg_catalog.pg_stat_get_live_tuples(c.oid)),
       COALESCE(c.relacl, pg_catalog.acldefault('r', c.relowner))::pg_catalog.text,
       COALESCE(n.nspacl, pg_catalog.acldefault('n', n.nspowner))::pg_catalog.text,
       COALESCE((SELECT pg_catalog.string_agg(` + fields("a.attname", "a.attacl::pg_catalog.text") + `, ',' ORDER BY a.attnum) FROM pg_catalog.pg_attribute a WHERE a.attrelid ` + eq + ` c.oid AND a.attacl IS NOT NULL), ''),
       COALESCE((SELECT pg_catalog.string_agg(` + fields("sq.oid", "CASE WHEN pg_catalog.has_sequence_privilege(sq.oid, 'SELECT,USAGE') THEN pg_catalog.pg_sequence_last_value(sq.oid) END", "s.seqmax", "s.seqmin", "s.seqincrement") + `, ',' ORDER BY sq.oid)
                   FROM pg_catalog.pg_class sq JOIN pg_catalog.pg_sequence s ON s.seqrelid ` + eq + ` sq.oid WHERE sq.oid ` + eq + ` ANY (` + feedingSequences + `)), '')`)
	for _, c := range components {
		b.WriteString(",\n       ")
		b.WriteString(c.sql)
	}
	b.WriteString(`
  FROM cov JOIN pg_catalog.pg_class c ON c.oid ` + eq + ` cov.oid
  JOIN pg_catalog.pg_namespace n ON n.oid ` + eq + ` c.relnamespace
UNION ALL ` + settingsQuery)
	return b.String()
}

// coveredCTE returns a WITH clause whose cov(oid, root, pat) lists every
// relation protection covers: those the patterns name, and their
// partitions and inheritance children (root is the relation a pattern
// names, pat the index of the first pattern that covers it). ok is false
// when no pattern names a relation.
func coveredCTE(patterns []string) (string, bool) {
	var vals []string
	for i, p := range patterns {
		schema, table, ok := strings.Cut(p, ".")
		if !ok {
			continue
		}
		vals = append(vals, fmt.Sprintf("(%d, %s, %s)", i, quoteLiteral(globRegexp(schema)), quoteLiteral(globRegexp(table))))
	}
	if len(vals) == 0 {
		return "", false
	}
	return `WITH RECURSIVE prot(oid, root, pat) AS (
  SELECT c.oid, c.oid, pg_catalog.min(p.i)
    FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid ` + eq + ` c.relnamespace
    JOIN (VALUES ` + strings.Join(vals, ", ") + `) p(i, s, r)
      ON pg_catalog.textregexeq(n.nspname::pg_catalog.text, p.s) AND pg_catalog.textregexeq(c.relname::pg_catalog.text, p.r)
   WHERE c.relkind ` + eq + ` ANY ('{r,p,f,m,v}'::pg_catalog."char"[])
   GROUP BY c.oid
UNION
  SELECT i.inhrelid, prot.root, prot.pat FROM pg_catalog.pg_inherits i JOIN prot ON i.inhparent ` + eq + ` prot.oid
), cov AS (
  SELECT DISTINCT ON (oid) oid, root, pat FROM prot ORDER BY oid, pat
)`, true
}

// LocksQuery returns a query for the relations protection covers (see
// Query) on which the session's own transaction holds a lock, one row
// each: schema, name and the strongest lock mode. A prepared transaction
// keeps its locks after the session has gone.
func LocksQuery(patterns []string) string {
	cte, ok := coveredCTE(patterns)
	if !ok {
		return "SELECT '', '', '' WHERE false"
	}
	return cte + `
SELECT n.nspname::pg_catalog.text, c.relname::pg_catalog.text, pg_catalog.string_agg(DISTINCT l.mode, ', ')
  FROM pg_catalog.pg_locks l JOIN cov ON cov.oid ` + eq + ` l.relation
  JOIN pg_catalog.pg_class c ON c.oid ` + eq + ` l.relation
  JOIN pg_catalog.pg_namespace n ON n.oid ` + eq + ` c.relnamespace
 WHERE l.pid ` + eq + ` pg_catalog.pg_backend_pid() AND l.locktype ` + eq + ` 'relation' AND l.granted
 GROUP BY n.nspname, c.relname
 ORDER BY 1, 2`
}

// settingsQuery reads the session settings pgmoat's analysis depends on,
// as one row padded to the relation rows' width.
var settingsQuery = func() string {
	cols := []string{"'set'",
		"pg_catalog.current_setting('search_path')",
		"CURRENT_USER::pg_catalog.text",
		"SESSION_USER::pg_catalog.text",
		"pg_catalog.current_setting('standard_conforming_strings')",
		"pg_catalog.current_setting('client_encoding')",
		"pg_catalog.current_setting('session_replication_role')",
		"pg_catalog.current_setting('track_counts')",
	}
	for len(cols) < colComponents+len(components) {
		cols = append(cols, "''")
	}
	return "SELECT " + strings.Join(cols, ", ")
}()

// globRegexp turns a protect glob (names as PostgreSQL stores them, *
// for any run of characters) into an anchored regular expression.
func globRegexp(g string) string {
	parts := strings.Split(g, "*")
	for i, p := range parts {
		parts[i] = regexp.QuoteMeta(p)
	}
	return "^" + strings.Join(parts, ".*") + "$"
}

// quoteLiteral quotes s as an escape-string literal, which reads the same
// whatever standard_conforming_strings says.
func quoteLiteral(s string) string {
	s = strings.ReplaceAll(s, `\`, `\\`)
	return "E'" + strings.ReplaceAll(s, "'", "''") + "'"
}
