package guard

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/pgmoat/pgmoat/rules"
)

// Rel is one covered relation as a snapshot saw it.
type Rel struct {
	OID          string
	Schema, Name string
	Root         string // the protected relation it belongs to (itself, or the ancestor a pattern names)
	Pattern      int    // index of the protect pattern that covers it
	Relkind      byte
	Owner        string
	Filenode     string
	Parent       string // inheritance parent or partitioned table, "0" when none
	Inserted     int64  // rows this transaction inserted, updated, deleted (pg_stat_xact_*)
	Updated      int64
	Deleted      int64
	Count        int64 // exact row count, -1 when not counted
	Estimate     int64 // max(reltuples, n_live_tup)
	ACL          string
	SchemaACL    string
	ColumnACL    string
	Sequences    string
	Components   []string
}

// Settings are the session settings the analysis depends on, as the
// server has them.
type Settings struct {
	SearchPath, CurrentUser, SessionUser      string
	StandardConformingStrings, ClientEncoding string
	SessionReplicationRole                    string
	// TrackCounts is track_counts: off, the server counts no rows and
	// the snapshot cannot say what a statement deleted or updated.
	TrackCounts string
}

// Snapshot is what one run of the snapshot query read.
type Snapshot struct {
	Rels     map[string]*Rel
	order    []string
	Settings Settings
}

// Parse reads the rows of the snapshot query (text values).
func Parse(rows [][][]byte) (*Snapshot, error) {
	s := &Snapshot{Rels: map[string]*Rel{}}
	sawSettings := false
	width := colComponents + len(components)
	for _, r := range rows {
		if len(r) != width {
			return nil, fmt.Errorf("guard: snapshot row has %d columns, want %d", len(r), width)
		}
		str := func(i int) string { return string(r[i]) }
		switch str(colKind) {
		case "set":
			s.Settings = Settings{SearchPath: str(1), CurrentUser: str(2), SessionUser: str(3),
				StandardConformingStrings: str(4), ClientEncoding: str(5), SessionReplicationRole: str(6), TrackCounts: str(7)}
			sawSettings = true
		case "rel":
			rel := &Rel{OID: str(colOID), Schema: str(colSchema), Name: str(colName), Root: str(colRoot),
				Owner: str(colOwner), Filenode: str(colFilenode), Parent: str(colParent),
				ACL: str(colACL), SchemaACL: str(colSchemaACL), ColumnACL: str(colColumnACL), Sequences: str(colSequences)}
			var err error
			num := func(i int) int64 {
				v, e := strconv.ParseInt(str(i), 10, 64)
				if e != nil && err == nil {
					err = fmt.Errorf("guard: snapshot column %d: %q is not a number", i, str(i))
				}
				return v
			}
			rel.Pattern = int(num(colPattern))
			if k := str(colRelkind); len(k) == 1 {
				rel.Relkind = k[0]
			}
			rel.Inserted, rel.Updated, rel.Deleted = num(colInserted), num(colUpdated), num(colDeleted)
			rel.Count = num(colCount)
			for _, part := range strings.Split(str(colEstimate), ":") {
				if v, e := strconv.ParseInt(part, 10, 64); e == nil && v > rel.Estimate {
					rel.Estimate = v
				}
			}
			if err != nil {
				return nil, err
			}
			for i := range components {
				rel.Components = append(rel.Components, str(colComponents+i))
			}
			s.Rels[rel.OID] = rel
			s.order = append(s.order, rel.OID)
		default:
			return nil, fmt.Errorf("guard: snapshot row of unknown kind %q", str(colKind))
		}
	}
	if !sawSettings {
		return nil, errors.New("guard: snapshot without the settings row")
	}
	return s, nil
}

// Violation is something a verified statement did that the policy must
// judge: an operation on a protected relation, measured.
type Violation struct {
	Op           rules.Operation
	OID          string // the relation's OID ("" for the session's settings)
	Schema, Name string
	// What says what the statement did, for people: "would delete 50 of
	// 50 rows of public.users" (it was rolled back).
	What string
}

// Effect returns the violation as a rules.Effect, for the policy.
func (v Violation) Effect() rules.Effect {
	if v.OID == "" {
		// A change to the session itself reaches every protected table.
		return rules.Effect{Op: v.Op, Object: rules.Object{Kind: rules.KindEverything}, What: v.What}
	}
	return rules.Effect{Op: v.Op, Object: rules.Object{Kind: rules.KindTable, Schema: v.Schema, Name: v.Name}, What: v.What}
}

// Blind says why a pair of snapshots cannot tell what a statement did to
// the rows of protected tables ("" when they can): with track_counts off
// the server counts no rows.
func Blind(before, after *Snapshot) string {
	if before.Settings.TrackCounts != "on" || after.Settings.TrackCounts != "on" {
		return "track_counts is off in this session, so the server does not count the rows a statement changes"
	}
	return ""
}

// Compare says what changed between before and after, two snapshots taken
// around a statement in the same transaction. limits gives the row limits
// of a protect pattern (by index; rules.Policy.Limits).
func Compare(before, after *Snapshot, limits func(pattern int) rules.RowLimits) []Violation {
	var out []Violation
	add := func(op rules.Operation, r *Rel, what string) {
		out = append(out, Violation{Op: op, OID: r.OID, Schema: r.Schema, Name: r.Name, What: "would " + what + " " + qualified(r.Schema, r.Name)})
	}
	type rootRows struct {
		rel            *Rel
		del, upd, rows int64
		uncounted      bool
	}
	roots := map[string]*rootRows{}
	var rootOrder []string
	for _, oid := range before.order {
		b := before.Rels[oid]
		a, ok := after.Rels[oid]
		if !ok {
			add(rules.OpDrop, b, "drop, rename or detach")
			continue
		}
		if a.Schema != b.Schema || a.Name != b.Name {
			add(rules.OpAlterDestructive, b, "rename or move (to "+qualified(a.Schema, a.Name)+")")
		}
		if a.Parent != b.Parent {
			add(rules.OpAlterDestructive, b, "detach or re-parent")
		}
		if a.Filenode != b.Filenode && b.Relkind != 'p' && b.Relkind != 'v' {
			add(rules.OpTruncate, b, "truncate or rewrite (new storage for)")
		}
		if a.Owner != b.Owner {
			add(rules.OpContract, b, "change the owner of")
		}
		for i, c := range components {
			if a.Components[i] == b.Components[i] {
				continue
			}
			if perColumn[c.name] {
				if what := columnChange(c.name, b.Components[i], a.Components[i], a.Components[compIndex["defaults"]]); what != "" {
					op := rules.OpContract
					if c.name == "columns" || c.name == "types" {
						op = rules.OpAlterDestructive
					}
					add(op, b, what)
				}
				continue
			}
			switch c.name {
			case "columns":
				add(rules.OpAlterDestructive, b, "changes the columns of")
			case "types":
				add(rules.OpAlterDestructive, b, "change the composite or enum types used by the columns of")
			default:
				add(rules.OpContract, b, "change the "+strings.ReplaceAll(c.name, "_", " ")+" of")
			}
		}
		if !aclCovers(a.ACL, b.ACL) || !aclCovers(a.SchemaACL, b.SchemaACL) || !columnACLCovers(a.ColumnACL, b.ColumnACL) {
			add(rules.OpContract, b, "revoke privileges on")
		}
		if what := sequenceChange(b.Sequences, a.Sequences); what != "" {
			add(rules.OpContract, b, what+" feeding")
		}
		rr := roots[b.Root]
		if rr == nil {
			root := before.Rels[b.Root]
			if root == nil {
				root = b
			}
			rr = &rootRows{rel: root}
			roots[b.Root] = rr
			rootOrder = append(rootOrder, b.Root)
		}
		del, upd, ins := a.Deleted-b.Deleted, a.Updated-b.Updated, a.Inserted-b.Inserted
		rr.del += del
		rr.upd += upd
		switch {
		case a.Count >= 0:
			rr.rows += a.Count + del - ins
		case b.Relkind == 'r':
			rr.rows += b.Estimate
			rr.uncounted = true
		}
	}
	if after.Settings.StandardConformingStrings != "on" && before.Settings.StandardConformingStrings == "on" {
		out = append(out, Violation{Op: rules.OpLexerState, What: "would turn standard_conforming_strings off, after which the server would split statements differently from pgmoat's parser"})
	}
	if a, b := after.Settings.ClientEncoding, before.Settings.ClientEncoding; a != b && rules.CheckParameter("client_encoding", a) != nil {
		out = append(out, Violation{Op: rules.OpLexerState, What: "would set client_encoding to " + a + ", after which the server would split statements differently from pgmoat's parser"})
	}
	if before.Settings.SessionReplicationRole != "replica" && after.Settings.SessionReplicationRole == "replica" {
		out = append(out, Violation{Op: rules.OpClusterAdmin, What: "would set session_replication_role to replica, which switches off triggers and foreign keys"})
	}
	for _, k := range rootOrder {
		rr := roots[k]
		lim := limits(rr.rel.Pattern)
		for _, m := range []struct {
			op   rules.Operation
			n    int64
			verb string
		}{{rules.OpDeleteAll, rr.del, "delete"}, {rules.OpUpdateAll, rr.upd, "update"}} {
			if m.n <= 0 {
				continue
			}
			over := m.n > lim.MaxRows
			// Half the table or more (by default) counts, but one row
			// never counts as a fraction unless it is more than it: a
			// targeted change of one row of a two-row table passes.
			frac := lim.MaxFraction * float64(rr.rows)
			if rr.rows > 0 && (float64(m.n) > frac || m.n >= 2 && float64(m.n) >= frac) {
				over = true
			}
			if rr.rows <= 0 && m.n > 0 && lim.MaxFraction < 1 {
				over = true // every row it had
			}
			if !over {
				continue
			}
			of := ""
			switch {
			case rr.rows > 0 && rr.uncounted:
				of = " of about " + thousands(rr.rows)
			case rr.rows > 0:
				of = " of " + thousands(rr.rows)
			}
			add(m.op, rr.rel, m.verb+" "+thousands(m.n)+of+" rows of")
		}
	}
	return out
}

// BlastRadius is the violations as one sentence for people: what the
// statement would have done, had pgmoat not rolled it back.
func BlastRadius(vs []Violation) string {
	parts := make([]string, len(vs))
	for i, v := range vs {
		parts[i] = v.What
	}
	return strings.Join(parts, "; ")
}

// aclCovers reports whether every privilege of acl before (an aclitem[]
// as text) is still granted in after: grants may be added, none taken.
func aclCovers(after, before string) bool {
	if after == before {
		return true
	}
	a := parseACL(after)
	for k, privs := range parseACL(before) {
		have := a[k]
		for _, p := range privs {
			if !strings.ContainsRune(have, p) {
				return false
			}
		}
	}
	return true
}

// parseACL reads {grantee=privs/grantor,...} into grantee/grantor → privs.
func parseACL(s string) map[string]string {
	out := map[string]string{}
	s = strings.TrimSuffix(strings.TrimPrefix(s, "{"), "}")
	if s == "" {
		return out
	}
	for _, item := range splitACL(s) {
		item = strings.Trim(item, `"`)
		eq := strings.LastIndexByte(item, '=')
		slash := strings.LastIndexByte(item, '/')
		if eq < 0 || slash < eq {
			out[item] = ""
			continue
		}
		out[item[:eq]+"/"+item[slash+1:]] += item[eq+1 : slash]
	}
	return out
}

// splitACL splits an array's items at commas outside double quotes.
func splitACL(s string) []string {
	var out []string
	start, quoted := 0, false
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '"':
			quoted = !quoted
		case '\\':
			i++
		case ',':
			if !quoted {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	return append(out, s[start:])
}

// columnACLCovers compares column privileges (name:acl,...) as aclCovers.
func columnACLCovers(after, before string) bool {
	if after == before {
		return true
	}
	a := map[string]string{}
	for _, it := range splitColumnACLs(after) {
		a[it[0]] = it[1]
	}
	for _, it := range splitColumnACLs(before) {
		if !aclCovers(a[it[0]], it[1]) {
			return false
		}
	}
	return true
}

func splitColumnACLs(s string) [][2]string {
	var out [][2]string
	if s == "" {
		return out
	}
	// Items are "name:{...}" joined by ","; split at "}," boundaries.
	for _, it := range strings.SplitAfter(s, "},") {
		it = strings.TrimSuffix(it, ",")
		name, acl, ok := strings.Cut(it, ":")
		if ok {
			out = append(out, [2]string{name, acl})
		}
	}
	return out
}

// sequenceChange says how the sequences feeding a table moved in a way
// that breaks inserts: backwards (duplicate keys), or to their bound.
func sequenceChange(before, after string) string {
	if before == after {
		return ""
	}
	type seq struct{ last, max, min, inc string }
	read := func(s string) map[string]seq {
		m := map[string]seq{}
		for _, it := range strings.Split(s, ",") {
			f := strings.Split(it, ":")
			if len(f) == 5 {
				m[f[0]] = seq{f[1], f[2], f[3], f[4]}
			}
		}
		return m
	}
	a := read(after)
	for oid, b := range read(before) {
		x, ok := a[oid]
		if !ok {
			return "remove a sequence"
		}
		bl, e1 := strconv.ParseInt(b.last, 10, 64)
		al, e2 := strconv.ParseInt(x.last, 10, 64)
		inc, e3 := strconv.ParseInt(x.inc, 10, 64)
		mx, e4 := strconv.ParseInt(x.max, 10, 64)
		mn, e5 := strconv.ParseInt(x.min, 10, 64)
		if e1 != nil && b.last != "" || e2 != nil && x.last != "" {
			continue
		}
		switch {
		case b.last != "" && x.last == "":
			return "reset a sequence"
		case e1 == nil && e2 == nil && e3 == nil && (inc > 0 && al < bl || inc < 0 && al > bl):
			return "move back a sequence"
		case e2 == nil && e3 == nil && e4 == nil && e5 == nil && (inc > 0 && mx-al < inc || inc < 0 && al-mn < -inc):
			return "exhaust a sequence"
		}
	}
	return ""
}

func qualified(schema, name string) string {
	return rules.QuoteIdent(schema) + "." + rules.QuoteIdent(name)
}

// thousands formats n with commas: 1204331 → 1,204,331.
func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			b = append(b, ',')
		}
		b = append(b, s[i])
	}
	if neg {
		return "-" + string(b)
	}
	return string(b)
}

// compIndex finds a component's position by name.
var compIndex = func() map[string]int {
	m := map[string]int{}
	for i, c := range components {
		m[c.name] = i
	}
	return m
}()

// columnChange compares a per-column component's items ("attnum:...")
// before and after: an item that changed or went is a change; a new item
// (a column added) is not, unless it is a NOT NULL column without a
// default, which the application's INSERTs do not fill (defaults: the
// after list of defaults, to tell).
func columnChange(name, before, after, defaultsAfter string) string {
	a := items(after)
	for num, b := range items(before) {
		if name == "referenced_by" {
			continue // only new ones matter, below
		}
		if name == "types" && enumGrew(b, a[num]) {
			continue
		}
		if a[num] != b {
			switch name {
			case "columns":
				return "drop, rename or retype a column of"
			case "types":
				return "change a composite or enum type used by a column of"
			case "defaults":
				return "drop or change a column default of"
			case "domains":
				return "change a domain used by a column of"
			}
			return "change NOT NULL, identity, generation or collation of a column of"
		}
	}
	if name == "referenced_by" {
		b := items(before)
		for num, it := range a {
			if _, old := b[num]; old {
				continue
			}
			// oid:confdeltype:confupdtype:has rows
			f := strings.Split(it, ":")
			if len(f) == 4 && f[3] == "t" && (f[1] == "a" || f[1] == "r" || f[2] == "a" || f[2] == "r") {
				return "add a foreign key from a table with rows that can refuse deletes from"
			}
		}
		return ""
	}
	if name == "column_rules" {
		b, defs := items(before), items(defaultsAfter)
		for num, it := range a {
			if _, old := b[num]; old {
				continue
			}
			// attnum:attnotnull:attidentity:attgenerated:collation:hasdef
			f := strings.Split(it, ":")
			if len(f) == 6 && f[1] == "t" && f[2] == "" && f[3] == "" {
				if _, ok := defs[num]; !ok {
					return "add a NOT NULL column without a default to"
				}
			}
		}
	}
	return ""
}

// items reads "num:...,num:..." into num → item.
func items(list string) map[string]string {
	m := map[string]string{}
	if list == "" {
		return m
	}
	for _, it := range strings.Split(list, ",") {
		num, _, _ := strings.Cut(it, ":")
		m[num] = it
	}
	return m
}

// New returns the OIDs of the relations after covers that before did not:
// protected relations the statement created.
func New(before, after *Snapshot) []string {
	var out []string
	for _, oid := range after.order {
		if _, ok := before.Rels[oid]; !ok {
			out = append(out, oid)
		}
	}
	return out
}

// enumGrew reports whether a types item (attnum:oid:name:typtype:
// composite:labels) changed only by enum labels being added.
func enumGrew(before, after string) bool {
	b, a := strings.Split(before, ":"), strings.Split(after, ":")
	if len(b) != 6 || len(a) != 6 || b[3] != "e" {
		return false
	}
	for i := 0; i < 5; i++ {
		if a[i] != b[i] {
			return false
		}
	}
	have := map[string]bool{}
	for _, l := range strings.Split(a[5], "|") {
		have[l] = true
	}
	for _, l := range strings.Split(b[5], "|") {
		if l != "" && !have[l] {
			return false
		}
	}
	return true
}
