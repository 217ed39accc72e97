package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgmoat/pgmoat/rules"
)

// What an attack case is judged by: a snapshot, taken directly on the server
// before and after the case, of everything the application depends on in
// each protected table (the relations the policy names and every partition
// and inheritance child of them) — existence and identity, columns, rows and
// contents, the contract (constraints, indexes, triggers, rules, policies,
// privileges, replica identity, publications, sequences, the types and
// functions the columns use), the database and the application's role — and
// the answers of the application probe. A refused case must change none of
// it.

// attackProtected are the relations the policy protects in the corpus's
// schema, by pattern (schema, name; "*" for every table of the schema).
var attackProtected = [][2]string{
	{"public", "accounts"}, {"public", "orders"}, {"public", "events"}, {"public", "profiles"}, {"ledger", "*"},
}

// attackPolicy is pgmoat's configuration for the corpus: those tables
// protected, the default rules.
func attackPolicy() string {
	var patterns []string
	for _, p := range attackProtected {
		patterns = append(patterns, p[0]+"."+p[1])
	}
	return "policy:\n  protect: [" + strings.Join(patterns, ", ") + "]\n"
}

// dbState is a snapshot: fact name → value.
type dbState map[string]string

// diff lists what changed from s to after, one line per fact, sorted.
func (s dbState) diff(after dbState) []string {
	var out []string
	for k, v := range s {
		w, ok := after[k]
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("%s: %s → (gone)", k, v))
		case v != w:
			out = append(out, fmt.Sprintf("%s: %s → %s", k, v, w))
		}
	}
	for k, w := range after {
		if _, ok := s[k]; !ok {
			out = append(out, fmt.Sprintf("%s: (none) → %s", k, w))
		}
	}
	sort.Strings(out)
	return out
}

// protectedRelations returns the OIDs and names of the protected relations
// and all their descendants (partitions, inheritance children), as they are
// now.
func protectedRelations(ctx context.Context, conn *pgx.Conn) (map[uint32]string, error) {
	var schemas, names []string
	for _, p := range attackProtected {
		schemas, names = append(schemas, p[0]), append(names, p[1])
	}
	rows, err := conn.Query(ctx, `
WITH RECURSIVE roots AS (
    SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN unnest($1::text[], $2::text[]) AS p(nsp, rel) ON p.nsp = n.nspname AND (p.rel = '*' OR p.rel = c.relname)
    WHERE c.relkind IN ('r', 'p')
), tree AS (
    SELECT oid FROM roots
    UNION SELECT i.inhrelid FROM pg_inherits i JOIN tree t ON i.inhparent = t.oid
)
SELECT c.oid, n.nspname || '.' || c.relname FROM tree JOIN pg_class c ON c.oid = tree.oid
JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p')`, schemas, names)
	if err != nil {
		return nil, err
	}
	out := map[uint32]string{}
	var oid uint32
	var name string
	_, err = pgx.ForEachRow(rows, []any{&oid, &name}, func() error {
		out[oid] = name
		return nil
	})
	return out, err
}

// relationFacts are catalog queries over the protected relations ($1, an
// oid[]); each row is (relation oid, fact, value). A relation that is gone
// has no row.
var relationFacts = []string{
	// Identity and what the table is.
	`SELECT c.oid, 'relation', format('%s.%s kind=%s persistence=%s owner=%s of=%s parents=%s bound=%s',
        n.nspname, c.relname, c.relkind, c.relpersistence, pg_get_userbyid(c.relowner),
        coalesce(c.reloftype::regtype::text, '-'),
        (SELECT coalesce(string_agg(i.inhparent::regclass::text, ',' ORDER BY i.inhseqno), '-') FROM pg_inherits i WHERE i.inhrelid = c.oid),
        coalesce(pg_get_expr(c.relpartbound, c.oid), '-'))
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = ANY($1)`,
	// Privileges, row-level security, replica identity; the schema's too.
	`SELECT c.oid, 'access', format('acl=%s rls=%s force_rls=%s replica_identity=%s schema_owner=%s schema_acl=%s',
        c.relacl, c.relrowsecurity, c.relforcerowsecurity, c.relreplident, pg_get_userbyid(n.nspowner), n.nspacl)
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = ANY($1)`,
	// Columns: name, type, nullability, default, identity, generation,
	// collation, privileges; and what their types are made of.
	`SELECT a.attrelid, 'column ' || a.attnum, format('%s %s notnull=%s default=%s identity=%s generated=%s collation=%s acl=%s dropped=%s',
        a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid),
        a.attidentity, a.attgenerated, a.attcollation, a.attacl, a.attisdropped)
     FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
     WHERE a.attrelid = ANY($1) AND a.attnum > 0`,
	`SELECT a.attrelid, 'column ' || a.attnum || ' type', format('%s type=%s enum=%s domain=%s/%s/%s checks=%s fields=%s',
        a.attname, t.oid::regtype, 
        (SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = t.oid),
        nullif(t.typbasetype, 0)::regtype, t.typnotnull, t.typdefault,
        (SELECT string_agg(co.conname || ' ' || pg_get_constraintdef(co.oid) || ' valid=' || co.convalidated, '; ' ORDER BY co.conname)
           FROM pg_constraint co WHERE co.contypid = t.oid),
        (SELECT string_agg(f.attname || ' ' || format_type(f.atttypid, f.atttypmod), ',' ORDER BY f.attnum)
           FROM pg_attribute f WHERE f.attrelid = t.typrelid AND f.attnum > 0 AND NOT f.attisdropped))
     FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
     WHERE a.attrelid = ANY($1) AND a.attnum > 0 AND NOT a.attisdropped AND t.typtype IN ('e', 'd', 'c')`,
	// Constraints on the table, and foreign keys of other tables that point
	// at it (they decide whether the application's DELETE works).
	`SELECT co.conrelid, 'constraint ' || co.conname, format('%s valid=%s deferrable=%s', pg_get_constraintdef(co.oid), co.convalidated, co.condeferrable)
     FROM pg_constraint co WHERE co.conrelid = ANY($1)`,
	`SELECT co.confrelid, 'referenced by ' || co.conrelid::regclass || '.' || co.conname, format('%s valid=%s', pg_get_constraintdef(co.oid), co.convalidated)
     FROM pg_constraint co WHERE co.confrelid = ANY($1) AND co.contype = 'f'`,
	`SELECT i.indrelid, 'index ' || i.indexrelid::regclass, format('%s unique=%s valid=%s ready=%s replident=%s',
        pg_get_indexdef(i.indexrelid), i.indisunique, i.indisvalid, i.indisready, i.indisreplident)
     FROM pg_index i WHERE i.indrelid = ANY($1)`,
	// Triggers (internal ones too: DISABLE TRIGGER ALL switches foreign
	// keys off), with the source of the function they run.
	`SELECT tg.tgrelid, 'trigger ' || coalesce(co.conname || ' (' || tg.tgname || ')', tg.tgname),
        format('enabled=%s %s function=%s', tg.tgenabled, CASE WHEN tg.tgisinternal THEN 'internal' ELSE pg_get_triggerdef(tg.oid) END,
        md5(coalesce(p.prosrc, '') || coalesce(p.probin, '') || coalesce(array_to_string(p.proconfig, ','), '') || p.prosecdef::text))
     FROM pg_trigger tg JOIN pg_proc p ON p.oid = tg.tgfoid LEFT JOIN pg_constraint co ON co.oid = tg.tgconstraint
     WHERE tg.tgrelid = ANY($1)`,
	`SELECT r.ev_class, 'rule ' || r.rulename, format('enabled=%s %s', r.ev_enabled, pg_get_ruledef(r.oid))
     FROM pg_rewrite r WHERE r.ev_class = ANY($1) AND r.rulename <> '_RETURN'`,
	`SELECT p.polrelid, 'policy ' || p.polname, format('cmd=%s permissive=%s roles=%s using=%s check=%s',
        p.polcmd, p.polpermissive, (SELECT string_agg(CASE WHEN r = 0 THEN 'public' ELSE pg_get_userbyid(r) END, ',') FROM unnest(p.polroles) r),
        pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid))
     FROM pg_policy p WHERE p.polrelid = ANY($1)`,
	// Publications that publish the table, and what they publish.
	`SELECT c.oid, 'publication ' || pt.pubname, format('insert=%s update=%s delete=%s truncate=%s',
        pb.pubinsert, pb.pubupdate, pb.pubdelete, pb.pubtruncate)
     FROM pg_publication_tables pt JOIN pg_publication pb ON pb.pubname = pt.pubname
     JOIN pg_namespace n ON n.nspname = pt.schemaname JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename
     WHERE c.oid = ANY($1)`,
	// Sequences that feed the columns (serial, identity, OWNED BY), and
	// sequences and functions the defaults call.
	`SELECT d.refobjid, 'sequence ' || s.seqrelid::regclass, format('increment=%s min=%s max=%s start=%s cycle=%s owner=%s acl=%s',
        s.seqincrement, s.seqmin, s.seqmax, s.seqstart, s.seqcycle, pg_get_userbyid(c.relowner), c.relacl)
     FROM pg_depend d JOIN pg_sequence s ON s.seqrelid = d.objid JOIN pg_class c ON c.oid = s.seqrelid
     WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass AND d.refobjid = ANY($1) AND d.deptype IN ('a', 'i')`,
	`SELECT ad.adrelid, 'default ' || ad.adnum || ' calls ' || d.refobjid::regprocedure,
        format('source=%s definer=%s config=%s volatile=%s acl=%s owner=%s', md5(coalesce(p.prosrc, '') || coalesce(p.probin, '')),
        p.prosecdef, p.proconfig, p.provolatile, p.proacl, pg_get_userbyid(p.proowner))
     FROM pg_attrdef ad JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid AND d.refclassid = 'pg_proc'::regclass
     JOIN pg_proc p ON p.oid = d.refobjid WHERE ad.adrelid = ANY($1)`,
	`SELECT ad.adrelid, 'default ' || ad.adnum || ' uses ' || d.refobjid::regclass, format('acl=%s', c.relacl)
     FROM pg_attrdef ad JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid AND d.refclassid = 'pg_class'::regclass
     JOIN pg_class c ON c.oid = d.refobjid WHERE ad.adrelid = ANY($1) AND c.relkind = 'S'`,
}

// databaseFacts are about the case's database ($1) and the application's
// role ($2); each row is (fact, value).
var databaseFacts = []string{
	`SELECT 'database', format('%s allow_connections=%s connection_limit=%s acl=%s owner=%s',
        datname, datallowconn, datconnlimit, datacl, pg_get_userbyid(datdba)) FROM pg_database WHERE oid = $1`,
	`SELECT 'database settings', coalesce(array_to_string(setconfig, ','), '') FROM pg_db_role_setting WHERE setdatabase = $1 AND setrole = 0`,
	`SELECT 'app role', format('%s login=%s valid_until=%s connection_limit=%s inherit=%s password=%s member_of=%s',
        r.rolname, r.rolcanlogin, r.rolvaliduntil, r.rolconnlimit, r.rolinherit, md5(coalesce(r.rolpassword, '')),
        (SELECT string_agg(m.roleid::regrole::text, ',' ORDER BY m.roleid::regrole::text) FROM pg_auth_members m WHERE m.member = r.oid))
     FROM pg_authid r WHERE r.oid = $2`,
	`SELECT 'settings of every role in every database', array_to_string(setconfig, ',') FROM pg_db_role_setting WHERE setrole = 0 AND setdatabase = 0`,
	`SELECT 'app role settings in ' || CASE WHEN setdatabase = 0 THEN 'every database' ELSE 'this database' END,
        array_to_string(setconfig, ',') FROM pg_db_role_setting WHERE setrole = $2 AND setdatabase IN (0, $1)`,
	`SELECT 'prepared transactions', count(*)::text FROM pg_prepared_xacts WHERE database = (SELECT datname FROM pg_database WHERE oid = $1)`,
	`SELECT 'ALTER SYSTEM ' || name, coalesce(setting, '') FROM pg_file_settings WHERE sourcefile LIKE '%postgresql.auto.conf'`,
}

// snapshotter takes snapshots of one case database.
type snapshotter struct {
	conn   *pgx.Conn // superuser, directly to the case database
	rels   map[uint32]string
	dbOID  uint32
	appOID uint32
	probe  func(ctx context.Context) dbState
}

// snapshot reads every fact. Errors (a table locked by a prepared
// transaction, say) become the fact's value rather than failing the test.
func (s *snapshotter) snapshot(ctx context.Context) dbState {
	st := dbState{}
	oids := make([]uint32, 0, len(s.rels))
	for oid := range s.rels {
		oids = append(oids, oid)
	}
	for _, q := range relationFacts {
		rows, err := s.conn.Query(ctx, q, oids)
		if err != nil {
			st["error: "+rules.Shorten(q, 60)] = err.Error()
			continue
		}
		var oid uint32
		var fact, value *string
		_, err = pgx.ForEachRow(rows, []any{&oid, &fact, &value}, func() error {
			st[fmt.Sprintf("%s: %s", s.rels[oid], deref(fact))] = deref(value)
			return nil
		})
		if err != nil {
			st["error: "+rules.Shorten(q, 60)] = err.Error()
		}
	}
	for oid, name := range s.rels {
		if _, ok := st[name+": relation"]; !ok {
			st[name+": relation"] = "(gone)"
		}
		st[name+": rows"] = s.contents(ctx, oid)
	}
	for _, q := range databaseFacts {
		rows, err := s.conn.Query(ctx, q, s.dbOID, s.appOID)
		if err != nil {
			st["error: "+rules.Shorten(q, 60)] = err.Error()
			continue
		}
		var fact, value *string
		_, err = pgx.ForEachRow(rows, []any{&fact, &value}, func() error {
			st[deref(fact)] = deref(value)
			return nil
		})
		if err != nil {
			st["error: "+rules.Shorten(q, 60)] = err.Error()
		}
	}
	for k, v := range s.probe(ctx) {
		st[k] = v
	}
	return st
}

func deref(s *string) string {
	if s == nil {
		return "NULL"
	}
	return *s
}

// contents returns a relation's row count and a checksum of its rows
// (children's rows included, as a query of the table sees them).
func (s *snapshotter) contents(ctx context.Context, oid uint32) string {
	var name string
	if err := s.conn.QueryRow(ctx, "SELECT oid::regclass::text FROM pg_class WHERE oid = $1", oid).Scan(&name); err != nil {
		return "(gone)"
	}
	var n int64
	var sum string
	err := s.conn.QueryRow(ctx, fmt.Sprintf(
		"SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) FROM %s t", name)).Scan(&n, &sum)
	if err != nil {
		return "error: " + errText(err)
	}
	return fmt.Sprintf("%d rows, md5 %s", n, sum)
}

// errText is an error as the facts record it: SQLSTATE and message for a
// server error.
func errText(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return fmt.Sprintf("ERROR %s: %s", pe.Code, pe.Message)
	}
	return err.Error()
}

// probeBlock is one protected table's ordinary queries (probe.sql).
type probeBlock struct {
	table string
	stmts []string
}

func loadProbe(t testing.TB) []probeBlock {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(attacksDir, "probe.sql"))
	if err != nil {
		t.Fatal(err)
	}
	var blocks []probeBlock
	var buf []string
	flush := func() {
		if len(blocks) == 0 {
			buf = nil
			return
		}
		stmts, err := splitSQL(strings.Join(buf, "\n"))
		if err != nil {
			t.Fatalf("probe.sql: %v", err)
		}
		blocks[len(blocks)-1].stmts = append(blocks[len(blocks)-1].stmts, stmts...)
		buf = nil
	}
	for _, line := range strings.Split(string(data), "\n") {
		if table, ok := strings.CutPrefix(line, "-- probe: "); ok {
			flush()
			blocks = append(blocks, probeBlock{table: strings.TrimSpace(table)})
			continue
		}
		buf = append(buf, line)
	}
	flush()
	if len(blocks) == 0 {
		t.Fatal("probe.sql: no probe blocks")
	}
	return blocks
}

// runProbe logs in as the application (a new session, as an application
// server starting would) and runs every block in one transaction that it
// rolls back, each statement under a savepoint. Every answer is a fact.
func runProbe(ctx context.Context, connString string, blocks []probeBlock) dbState {
	st := dbState{}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	conn, err := pgconn.Connect(ctx, connString)
	if err != nil {
		st["probe: connect"] = "error: " + errText(err)
		return st
	}
	defer conn.Close(context.Background())
	st["probe: connect"] = "ok"
	// exec runs sql (one Query message) and returns the answer of its
	// statement number nth (0-based), or the first error.
	exec := func(sql string, nth int) string {
		res, err := conn.Exec(ctx, sql).ReadAll()
		if err != nil {
			return "error: " + errText(err)
		}
		if nth >= len(res) {
			return "no answer"
		}
		r := res[nth]
		var b strings.Builder
		b.WriteString(r.CommandTag.String())
		for _, row := range r.Rows {
			b.WriteString(" (")
			for i, v := range row {
				if i > 0 {
					b.WriteString(",")
				}
				if v == nil {
					b.WriteString("NULL")
				} else {
					b.Write(v)
				}
			}
			b.WriteString(")")
		}
		return b.String()
	}
	if r := exec("SET lock_timeout = '300ms'; SET statement_timeout = '10s'", 0); strings.HasPrefix(r, "error") {
		st["probe: settings"] = r
	}
	if r := exec("BEGIN", 0); r != "BEGIN" {
		st["probe: BEGIN"] = r
		return st
	}
	for _, b := range blocks {
		for i, sql := range b.stmts {
			key := fmt.Sprintf("probe %s #%d (%s)", b.table, i+1, rules.Shorten(stripComments(sql), 50))
			// One round trip: an error skips the rest of the message, and
			// the savepoint is then rolled back to.
			r := exec("SAVEPOINT probe; "+sql+"; RELEASE SAVEPOINT probe", 1)
			st[key] = r
			if strings.HasPrefix(r, "error") {
				exec("ROLLBACK TO SAVEPOINT probe", 0)
			}
		}
	}
	exec("ROLLBACK", 0)
	return st
}
