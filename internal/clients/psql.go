package clients

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgmoat/pgmoat/internal/pgtest"
)

// PsqlPath returns the psql binary matching the server binaries pgtest
// uses, or the one on PATH.
func PsqlPath() (string, error) {
	if dir, err := pgtest.BinDir(); err == nil {
		p := filepath.Join(dir, "psql")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	p, err := exec.LookPath("psql")
	if err != nil {
		return "", errors.New("psql not found; " + pgtest.InstallHint)
	}
	return p, nil
}

// PsqlCommand returns `psql -X -d connString args...` with an environment
// free of the caller's PG* variables and English messages. Use it for
// what Psql cannot do, such as interrupting psql mid-query.
func PsqlCommand(ctx context.Context, connString string, args ...string) (*exec.Cmd, error) {
	path, err := PsqlPath()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, path, append([]string{"-X", "-d", connString}, args...)...)
	cmd.Env = cleanEnv()
	return cmd, nil
}

// Psql runs psql against connString with script on its standard input and
// returns what it printed and its exit status. -X (no psqlrc) is always
// given; ON_ERROR_STOP and output options are the caller's, in args. A psql
// that cannot be started, or runs for over two minutes, fails t.
func Psql(t testing.TB, connString, script string, args ...string) (stdout, stderr string, exitCode int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd, err := PsqlCommand(ctx, connString, args...)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdin = strings.NewReader(script)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("psql did not finish within two minutes; stderr: %s", errOut.String())
	}
	var exit *exec.ExitError
	switch {
	case err == nil:
		return out.String(), errOut.String(), 0
	case errors.As(err, &exit):
		return out.String(), errOut.String(), exit.ExitCode()
	default:
		t.Fatalf("running psql: %v", err)
		return "", "", -1
	}
}

// cleanEnv is the process environment without PG* variables, which would
// otherwise override or add to the connection string, and with C messages.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "LC_") || strings.HasPrefix(kv, "LANG=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LC_ALL=C", "PGCONNECT_TIMEOUT=20")
}
