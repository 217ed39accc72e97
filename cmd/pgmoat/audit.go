package main

import (
	"context"
	"fmt"
	"io"

	"github.com/pgmoat/pgmoat/audit"
)

func runAudit(_ context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "verify" {
		fmt.Fprintln(stderr, auditUsage)
		return exitUsage
	}
	fs := newFlagSet("audit verify", stderr)
	var opts audit.VerifyOptions
	fs.BoolVar(&opts.FromGenesis, "from-genesis", false, "require the first file to start the log (its first line is the chain's genesis), so that lines cut from the start are a break")
	fs.Usage = func() { fmt.Fprintln(stderr, auditUsage+"\n\nflags:"); fs.PrintDefaults() }
	files, err := parseFlags(fs, args[1:])
	if err != nil {
		return exitUsage
	}
	if len(files) == 0 {
		fmt.Fprintln(stderr, "pgmoat audit verify: name at least one file")
		return exitUsage
	}
	chains, order := byInstance(files)
	if len(order) < 2 {
		return audit.VerifyCommand(stdout, opts, files)
	}
	code := exitOK
	for _, inst := range order {
		name := "instance " + inst
		if inst == "" {
			name = "files without an instance"
		}
		fmt.Fprintf(stdout, "%s (%d file(s)):\n", name, len(chains[inst]))
		if c := audit.VerifyCommand(stdout, opts, chains[inst]); c != exitOK {
			code = c
		}
	}
	return code
}

// byInstance groups files by the instance that wrote them, keeping their
// order; a file that cannot be read goes with the group before it, so
// that verifying reports it.
func byInstance(files []string) (map[string][]string, []string) {
	chains := map[string][]string{}
	var order []string
	last := ""
	for _, f := range files {
		inst, err := audit.InstanceOf(f)
		if err != nil || f == "-" {
			inst = last
		}
		if _, seen := chains[inst]; !seen {
			order = append(order, inst)
		}
		chains[inst] = append(chains[inst], f)
		last = inst
	}
	return chains, order
}

const auditUsage = `usage: pgmoat audit verify [--from-genesis] FILE...

Checks the hash chain of audit log files, given oldest first (rotated files
continue the chain of the file before them), and prints the chain's head
(sequence number and hash) to compare with one recorded elsewhere, such as
pgmoat_audit_chain_head_sequence on /metrics. Exit 0 when intact, 1 at the
first broken line, which is named.`
