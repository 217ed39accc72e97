package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pgmoat/pgmoat/admin"
	"github.com/pgmoat/pgmoat/approvals"
	"github.com/pgmoat/pgmoat/migration"
	"github.com/pgmoat/pgmoat/rules"
)

// adminFlags are the flags every admin API client command takes.
type adminFlags struct {
	url    string
	format string
}

func (a *adminFlags) register(fs *flag.FlagSet) {
	def := os.Getenv("PGMOAT_ADMIN_URL")
	if def == "" {
		def = admin.DefaultURL
	}
	fs.StringVar(&a.url, "admin", def, "admin API `URL` (env PGMOAT_ADMIN_URL); the token comes from PGMOAT_TOKEN")
	fs.StringVar(&a.format, "format", "text", "output `format`: text or json")
}

func (a *adminFlags) client() *admin.Client {
	return &admin.Client{BaseURL: a.url, Token: os.Getenv("PGMOAT_TOKEN")}
}

// apiFailed reports an admin API error and returns the exit code for it.
func apiFailed(stderr io.Writer, cmd string, err error) int {
	fmt.Fprintf(stderr, "pgmoat %s: %v\n", cmd, err)
	return 1
}

// printList prints items as a JSON array (format json, [] when empty) or
// as a table: header, then one tab-separated row per item.
func printList[T any](w io.Writer, format string, items []T, none, header string, row func(T) string) {
	if format == "json" {
		if items == nil {
			items = []T{}
		}
		printJSON(w, items)
		return
	}
	if len(items) == 0 {
		fmt.Fprintln(w, none)
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, it := range items {
		fmt.Fprintln(tw, row(it))
	}
	tw.Flush()
}

func printJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

const holdsUsage = `usage:
  pgmoat holds list [--all]              held statements (pending only, unless --all)
  pgmoat holds show ID
  pgmoat holds approve ID --reason "…"
  pgmoat holds deny ID --reason "…"

flags common to all: --admin URL (env PGMOAT_ADMIN_URL), --format text|json;
the bearer token is read from PGMOAT_TOKEN.`

func runHolds(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, holdsUsage)
		return exitUsage
	}
	sub := args[0]
	fs := newFlagSet("holds "+sub, stderr)
	var af adminFlags
	af.register(fs)
	all := fs.Bool("all", false, "list: include holds that have ended")
	reason := fs.String("reason", "", "approve/deny: why (required; it goes to the audit log)")
	pos, err := parseFlags(fs, args[1:])
	if err != nil {
		return exitUsage
	}
	c := af.client()
	switch sub {
	case "list":
		var statuses []approvals.Status
		if !*all {
			statuses = []approvals.Status{approvals.StatusPending}
		}
		holds, err := c.ListHolds(ctx, statuses...)
		if err != nil {
			return apiFailed(stderr, "holds list", err)
		}
		printList(stdout, af.format, holds, "no holds",
			"ID\tSTATUS\tAPPROVALS\tWAITING\tUSER@DATABASE\tAPPLICATION\tSTATEMENT",
			func(h approvals.HoldInfo) string {
				return fmt.Sprintf("%s\t%s\t%d/%d\t%s\t%s@%s\t%s\t%s", h.ID, h.Status, len(h.Approvals), h.ApprovalsRequired,
					time.Since(h.CreatedAt).Round(time.Second), h.User, h.Database, h.Application, rules.Shorten(h.Statement, 60))
			})
		return exitOK
	case "show", "approve", "deny":
		if len(pos) != 1 {
			fmt.Fprintf(stderr, "pgmoat holds %s: name exactly one hold ID\n", sub)
			return exitUsage
		}
		if sub != "show" && strings.TrimSpace(*reason) == "" {
			fmt.Fprintf(stderr, "pgmoat holds %s: --reason is required (it goes to the audit log)\n", sub)
			return exitUsage
		}
		var h *approvals.HoldInfo
		switch sub {
		case "show":
			h, err = c.GetHold(ctx, pos[0])
		case "approve":
			h, err = c.Approve(ctx, pos[0], *reason)
		case "deny":
			h, err = c.Deny(ctx, pos[0], *reason)
		}
		if err != nil {
			return apiFailed(stderr, "holds "+sub, err)
		}
		if af.format == "json" {
			printJSON(stdout, h)
			return exitOK
		}
		printHold(stdout, h)
		return exitOK
	}
	fmt.Fprintf(stderr, "pgmoat holds: unknown subcommand %q\n\n%s\n", sub, holdsUsage)
	return exitUsage
}

func printHold(w io.Writer, h *approvals.HoldInfo) {
	fmt.Fprintf(w, "hold %s: %s (%d of %d approvals)\n", h.ID, h.Status, len(h.Approvals), h.ApprovalsRequired)
	fmt.Fprintf(w, "  statement:   %s\n", h.Statement)
	fmt.Fprintf(w, "  session:     %s@%s from %s (application %q)\n", h.User, h.Database, h.Client, h.Application)
	fmt.Fprintf(w, "  rule:        %s: %s\n", h.Rule, h.Reason)
	if h.BlastRadius != "" {
		fmt.Fprintf(w, "  measured:    %s\n", h.BlastRadius)
	}
	if h.Instance != "" {
		fmt.Fprintf(w, "  held by:     instance %s\n", h.Instance)
	}
	fmt.Fprintf(w, "  created:     %s, expires %s\n", h.CreatedAt.Format(time.RFC3339), h.ExpiresAt.Format(time.RFC3339))
	for _, a := range h.Approvals {
		fmt.Fprintf(w, "  approved by: %s at %s: %s\n", a.Approver, a.At.Format(time.RFC3339), a.Reason)
	}
	if h.Resolution != "" {
		fmt.Fprintf(w, "  resolution:  %s\n", h.Resolution)
	}
}

func runApprove(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("approve", stderr)
	var af adminFlags
	af.register(fs)
	file := fs.String("file", "", "SQL `file` whose statements are pre-approved (- for stdin; required)")
	var ttl time.Duration
	fs.Func("ttl", "how long the pre-approval lasts, e.g. 2h, 90m or 1d; at most 7d (required)", func(s string) error {
		d, err := approvals.ParseTTL(s)
		if err != nil {
			return err
		}
		if d > approvals.MaxPreApprovalTTL {
			return fmt.Errorf("%s is longer than a pre-approval may last (7d): pre-approvals are for one deploy", s)
		}
		ttl = d
		return nil
	})
	reason := fs.String("reason", "", "why (required; recorded with every use)")
	database := fs.String("database", "", "only for sessions on this database")
	user := fs.String("user", "", "only for sessions of this user")
	uses := fs.Int("uses", 0, "let at most `N` statements through in all, counted across every instance (0: no limit)")
	migFormat := fs.String("migration-format", "auto", "migration file `format`: auto, plain, goose, golang-migrate, dbmate, flyway, sqitch, liquibase")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: pgmoat approve --file migration.sql --ttl 2h --reason \"…\" [--database D] [--user U] [--uses N]\n\nRegisters the fingerprints of the file's statements, so that the same statements\n(literals may differ) pass pgmoat without a hold until the TTL ends. Of a migration\nwith up and down sections (goose, dbmate, Liquibase) only the up section counts;\na down file (*.down.sql, Flyway U…, sqitch revert/) is refused.\nList with `pgmoat preapproval list`, revoke with `pgmoat preapproval revoke ID`.\n\nflags:")
		fs.PrintDefaults()
	}
	if _, err := parseFlags(fs, args); err != nil {
		return exitUsage
	}
	switch {
	case *file == "":
		fmt.Fprintln(stderr, "pgmoat approve: --file is required")
		return exitUsage
	case ttl <= 0:
		fmt.Fprintln(stderr, "pgmoat approve: --ttl is required (e.g. --ttl 2h)")
		return exitUsage
	case strings.TrimSpace(*reason) == "":
		fmt.Fprintln(stderr, "pgmoat approve: --reason is required")
		return exitUsage
	case *uses < 0:
		fmt.Fprintln(stderr, "pgmoat approve: --uses must be 0 (no limit) or more")
		return exitUsage
	}
	text, err := readInput(*file)
	if err != nil {
		fmt.Fprintf(stderr, "pgmoat approve: %v\n", err)
		return exitUsage
	}
	mf, err := migration.ParseFormat(*migFormat)
	if err != nil {
		fmt.Fprintf(stderr, "pgmoat approve: --migration-format: %v\n", err)
		return exitUsage
	}
	// Only what the tool runs going up: a down section pre-approved with
	// it would let a rollback drop what the up made, unreviewed.
	mig, err := migration.Read(*file, text, mf)
	if err != nil {
		fmt.Fprintf(stderr, "pgmoat approve: %v\n", err)
		return exitUsage
	}
	up, ok := mig.Section(migration.Up)
	if !ok {
		fmt.Fprintf(stderr, "pgmoat approve: %s has nothing that runs going up (format %s)\n", displayName(*file), mig.Format)
		return exitUsage
	}
	sql := up.SQL
	p, err := af.client().PreApprove(ctx, admin.PreApproveRequest{SQL: sql, TTL: ttl, Reason: *reason, Database: *database, User: *user, MaxUses: *uses})
	if err != nil {
		return apiFailed(stderr, "approve", err)
	}
	if af.format == "json" {
		printJSON(stdout, p)
		return exitOK
	}
	fmt.Fprintf(stdout, "pre-approval %s: %d statement(s) from %s, by %s, until %s\n", p.ID, len(p.Fingerprints), *file, p.Approver, p.ExpiresAt.Format(time.RFC3339))
	return exitOK
}

func runPreapproval(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	const usage = "usage:\n  pgmoat preapproval list\n  pgmoat preapproval revoke ID\n\nflags: --admin URL (env PGMOAT_ADMIN_URL), --format text|json; token from PGMOAT_TOKEN."
	if len(args) == 0 {
		fmt.Fprintln(stderr, usage)
		return exitUsage
	}
	sub := args[0]
	fs := newFlagSet("preapproval "+sub, stderr)
	var af adminFlags
	af.register(fs)
	pos, err := parseFlags(fs, args[1:])
	if err != nil {
		return exitUsage
	}
	c := af.client()
	switch sub {
	case "list":
		list, err := c.ListPreApprovals(ctx)
		if err != nil {
			return apiFailed(stderr, "preapproval list", err)
		}
		printList(stdout, af.format, list, "no pre-approvals",
			"ID\tSTATUS\tSTATEMENTS\tUSES\tBY\tEXPIRES\tREASON",
			func(p approvals.PreApproval) string {
				used := fmt.Sprint(p.Uses)
				if p.MaxUses > 0 {
					used = fmt.Sprintf("%d/%d", p.Uses, p.MaxUses)
				}
				return fmt.Sprintf("%s\t%s\t%d\t%s\t%s\t%s\t%s", p.ID, p.Status, len(p.Fingerprints), used, p.Approver,
					p.ExpiresAt.Format(time.RFC3339), rules.Shorten(p.Reason, 40))
			})
		return exitOK
	case "revoke":
		if len(pos) != 1 {
			fmt.Fprintln(stderr, "pgmoat preapproval revoke: name exactly one ID")
			return exitUsage
		}
		p, err := c.Revoke(ctx, pos[0])
		if err != nil {
			return apiFailed(stderr, "preapproval revoke", err)
		}
		if af.format == "json" {
			printJSON(stdout, p)
			return exitOK
		}
		fmt.Fprintf(stdout, "pre-approval %s revoked\n", p.ID)
		return exitOK
	}
	fmt.Fprintf(stderr, "pgmoat preapproval: unknown subcommand %q\n\n%s\n", sub, usage)
	return exitUsage
}
