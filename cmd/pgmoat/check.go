package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"

	"github.com/pgmoat/pgmoat/config"
	"github.com/pgmoat/pgmoat/migration"
	"github.com/pgmoat/pgmoat/rules"
)

// finding is one statement of a checked file that the policy does not
// simply allow.
type finding struct {
	File       string   `json:"file"`
	Line       int      `json:"line"`
	Col        int      `json:"col"`
	Direction  string   `json:"direction"` // up, down or verify
	Statement  string   `json:"statement"`
	Decision   string   `json:"decision"`
	Rule       string   `json:"rule"`
	Reason     string   `json:"reason"`
	Operations []string `json:"operations"`
	Objects    []string `json:"objects"`
}

type checkSummary struct {
	Files      int `json:"files"`
	Statements int `json:"statements"`
	Blocked    int `json:"blocked"`
	Held       int `json:"held"`
	Logged     int `json:"logged"`
	// Down counts the blocked and held statements of down (and undo,
	// revert, rollback) sections, which run only when someone migrates
	// down.
	Down int `json:"down"`
}

func runCheck(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("check", stderr)
	cfgPath := fs.String("config", "", "configuration `file` holding the policy (required)")
	user := fs.String("user", "", "session user the rules should match")
	database := fs.String("database", "", "database the rules should match")
	app := fs.String("application", "", "application_name the rules should match")
	client := fs.String("client", "", "client IP `address` the rules should match")
	searchPath := fs.String("search-path", "", "comma-separated search_path at the start of each file (default: PostgreSQL's \"$user\", public; with --schema or --catalog, unknown: names resolve to the schemas that hold them)")
	format := fs.String("format", "text", "output `format`: text, json or github (workflow annotations)")
	migFormat := fs.String("migration-format", "auto", "migration file `format`: auto, plain, goose, golang-migrate, dbmate, flyway, sqitch, liquibase")
	skipDown := fs.Bool("skip-down", false, "leave out down migrations (goose/dbmate Down, *.down.sql, Flyway U, sqitch revert, Liquibase rollback)")
	schema := fs.String("schema", "", "the database's schema as SQL (`file`, e.g. pg_dump --schema-only), so names, views, foreign keys and partitions resolve as on the server")
	catalogDSN := fs.String("catalog", "", "read the schema from a live database (`URL`, e.g. a staging database or replica; only read)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: pgmoat check --config FILE [flags] FILE... (- for stdin)\n\nExit status: 0 when everything is allowed, 1 when anything would be blocked\nor held, 2 for bad usage or an invalid config.\n\nflags:")
		fs.PrintDefaults()
	}
	files, err := parseFlags(fs, args)
	if err != nil {
		return exitUsage
	}
	mf, mfErr := migration.ParseFormat(*migFormat)
	switch {
	case *cfgPath == "":
		fmt.Fprintln(stderr, "pgmoat check: --config is required")
		return exitUsage
	case len(files) == 0:
		fmt.Fprintln(stderr, "pgmoat check: name at least one file, or - for stdin")
		return exitUsage
	case *format != "text" && *format != "json" && *format != "github":
		fmt.Fprintf(stderr, "pgmoat check: unknown --format %q (want text, json or github)\n", *format)
		return exitUsage
	case mfErr != nil:
		fmt.Fprintf(stderr, "pgmoat check: --migration-format: %v\n", mfErr)
		return exitUsage
	case *schema != "" && *catalogDSN != "":
		fmt.Fprintln(stderr, "pgmoat check: give --schema or --catalog, not both")
		return exitUsage
	}
	cfg, err := config.LoadFile(*cfgPath)
	if err != nil {
		fmt.Fprintf(stderr, "pgmoat check: %v\n", err)
		return exitUsage
	}
	id := rules.Identity{User: *user, Database: *database, Application: *app}
	if *client != "" {
		if id.Client, err = netip.ParseAddr(*client); err != nil {
			fmt.Fprintf(stderr, "pgmoat check: --client: %v\n", err)
			return exitUsage
		}
	}
	// No analysis budget: a migration file is not one message (psql sends
	// it statement by statement), and CI bounds its own time.
	engine := rules.NewEngine(cfg.CompiledPolicy, rules.EngineOptions{Limits: rules.Limits{MaxStatements: -1, MaxTime: -1}})
	var cat *rules.Catalog
	switch {
	case *schema != "":
		if cat, err = schemaCatalog(*schema); err != nil {
			fmt.Fprintf(stderr, "pgmoat check: --schema: %v\n", err)
			return exitUsage
		}
	case *catalogDSN != "":
		if cat, err = liveCatalog(ctx, *catalogDSN); err != nil {
			fmt.Fprintf(stderr, "pgmoat check: --catalog: %v\n", err)
			return exitUsage
		}
	}
	if cat != nil {
		engine.SetCatalog(id.Database, cat)
	}
	startPath := splitList(*searchPath)
	if *searchPath == "" && cat == nil {
		startPath = defaultSearchPath
	}

	var (
		findings []finding
		sum      checkSummary
		unknown  bool // a finding that a catalog could settle
	)
	for _, name := range files {
		text, err := readInput(name)
		if err != nil {
			fmt.Fprintf(stderr, "pgmoat check: %v\n", err)
			return exitUsage
		}
		mig, err := migration.Read(name, text, mf)
		if err != nil {
			fmt.Fprintf(stderr, "pgmoat check: %s: %v\n", displayName(name), err)
			return exitUsage
		}
		sum.Files++
		for _, sec := range mig.Sections {
			if *skipDown && sec.Direction == migration.Down {
				continue
			}
			// Each direction runs on its own, from the session's start.
			sess := rules.NewSession(id)
			if startPath != nil {
				sess.SetSearchPath(startPath)
			}
			res := engine.JudgeScript(sess, sec.SQL)
			if sec.Direction != migration.Down {
				// The files of a run are one migration history: what
				// an up migration made (a partition of a protected table,
				// a view over one) counts in the files after it.
				for _, v := range res.Statements {
					engine.Learn(id.Database, v.Changes...)
				}
			}
			for _, v := range res.Statements {
				if v.Text == "" {
					continue
				}
				sum.Statements++
				switch v.Action {
				case rules.Allow:
					continue
				case rules.Block:
					sum.Blocked++
				case rules.Hold:
					sum.Held++
				case rules.Log:
					sum.Logged++
				}
				if sec.Direction == migration.Down && (v.Action == rules.Block || v.Action == rules.Hold) {
					sum.Down++
				}
				f := newFinding(displayName(name), v)
				f.Direction = sec.Direction.String()
				findings = append(findings, f)
				if cat == nil && v.Action != rules.Log && catalogWouldHelp(v) {
					unknown = true
				}
			}
		}
	}

	switch *format {
	case "json":
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if findings == nil {
			findings = []finding{}
		}
		enc.Encode(struct {
			Findings []finding    `json:"findings"`
			Summary  checkSummary `json:"summary"`
		}{findings, sum})
	case "github":
		for _, f := range findings {
			level := "error"
			if f.Decision == "log" {
				level = "notice"
			}
			fmt.Fprintf(stdout, "::%s file=%s,line=%d,col=%d,title=%s::%s\n", level,
				ghProperty(f.File), f.Line, f.Col, ghProperty("pgmoat: "+f.Decision+directionNote(f.Direction)+" ("+f.Rule+")"),
				ghData(f.Reason+"\n"+f.Statement))
		}
		fmt.Fprintln(stdout, summaryLine(sum))
	default:
		for _, f := range findings {
			fmt.Fprintf(stdout, "%s:%d:%d: %s%s: %s\n    rule %s: %s\n", f.File, f.Line, f.Col, f.Decision, directionNote(f.Direction), f.Statement, f.Rule, f.Reason)
		}
		fmt.Fprintln(stdout, summaryLine(sum))
		if unknown {
			fmt.Fprintln(stdout, catalogHint)
		}
	}
	if sum.Blocked+sum.Held > 0 {
		return exitFindings
	}
	return exitOK
}

// defaultSearchPath is PostgreSQL's default search_path, which a
// migration tool's session has unless the database or role sets another.
var defaultSearchPath = []string{"$user", "public"}

const catalogHint = "hint: some findings depend on what the database holds (which schemas hold a name, views, " +
	"inheritance, foreign keys): pass --schema FILE (pg_dump --schema-only) or --catalog URL to judge them as pgmoat serve does"

// catalogWouldHelp reports whether a verdict rests on what pgmoat does not
// know without a catalog: a name whose schema is unknown, or an effect
// that may reach every protected table.
func catalogWouldHelp(v *rules.Verdict) bool {
	for _, e := range v.Effects {
		if e.Object.Kind == rules.KindEverything || e.Object.Schema == "" && e.Object.Kind != rules.KindSchema && e.Object.Kind != rules.KindDatabase {
			return true
		}
	}
	return false
}

func directionNote(d string) string {
	if d == "" || d == "up" {
		return ""
	}
	return " (" + d + ")"
}

func newFinding(file string, v *rules.Verdict) finding {
	f := finding{
		File: file, Line: v.Line, Col: v.Col,
		Statement: rules.Shorten(v.Text, 120),
		Decision:  v.Action.String(),
		Rule:      v.Rule,
		Reason:    v.Sentence,
	}
	seenOp := map[string]bool{}
	for _, e := range v.Effects {
		if op := e.Op.String(); !seenOp[op] {
			seenOp[op] = true
			f.Operations = append(f.Operations, op)
		}
		f.Objects = append(f.Objects, e.Object.String())
	}
	return f
}

func summaryLine(s checkSummary) string {
	verdict := "ok"
	if s.Blocked+s.Held > 0 {
		verdict = "FAIL"
	}
	line := fmt.Sprintf("pgmoat check: %s: %d file(s), %d statement(s): %d blocked, %d held, %d logged",
		verdict, s.Files, s.Statements, s.Blocked, s.Held, s.Logged)
	if s.Down > 0 {
		line += fmt.Sprintf(" (%d in down migrations; --skip-down leaves them out)", s.Down)
	}
	return line
}

func readInput(name string) (string, error) {
	if name == "-" {
		b, err := io.ReadAll(os.Stdin)
		if err != nil {
			return "", fmt.Errorf("stdin: %w", err)
		}
		return string(b), nil
	}
	b, err := os.ReadFile(name)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

func displayName(name string) string {
	if name == "-" {
		return "<stdin>"
	}
	return name
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// ghData escapes a GitHub workflow command's message.
func ghData(s string) string {
	return strings.NewReplacer("%", "%25", "\r", "%0D", "\n", "%0A").Replace(s)
}

// ghProperty escapes a GitHub workflow command's property value.
func ghProperty(s string) string {
	return strings.NewReplacer("%", "%25", "\r", "%0D", "\n", "%0A", ":", "%3A", ",", "%2C").Replace(s)
}
