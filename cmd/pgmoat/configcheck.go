package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/pgmoat/pgmoat/admin"
	"github.com/pgmoat/pgmoat/config"
)

// Exit status of `pgmoat config check` beyond the shared ones: the running
// instance given with --against could not be asked.
const exitUnreachable = 3

const configUsage = `usage: pgmoat config check FILE [--against URL] [--secrets] [--format text|json]

Validates FILE with the code pgmoat serve uses. With --against (an admin API
URL; a viewer token in PGMOAT_TOKEN), also applies the reload rule against
the instance's configuration in force and prints how protection would change.

Exit status: 0 valid, and protection is not lowered; 1 valid, but a reload
would lower protection (the changes are printed); 2 bad usage, an invalid
file, or a file the running instance would refuse (it lacks a section the
running configuration has); 3 the instance could not be asked.`

// configReport is `pgmoat config check --format json`.
type configReport struct {
	File    string          `json:"file"`
	Valid   bool            `json:"valid"`
	Error   string          `json:"error,omitempty"`
	Hash    string          `json:"hash,omitempty"`
	Summary string          `json:"summary,omitempty"`
	Against *againstReport  `json:"against,omitempty"`
	Changes []config.Change `json:"changes"`
	Lowers  bool            `json:"lowers_protection"`
}

type againstReport struct {
	URL     string `json:"url"`
	File    string `json:"file,omitempty"`
	Hash    string `json:"hash"`
	Summary string `json:"summary"`
}

func runConfig(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "check" {
		fmt.Fprintln(stderr, configUsage)
		return exitUsage
	}
	fs := newFlagSet("config check", stderr)
	against := fs.String("against", "", "admin API `URL` of a running pgmoat to compare with (token from PGMOAT_TOKEN)")
	secrets := fs.Bool("secrets", false, "also read the admin tokens' secrets (token_env, token_file), as serve does")
	format := fs.String("format", "text", "output `format`: text or json")
	fs.Usage = func() { fmt.Fprintln(stderr, configUsage+"\n\nflags:"); fs.PrintDefaults() }
	files, err := parseFlags(fs, args[1:])
	if err != nil {
		return exitUsage
	}
	switch {
	case len(files) != 1:
		fmt.Fprintln(stderr, "pgmoat config check: name exactly one file")
		return exitUsage
	case *format != "text" && *format != "json":
		fmt.Fprintf(stderr, "pgmoat config check: unknown --format %q (want text or json)\n", *format)
		return exitUsage
	}
	rep := configReport{File: files[0], Changes: []config.Change{}}
	code := checkConfig(ctx, &rep, *against, *secrets)
	if *format == "json" {
		printJSON(stdout, rep)
		return code
	}
	if !rep.Valid {
		fmt.Fprintf(stderr, "pgmoat config check: %s\n", rep.Error)
		return code
	}
	fmt.Fprintf(stdout, "%s: valid; policy %s: %s\n", rep.File, rep.Hash, rep.Summary)
	if a := rep.Against; a != nil {
		fmt.Fprintf(stdout, "running at %s: policy %s: %s\n", a.URL, a.Hash, a.Summary)
	}
	switch {
	case rep.Error != "":
		fmt.Fprintf(stderr, "pgmoat config check: %s\n", rep.Error)
	case rep.Against == nil:
	case len(rep.Changes) == 0:
		fmt.Fprintln(stdout, "a reload would not change protection")
	default:
		fmt.Fprintln(stdout, "a reload would change protection:")
		for _, c := range rep.Changes {
			fmt.Fprintf(stdout, "  %s\n", c)
		}
		if rep.Lowers {
			fmt.Fprintln(stdout, "pgmoat config check: the file LOWERS protection")
		}
	}
	return code
}

// checkConfig fills rep and returns the exit status.
func checkConfig(ctx context.Context, rep *configReport, against string, secrets bool) int {
	cfg, err := config.LoadFile(rep.File)
	if err != nil {
		rep.Error = err.Error()
		return exitUsage
	}
	if secrets {
		if err := admin.CheckTokens(cfg.Admin); err != nil {
			rep.Error = (&config.Error{File: rep.File, Err: err}).Error()
			return exitUsage
		}
	}
	next := cfg.Protection()
	rep.Valid, rep.Hash, rep.Summary = true, next.Hash(), next.Summary()
	if against == "" {
		return exitOK
	}
	running, err := (&admin.Client{BaseURL: against, Token: os.Getenv("PGMOAT_TOKEN")}).Policy(ctx)
	if err != nil {
		rep.Error = "cannot compare with the running configuration: " + err.Error()
		var apiErr *admin.APIError
		if errors.As(err, &apiErr) && apiErr.StatusCode == 404 {
			rep.Error += " (is that pgmoat older than GET /api/v1/policy?)"
		}
		return exitUnreachable
	}
	rep.Against = &againstReport{URL: against, File: running.File, Hash: running.Hash, Summary: running.Summary}
	changes, err := config.CheckReload(running.Protection, next)
	if err != nil {
		rep.Error = "a reload would refuse it: " + (&config.Error{File: rep.File, Err: err}).Error()
		return exitUsage
	}
	if changes != nil {
		rep.Changes = changes
	}
	if rep.Lowers = config.Lowers(changes); rep.Lowers {
		return exitFindings
	}
	return exitOK
}
