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
	"github.com/pgmoat/pgmoat/rules"
)

// finding is one statement of a checked file that the policy does not
// simply allow.
type finding struct {
	File       string   `json:"file"`
	Line       int      `json:"line"`
	Col        int      `json:"col"`
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
}

func runCheck(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("check", stderr)
	cfgPath := fs.String("config", "", "configuration `file` holding the policy (required)")
	user := fs.String("user", "", "session user the rules should match")
	database := fs.String("database", "", "database the rules should match")
	app := fs.String("application", "", "application_name the rules should match")
	client := fs.String("client", "", "client IP `address` the rules should match")
	searchPath := fs.String("search-path", "", "comma-separated search_path at the start of each file (default: unknown, so every unqualified name may be protected)")
	format := fs.String("format", "text", "output `format`: text, json or github (workflow annotations)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: pgmoat check --config FILE [flags] FILE... (- for stdin)\n\nExit status: 0 when everything is allowed, 1 when anything would be blocked\nor held, 2 for bad usage or an invalid config.\n\nflags:")
		fs.PrintDefaults()
	}
	files, err := parseFlags(fs, args)
	if err != nil {
		return exitUsage
	}
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
	engine := rules.NewEngine(cfg.CompiledPolicy, rules.EngineOptions{})

	var (
		findings []finding
		sum      checkSummary
	)
	for _, name := range files {
		sql, err := readInput(name)
		if err != nil {
			fmt.Fprintf(stderr, "pgmoat check: %v\n", err)
			return exitUsage
		}
		sess := rules.NewSession(id)
		if *searchPath != "" {
			sess.SetSearchPath(splitList(*searchPath))
		}
		res := engine.JudgeScript(sess, sql)
		// The files of a run are one migration history: what a file
		// made (a partition of a protected table, a view over one) counts
		// in the files after it.
		for _, v := range res.Statements {
			engine.Learn(id.Database, v.Changes...)
		}
		sum.Files++
		sum.Statements += len(res.Statements)
		for _, v := range res.Statements {
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
			findings = append(findings, newFinding(displayName(name), v))
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
				ghProperty(f.File), f.Line, f.Col, ghProperty("pgmoat: "+f.Decision+" ("+f.Rule+")"),
				ghData(f.Reason+"\n"+f.Statement))
		}
		fmt.Fprintln(stdout, summaryLine(sum))
	default:
		for _, f := range findings {
			fmt.Fprintf(stdout, "%s:%d:%d: %s: %s\n    rule %s: %s\n", f.File, f.Line, f.Col, f.Decision, f.Statement, f.Rule, f.Reason)
		}
		fmt.Fprintln(stdout, summaryLine(sum))
	}
	if sum.Blocked+sum.Held > 0 {
		return exitFindings
	}
	return exitOK
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
	return fmt.Sprintf("pgmoat check: %s: %d file(s), %d statement(s): %d blocked, %d held, %d logged",
		verdict, s.Files, s.Statements, s.Blocked, s.Held, s.Logged)
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
