package clients

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/pgmoat/pgmoat/internal/pgtest"
)

// PgToolPath returns PostgreSQL's client program name (pg_dump,
// pg_restore, pg_dumpall, pg_basebackup, ...) from the server binaries
// pgtest uses, or from PATH.
func PgToolPath(name string) (string, error) {
	if dir, err := pgtest.BinDir(); err == nil {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", errors.New(name + " not found; " + pgtest.InstallHint)
	}
	return p, nil
}

// PgTool runs PostgreSQL's client program name with args, stdin as its
// standard input, in an environment free of the caller's PG* variables,
// and returns what it printed and its exit status. A program that cannot
// be started, or runs for over two minutes, fails t.
func PgTool(t testing.TB, stdin []byte, name string, args ...string) (stdout, stderr []byte, exitCode int) {
	t.Helper()
	path, err := PgToolPath(name)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = cleanEnv()
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s %v did not finish in 2 minutes\nstderr: %s", name, args, errOut.String())
	}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		exitCode = exit.ExitCode()
	default:
		t.Fatalf("running %s: %v", name, err)
	}
	return out.Bytes(), errOut.Bytes(), exitCode
}
