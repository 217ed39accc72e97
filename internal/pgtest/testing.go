package pgtest

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// EnvDSN names the environment variable that points the tests at an
// existing server instead of a throwaway cluster. Its user must be a
// superuser (NewDatabase creates databases).
const EnvDSN = "PGMOAT_TEST_DSN"

var current *Cluster

// Main starts a throwaway cluster for this test binary (or uses the server
// named by PGMOAT_TEST_DSN), runs the tests and stops the cluster. Use it as
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
//
// A machine without PostgreSQL binaries fails the tests loudly, with the
// install hint, rather than skipping them.
func Main(m *testing.M) int {
	var (
		c   *Cluster
		err error
	)
	if dsn := os.Getenv(EnvDSN); dsn != "" {
		c, err = external(dsn)
	} else {
		c, err = Start(Options{})
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
		return 1
	}
	current = c
	defer func() {
		if err := c.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: stopping the cluster: %v\n", err)
		}
	}()
	return m.Run()
}

// external describes the server named by dsn. The certificate it hands out
// for pgmoat's client-facing TLS is made here; CAFile is set only if dsn
// names an sslrootcert.
func external(dsn string) (*Cluster, error) {
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", EnvDSN, err)
	}
	c := &Cluster{
		Host:          cfg.Host,
		Port:          int(cfg.Port),
		Superuser:     cfg.User,
		SuperPassword: cfg.Password,
		external:      true,
	}
	if c.Host == "localhost" || strings.HasPrefix(c.Host, "/") {
		c.Host = "127.0.0.1"
	}
	if root := cfg.RuntimeParams["sslrootcert"]; root != "" {
		c.CAFile = root
	} else if u := regexp.MustCompile(`sslrootcert=([^& ]+)`).FindStringSubmatch(dsn); u != nil {
		c.CAFile = u[1]
	}
	c.BinDir, _ = BinDir()
	dir, err := os.MkdirTemp("", stalePrefix+"ext-")
	if err != nil {
		return nil, err
	}
	c.Dir, c.removeDir = dir, true
	certs, err := writeCerts(dir + "/tls")
	if err != nil {
		c.Stop()
		return nil, err
	}
	c.ServerCertFile, c.ServerKeyFile, c.CertCAFile = certs.Cert, certs.Key, certs.CA
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.ExecSQL(ctx, "postgres", "SELECT 1"); err != nil {
		c.Stop()
		return nil, fmt.Errorf("%s: cannot reach the server as %s: %w", EnvDSN, c.Superuser, err)
	}
	return c, nil
}

// Get returns the cluster Main started. It fails t if Main is not this
// package's TestMain.
func Get(t testing.TB) *Cluster {
	t.Helper()
	if current == nil {
		t.Fatal("pgtest.Get: no cluster; add func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) } to this package's tests")
	}
	return current
}

var dbSeq atomic.Int64

var notIdent = regexp.MustCompile(`[^a-z0-9_]+`)

// NewDatabase creates a database for t (named after the test) that every
// role may connect to and create tables in, and drops it, forcing off any
// sessions still in it, when t ends.
func (c *Cluster) NewDatabase(t testing.TB) string {
	t.Helper()
	prefix := notIdent.ReplaceAllString(strings.ToLower(t.Name()), "_")
	if len(prefix) > 30 {
		prefix = prefix[:30]
	}
	name := fmt.Sprintf("pgtest_%s_%d_%d", prefix, os.Getpid(), dbSeq.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Separate statements: CREATE DATABASE cannot run in the implicit
	// transaction of a multi-statement query.
	for _, sql := range []string{"CREATE DATABASE %s", "GRANT ALL ON DATABASE %s TO PUBLIC"} {
		if err := c.ExecSQL(ctx, "postgres", fmt.Sprintf(sql, pgx.Identifier{name}.Sanitize())); err != nil {
			t.Fatalf("pgtest: creating database %s: %v%s", name, err, c.logTailSuffix())
		}
	}
	if c.external {
		// A server we did not initialise may not have opened public up
		// in template1.
		if err := c.ExecSQL(ctx, name, "GRANT ALL ON SCHEMA public TO PUBLIC"); err != nil {
			t.Fatalf("pgtest: granting on %s: %v", name, err)
		}
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := c.ExecSQL(ctx, "postgres", fmt.Sprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", pgx.Identifier{name}.Sanitize())); err != nil {
			t.Errorf("pgtest: dropping database %s: %v", name, err)
		}
	})
	return name
}

// Exec runs sql (one or more statements) as the superuser in database db
// and fails t on error.
func (c *Cluster) Exec(t testing.TB, db, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := c.ExecSQL(ctx, db, sql); err != nil {
		t.Fatalf("pgtest: exec in %s: %v\nSQL: %s", db, err, sql)
	}
}

// Connect opens a pgx connection as the superuser to db (without TLS) and
// closes it when t ends.
func (c *Cluster) Connect(t testing.TB, db string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.SuperConnString(db, "sslmode=disable"))
	if err != nil {
		t.Fatalf("pgtest: connecting to %s: %v", db, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// AuthUser is one of the harness's per-method users.
type AuthUser struct {
	Name, Password string
	// Method is the pg_hba method the server applies to Name.
	Method string
}

// AuthUsersList lists the harness's users, one per authentication method.
var AuthUsersList = []AuthUser{
	{UserTrust, "", MethodTrust},
	{UserClear, PasswordClear, MethodPassword},
	{UserMD5, PasswordMD5, MethodMD5},
	{UserSCRAM, PasswordSCRAM, MethodSCRAM},
}

var (
	authOnce   sync.Once
	authReason string
)

// AuthUsers skips t unless the users in AuthUsersList exist and the server
// authenticates each with its method. On a cluster Start made they always
// do; a PGMOAT_TEST_DSN server may lack them.
func (c *Cluster) AuthUsers(t testing.TB) {
	t.Helper()
	authOnce.Do(func() { authReason = c.checkAuthUsers() })
	if authReason != "" {
		t.Skipf("pgtest: the per-method test users are not usable on this server: %s", authReason)
	}
}

func (c *Cluster) checkAuthUsers() string {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, u := range AuthUsersList {
		m, err := c.AuthMethod(ctx, u.Name)
		if err != nil {
			return err.Error()
		}
		if m != u.Method {
			return fmt.Sprintf("%s authenticates with %s, not %s", u.Name, m, u.Method)
		}
		conn, err := pgconn.Connect(ctx, c.ConnString(u.Name, u.Password, "postgres", "sslmode=disable"))
		if err != nil {
			return fmt.Sprintf("%s cannot log in: %v", u.Name, err)
		}
		conn.Close(ctx)
	}
	return ""
}
