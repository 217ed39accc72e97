package pgtest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// InstallHint is appended to errors about missing PostgreSQL binaries.
const InstallHint = "install them with scripts/ensure-deps.sh " +
	"(or: apt-get install -y postgresql postgresql-contrib postgresql-client)"

// ErrNoBinaries is wrapped by BinDir's error when no PostgreSQL server
// binaries can be found.
var ErrNoBinaries = errors.New("PostgreSQL server binaries not found")

// BinDir returns the directory holding the PostgreSQL server binaries
// (initdb, postgres, psql, pgbench): $PGMOAT_PG_BINDIR if set, else the
// highest version under /usr/lib/postgresql/*/bin, else `pg_config --bindir`.
func BinDir() (string, error) {
	if d := os.Getenv("PGMOAT_PG_BINDIR"); d != "" {
		if !hasServer(d) {
			return "", fmt.Errorf("%w in PGMOAT_PG_BINDIR=%s; %s", ErrNoBinaries, d, InstallHint)
		}
		return d, nil
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	best, bestVersion := "", -1.0
	for _, m := range matches {
		v, err := strconv.ParseFloat(filepath.Base(filepath.Dir(filepath.Dir(m))), 64)
		if err != nil || v <= bestVersion || !hasServer(filepath.Dir(m)) {
			continue
		}
		best, bestVersion = filepath.Dir(m), v
	}
	if best != "" {
		return best, nil
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		d := strings.TrimSpace(string(out))
		if hasServer(d) {
			return d, nil
		}
	}
	return "", fmt.Errorf("%w (looked in /usr/lib/postgresql/*/bin and `pg_config --bindir`); %s", ErrNoBinaries, InstallHint)
}

func hasServer(dir string) bool {
	for _, name := range []string{"initdb", "postgres"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return false
		}
	}
	return true
}
