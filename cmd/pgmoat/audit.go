package main

import (
	"context"
	"fmt"
	"io"

	"github.com/pgmoat/pgmoat/audit"
)

func runAudit(_ context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "verify" {
		fmt.Fprintln(stderr, "usage: pgmoat audit verify FILE...\n\nChecks the hash chain of audit log files, given oldest first (rotated files\ncontinue the chain of the file before them). Exit 0 when intact, 1 at the\nfirst broken line, which is named.")
		return exitUsage
	}
	fs := newFlagSet("audit verify", stderr)
	files, err := parseFlags(fs, args[1:])
	if err != nil {
		return exitUsage
	}
	if len(files) == 0 {
		fmt.Fprintln(stderr, "pgmoat audit verify: name at least one file")
		return exitUsage
	}
	return audit.VerifyCommand(stdout, files)
}
