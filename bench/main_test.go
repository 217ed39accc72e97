package main

import (
	"io"
	"slices"
	"testing"
)

func TestParseOptionsPgmoatB(t *testing.T) {
	parse := func(args ...string) (options, error) {
		return parseOptions(args, defaults(false), io.Discard)
	}
	o, err := parse()
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{targetDirect, targetPgBouncer, targetPgmoat}; !slices.Equal(o.Targets, want) {
		t.Errorf("default targets %v, want %v (no pgmoat-b unless asked for)", o.Targets, want)
	}
	if o.PendingHolds != 1000 {
		t.Errorf("default -pending-holds %d, want 1000", o.PendingHolds)
	}

	o, err = parse("-pgmoat-b", "/tmp/pgmoat-old", "-pgmoat-b-env", "GOMAXPROCS=1", "-pgmoat-b-env", "GOGC=off",
		"-pgmoat-env", "GODEBUG=x=1")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{targetDirect, targetPgBouncer, targetPgmoat, targetPgmoatB}; !slices.Equal(o.Targets, want) {
		t.Errorf("targets %v, want %v", o.Targets, want)
	}
	if o.PgmoatB != "/tmp/pgmoat-old" || !slices.Equal(o.PgmoatBEnv, []string{"GOMAXPROCS=1", "GOGC=off"}) ||
		!slices.Equal(o.PgmoatEnv, []string{"GODEBUG=x=1"}) {
		t.Errorf("got %+v", o)
	}

	// -targets narrows the others; the order is always the tables' order.
	o, err = parse("-targets", "pgmoat-b,pgmoat", "-pgmoat-b", "x")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{targetPgmoat, targetPgmoatB}; !slices.Equal(o.Targets, want) {
		t.Errorf("targets %v, want %v", o.Targets, want)
	}

	for _, bad := range [][]string{
		{"-targets", "direct,pgmoat-b"},           // pgmoat-b without a binary
		{"-pgmoat-b-env", "GOMAXPROCS=1"},         // env for a pgmoat-b that does not run
		{"-pgmoat-env", "GOMAXPROCS"},             // not K=V
		{"-pgmoat-b", "x", "-pgmoat-b-env", "=1"}, // no key
		{"-targets", "direct,pgmoat-c"},           // unknown target
	} {
		if _, err := parse(bad...); err == nil {
			t.Errorf("no error for %q", bad)
		}
	}
}
