package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	pg_query "github.com/pganalyze/pg_query_go/v6"

	"github.com/pgmoat/pgmoat/rules"
)

// The attack corpus (testdata/attacks) is a set of attacks on the tables
// pgmoat protects, one file per class, each attack with a harmless twin that
// uses the same construct. A file is SQL with directive lines:
//
//	-- case: NAME              starts a case (names are unique in a file)
//	-- expect: refused|allowed what pgmoat must do
//	-- as: migrator|superuser  who sends the statements (default migrator)
//	-- why: TEXT               what the case does (repeatable)
//	-- flags: F, ...           one-message (each pgmoat section is one Query
//	                           message instead of one per statement),
//	                           exclusive (changes the cluster: runs alone),
//	                           two-phase (needs PREPARE TRANSACTION),
//	                           known-limit (a limit README documents: the
//	                           case is run and reported, not failed)
//	-- startup: KEY=VALUE      a startup parameter of the attacker's session
//	-- database: NAME          the database the attacker connects to (default
//	                           {{db}}, the case's own)
//	-- setup:                  SQL run directly, as the superuser, before the
//	                           baseline: things that existed before pgmoat saw them
//	-- pgmoat:                 SQL sent through pgmoat, one Query per statement
//	-- direct:                 SQL run directly as the superuser in another
//	                           session, in the middle of the case
//	-- reconnect               the attacker opens a new session
//	-- extended                the next statement goes through Parse/Bind/Execute
//	-- param: VALUE            ... with this text parameter (repeatable)
//	-- param-type: TYPE        ... whose type Parse declares (one per param,
//	                           in order; a parameter the text never uses
//	                           still goes through the type's input at Bind)
//	-- copy: LINE              a line of COPY data for the next statement
//	                           (COPY ... FROM STDIN)
//	-- error: SQLSTATE         the next statement fails on the server with
//	                           this SQLSTATE, by design of the case (a
//	                           harmless twin must otherwise run without error)
//
// Other lines starting with "--" before the first section of a case are
// comments. Placeholders ({{mig}}, {{migpw}}, {{app}}, {{db}}, {{port}},
// {{conn}}; see attackVars.pairs) are replaced when the case runs.
const attacksDir = "../testdata/attacks"

// attackClasses are the corpus files, in the order they run.
var attackClasses = []string{
	"state-drift", "partitions", "types", "existing-functions", "predicates", "loops",
	"contract", "side-doors", "cluster",
}

type attackExpect string

const (
	expectRefused attackExpect = "refused"
	expectAllowed attackExpect = "allowed"
)

// attackCase is one case of the corpus.
type attackCase struct {
	class, name string
	line        int // of its "-- case:" line
	expect      attackExpect
	superuser   bool
	why         []string
	oneMessage  bool
	exclusive   bool
	twoPhase    bool
	// knownLimit: pgmoat is known not to stop the attack (README says
	// why); through pgmoat its outcome is logged, not failed.
	knownLimit bool
	startup    [][2]string
	database   string // "" for the case's own
	setup      []string
	steps      []attackStep
}

type stepKind int

const (
	stepAttacker  stepKind = iota // the attacker's session: through pgmoat, or directly in the control run
	stepDirect                    // another session, directly on the server as the superuser
	stepReconnect                 // the attacker opens a new session
)

// attackStep is one thing the case does after the baseline.
type attackStep struct {
	kind       stepKind
	line       int
	sql        string
	extended   bool
	params     []string
	paramTypes []string // type names for Parse, resolved when the case runs
	copyData   string
	wantErr    string // SQLSTATE the statement fails with by design, "" if it must succeed
}

func (s attackStep) String() string {
	switch s.kind {
	case stepReconnect:
		return "reconnect"
	case stepDirect:
		return fmt.Sprintf("line %d, direct: %s", s.line, rules.Shorten(s.sql, 140))
	}
	return fmt.Sprintf("line %d: %s", s.line, rules.Shorten(s.sql, 140))
}

// loadAttackCorpus parses every class file.
func loadAttackCorpus(t testing.TB) map[string][]*attackCase {
	t.Helper()
	out := map[string][]*attackCase{}
	for _, class := range attackClasses {
		path := filepath.Join(attacksDir, class+".sql")
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		cases, err := parseAttackFile(class, string(data))
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out[class] = cases
	}
	return out
}

// section is where SQL lines of a case currently go.
type section int

const (
	inHeader section = iota
	inSetup
	inAttacker
	inDirect
)

// pendingStep holds what the directives before a statement asked of it.
type pendingStep struct {
	extended   bool
	params     []string
	paramTypes []string
	copy       []string
	wantErr    string
	line       int
}

func (p pendingStep) empty() bool {
	return !p.extended && p.params == nil && p.paramTypes == nil && p.copy == nil && p.wantErr == ""
}

// attackParser reads one file.
type attackParser struct {
	class   string
	cases   []*attackCase
	cur     *attackCase
	sec     section
	buf     []string // SQL lines of the current section since the last flush
	bufLine int
	pending pendingStep
}

func parseAttackFile(class, text string) ([]*attackCase, error) {
	p := &attackParser{class: class}
	for i, line := range strings.Split(text, "\n") {
		if err := p.line(i+1, line); err != nil {
			return nil, fmt.Errorf("line %d: %w", i+1, err)
		}
	}
	if err := p.finishCase(); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, c := range p.cases {
		if seen[c.name] {
			return nil, fmt.Errorf("line %d: case %q appears twice", c.line, c.name)
		}
		seen[c.name] = true
	}
	return p.cases, nil
}

// directive splits "-- key: value" (or "-- key") into key and value when
// key is one of the corpus's directives.
func directive(line string) (key, value string, ok bool) {
	rest, found := strings.CutPrefix(strings.TrimRight(line, " \t\r"), "-- ")
	if !found {
		return "", "", false
	}
	key, value, _ = strings.Cut(rest, ":")
	switch key {
	case "case", "expect", "as", "why", "flags", "startup", "database", "setup", "pgmoat", "direct",
		"reconnect", "extended", "param", "param-type", "copy", "error":
		if (key == "reconnect" || key == "extended" || key == "setup" || key == "pgmoat" || key == "direct") &&
			strings.TrimSpace(value) != "" {
			return "", "", false
		}
		// A value keeps its inner spaces; only the one after the colon goes.
		return key, strings.TrimPrefix(value, " "), true
	}
	return "", "", false
}

func (p *attackParser) line(n int, line string) error {
	key, value, ok := directive(line)
	if !ok {
		if p.cur == nil || p.sec == inHeader {
			if t := strings.TrimSpace(line); t != "" && !strings.HasPrefix(t, "--") {
				return fmt.Errorf("SQL outside of a section: %q", t)
			}
			return nil
		}
		if len(p.buf) == 0 {
			p.bufLine = n
		}
		p.buf = append(p.buf, line)
		return nil
	}
	if key == "case" {
		if err := p.finishCase(); err != nil {
			return err
		}
		name := strings.TrimSpace(value)
		if name == "" || strings.ContainsAny(name, " /\t") {
			return fmt.Errorf("case name %q: want one word without slashes", name)
		}
		p.cur = &attackCase{class: p.class, name: name, line: n}
		p.sec = inHeader
		return nil
	}
	if p.cur == nil {
		return fmt.Errorf("directive %q before the first case", key)
	}
	c := p.cur
	header := func() error {
		if p.sec != inHeader {
			return fmt.Errorf("%q belongs before the case's first section", key)
		}
		return nil
	}
	switch key {
	case "expect":
		if err := header(); err != nil {
			return err
		}
		switch e := attackExpect(strings.TrimSpace(value)); e {
		case expectRefused, expectAllowed:
			c.expect = e
		default:
			return fmt.Errorf("expect %q: want refused or allowed", value)
		}
	case "as":
		if err := header(); err != nil {
			return err
		}
		switch strings.TrimSpace(value) {
		case "migrator":
			c.superuser = false
		case "superuser":
			c.superuser = true
		default:
			return fmt.Errorf("as %q: want migrator or superuser", value)
		}
	case "why":
		if err := header(); err != nil {
			return err
		}
		c.why = append(c.why, strings.TrimSpace(value))
	case "flags":
		if err := header(); err != nil {
			return err
		}
		for _, f := range strings.Split(value, ",") {
			switch strings.TrimSpace(f) {
			case "one-message":
				c.oneMessage = true
			case "exclusive":
				c.exclusive = true
			case "two-phase":
				c.twoPhase = true
			case "known-limit":
				c.knownLimit = true
			default:
				return fmt.Errorf("unknown flag %q", strings.TrimSpace(f))
			}
		}
	case "startup":
		if err := header(); err != nil {
			return err
		}
		k, v, ok := strings.Cut(strings.TrimSpace(value), "=")
		if !ok || k == "" {
			return fmt.Errorf("startup %q: want KEY=VALUE", value)
		}
		c.startup = append(c.startup, [2]string{k, v})
	case "database":
		if err := header(); err != nil {
			return err
		}
		c.database = strings.TrimSpace(value)
	case "setup", "pgmoat", "direct":
		if err := p.flush(); err != nil {
			return err
		}
		if key == "setup" {
			if p.sec != inHeader {
				return fmt.Errorf("setup must come before the case's other sections")
			}
			p.sec = inSetup
		} else if key == "pgmoat" {
			p.sec = inAttacker
		} else {
			p.sec = inDirect
		}
	case "reconnect", "extended", "param", "param-type", "copy", "error":
		if p.sec != inAttacker {
			return fmt.Errorf("%q belongs in a pgmoat section", key)
		}
		if err := p.flush(); err != nil {
			return err
		}
		switch key {
		case "reconnect":
			c.steps = append(c.steps, attackStep{kind: stepReconnect, line: n})
		case "extended":
			p.pending.extended = true
		case "param":
			p.pending.extended = true
			p.pending.params = append(p.pending.params, value)
		case "param-type":
			p.pending.extended = true
			p.pending.paramTypes = append(p.pending.paramTypes, strings.TrimSpace(value))
		case "copy":
			p.pending.copy = append(p.pending.copy, value)
		case "error":
			code := strings.TrimSpace(value)
			if len(code) != 5 {
				return fmt.Errorf("error %q: want a SQLSTATE", value)
			}
			p.pending.wantErr = code
		}
		if p.pending.line == 0 && !p.pending.empty() {
			p.pending.line = n
		}
	}
	return nil
}

// flush turns the SQL lines gathered so far into statements of the current
// section.
func (p *attackParser) flush() error {
	line := p.bufLine
	for len(p.buf) > 0 && strings.TrimSpace(p.buf[0]) == "" {
		p.buf, line = p.buf[1:], line+1
	}
	text := strings.TrimSpace(strings.Join(p.buf, "\n"))
	p.buf = nil
	if strings.TrimSpace(stripComments(text)) == "" {
		return nil
	}
	c := p.cur
	switch p.sec {
	case inSetup:
		stmts, err := splitSQL(text)
		if err != nil {
			return fmt.Errorf("setup at line %d: %w", line, err)
		}
		c.setup = append(c.setup, stmts...)
		return nil
	case inDirect:
		c.steps = append(c.steps, attackStep{kind: stepDirect, line: line, sql: text})
		return nil
	}
	if p.pending.paramTypes != nil && len(p.pending.paramTypes) != len(p.pending.params) {
		return fmt.Errorf("line %d: %d param-type lines for %d params", p.pending.line, len(p.pending.paramTypes), len(p.pending.params))
	}
	if c.oneMessage {
		c.steps = append(c.steps, attackStep{kind: stepAttacker, line: line, sql: text, wantErr: p.pending.wantErr})
		p.pending.wantErr = ""
		if !p.pending.empty() {
			return fmt.Errorf("line %d: only error applies to a one-message section", p.pending.line)
		}
		return nil
	}
	stmts, err := splitSQL(text)
	if err != nil {
		return fmt.Errorf("statements at line %d: %w", line, err)
	}
	off := 0
	for i, s := range stmts {
		// The statement's own line, for the report.
		at := line
		if j := strings.Index(text[off:], s); j >= 0 {
			at += strings.Count(text[:off+j], "\n")
			off += j + len(s)
		}
		st := attackStep{kind: stepAttacker, line: at, sql: s}
		if i == 0 && !p.pending.empty() {
			st.extended, st.params, st.paramTypes, st.wantErr = p.pending.extended, p.pending.params, p.pending.paramTypes, p.pending.wantErr
			if p.pending.copy != nil {
				st.copyData = strings.Join(p.pending.copy, "\n") + "\n"
			}
			p.pending = pendingStep{}
		}
		c.steps = append(c.steps, st)
	}
	return nil
}

// splitSQL splits text into statements as PostgreSQL's scanner does with
// its default settings (the way pgmoat sees it).
func splitSQL(text string) ([]string, error) {
	parts, err := pg_query.SplitWithScanner(text, true)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, s := range parts {
		if strings.TrimSpace(stripComments(s)) != "" {
			out = append(out, s)
		}
	}
	return out, nil
}

// stripComments drops whole lines that are "--" comments, to tell whether
// anything but comments is left.
func stripComments(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(s, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "--") {
			b.WriteString(l)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

func (p *attackParser) finishCase() error {
	if p.cur == nil {
		return nil
	}
	if err := p.flush(); err != nil {
		return err
	}
	c := p.cur
	if !p.pending.empty() {
		return fmt.Errorf("case %s: param/copy/extended at line %d with no statement after it", c.name, p.pending.line)
	}
	if c.expect == "" {
		return fmt.Errorf("case %s (line %d): no expect", c.name, c.line)
	}
	if len(c.why) == 0 {
		return fmt.Errorf("case %s (line %d): no why", c.name, c.line)
	}
	if !slices.ContainsFunc(c.steps, func(s attackStep) bool { return s.kind == stepAttacker }) {
		return fmt.Errorf("case %s (line %d): no statement through pgmoat", c.name, c.line)
	}
	p.cases = append(p.cases, c)
	p.cur, p.sec = nil, inHeader
	return nil
}

// TestAttackCorpus checks the corpus's shape (it needs no server): every
// file parses, every class has enough cases, at least half of them attacks,
// and every placeholder is one the runner knows.
func TestAttackCorpus(t *testing.T) {
	corpus := loadAttackCorpus(t)
	known := attackVars{}.pairs()
	for _, class := range attackClasses {
		cases := corpus[class]
		refused := 0
		for _, c := range cases {
			if c.expect == expectRefused {
				refused++
			}
			var texts []string
			texts = append(texts, c.setup...)
			for _, s := range c.steps {
				texts = append(texts, s.sql, s.copyData)
				texts = append(texts, s.params...)
			}
			for _, kv := range c.startup {
				texts = append(texts, kv[1])
			}
			for _, text := range texts {
				for _, ph := range placeholders(text) {
					if !slices.ContainsFunc(known, func(kv [2]string) bool { return kv[0] == ph }) {
						t.Errorf("%s/%s: unknown placeholder %s", class, c.name, ph)
					}
				}
			}
		}
		if len(cases) < 8 {
			t.Errorf("%s: %d cases, want at least 8", class, len(cases))
		}
		if refused*2 < len(cases) {
			t.Errorf("%s: %d attacks of %d cases, want at least half", class, refused, len(cases))
		}
		if refused == len(cases) {
			t.Errorf("%s: no harmless twin", class)
		}
	}
}

// placeholders lists the {{name}} placeholders in s.
func placeholders(s string) []string {
	var out []string
	for {
		i := strings.Index(s, "{{")
		if i < 0 {
			break
		}
		j := strings.Index(s[i:], "}}")
		if j < 0 {
			break
		}
		out = append(out, s[i:i+j+2])
		s = s[i+j+2:]
	}
	sort.Strings(out)
	return slices.Compact(out)
}

func TestParseAttackFile(t *testing.T) {
	const text = `-- a class
-- case: one
-- expect: refused
-- as: superuser
-- why: because
-- flags: exclusive
-- startup: search_path=ledger, public
-- database: postgres
-- setup:
CREATE TABLE a (id int);
CREATE TABLE b (id int);
-- pgmoat:
SELECT 1; SELECT 'a\' , ' ; DROP TABLE a; -- ';
-- param: {1,2}
DELETE FROM a WHERE id = ANY($1);
-- param: 7
-- param-type: public.d
SELECT 1;
-- copy: 1	x
COPY a FROM STDIN;
-- error: 22012
SELECT 1/0;
-- reconnect
-- direct:
DROP TABLE b;
-- pgmoat:
SELECT 2;
-- case: two
-- expect: allowed
-- why: twin
-- flags: one-message
-- pgmoat:
SET x.y = 1; SELECT 1/0;
`
	cases, err := parseAttackFile("x", text)
	if err != nil {
		t.Fatal(err)
	}
	lineOf := func(prefix string) int {
		for i, l := range strings.Split(text, "\n") {
			if strings.HasPrefix(l, prefix) {
				return i + 1
			}
		}
		return -1
	}
	if len(cases) != 2 {
		t.Fatalf("%d cases", len(cases))
	}
	one := cases[0]
	if one.expect != expectRefused || !one.superuser || !one.exclusive || one.oneMessage ||
		len(one.startup) != 1 || one.startup[0] != [2]string{"search_path", "ledger, public"} || one.database != "postgres" ||
		len(one.setup) != 2 {
		t.Fatalf("header: %+v", one)
	}
	var got []string
	for _, s := range one.steps {
		got = append(got, fmt.Sprintf("%d|%s|%v|%q%q|%q|%s", s.kind, s.sql, s.extended, s.params, s.paramTypes, s.copyData, s.wantErr))
	}
	want := []string{
		`0|SELECT 1|false|[][]|""|`,
		`0|SELECT 'a\' , ' ; DROP TABLE a; -- '|false|[][]|""|`,
		`0|DELETE FROM a WHERE id = ANY($1)|true|["{1,2}"][]|""|`,
		`0|SELECT 1|true|["7"]["public.d"]|""|`,
		`0|COPY a FROM STDIN|false|[][]|"1\tx\n"|`,
		`0|SELECT 1/0|false|[][]|""|22012`,
		`2||false|[][]|""|`,
		`1|DROP TABLE b;|false|[][]|""|`,
		`0|SELECT 2|false|[][]|""|`,
	}
	if !slices.Equal(got, want) {
		t.Fatalf("steps:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, i := range []int{0, 2, 4} {
		if want := lineOf(strings.SplitN(one.steps[i].sql, " ", 2)[0]); one.steps[i].line != want {
			t.Errorf("step %d (%s) at line %d, want %d", i, one.steps[i].sql, one.steps[i].line, want)
		}
	}
	if one.steps[1].line != one.steps[0].line {
		t.Errorf("the second statement of a line is at line %d, want %d", one.steps[1].line, one.steps[0].line)
	}
	two := cases[1]
	if !two.oneMessage || len(two.steps) != 1 || two.steps[0].sql != "SET x.y = 1; SELECT 1/0;" {
		t.Fatalf("one-message: %+v", two.steps)
	}
	for _, bad := range []string{
		"-- case: a\n-- why: w\n-- pgmoat:\nSELECT 1;\n",                       // no expect
		"-- case: a\n-- expect: maybe\n",                                       // bad expect
		"-- case: a\n-- expect: allowed\n-- why: w\n-- setup:\nSELECT 1;\n",    // nothing through pgmoat
		"-- case: a\n-- expect: allowed\n-- why: w\n-- pgmoat:\n-- param: 1\n", // param without statement
		"SELECT 1;\n", // SQL before a case
		"-- case: a\n-- expect: allowed\n-- why: w\n-- pgmoat:\nSELECT 1;\n-- case: a\n-- expect: allowed\n-- why: w\n-- pgmoat:\nSELECT 1;\n", // twice
	} {
		if _, err := parseAttackFile("x", bad); err == nil {
			t.Errorf("no error for %q", bad)
		}
	}
}
