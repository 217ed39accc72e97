package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Users the harness creates, one per pg_hba authentication method. Each may
// connect over TCP with or without TLS.
const (
	UserTrust = "pgmoat_trust" // trust

	UserClear     = "pgmoat_clear" // password (cleartext on the wire)
	PasswordClear = "clear-pw"

	UserMD5     = "pgmoat_md5" // md5, with the hash stored as md5
	PasswordMD5 = "md5-pw"

	UserSCRAM     = "pgmoat_scram" // scram-sha-256
	PasswordSCRAM = "scram-pw"
)

// The superuser of a started cluster. It authenticates with trust over
// TCP, and has a password so that it also works through a proxy or a client
// that insists on sending one.
const (
	DefaultSuperuser     = "postgres"
	DefaultSuperPassword = "super-pw"
)

// startTimeout bounds the wait for a freshly started postmaster to accept
// connections. Two shared cores running several test binaries can be slow.
const startTimeout = 90 * time.Second

// Options configure Start. The zero value is a temporary cluster on a free
// port that Stop removes.
type Options struct {
	// Port is the TCP port on 127.0.0.1; 0 picks a free one.
	Port int
	// Dir is where the cluster lives; it is created if missing and must not
	// hold a cluster yet. "" makes a temporary directory.
	Dir string
	// Keep leaves Dir in place at Stop, and stops the server with a fast
	// (clean) shutdown rather than an immediate one.
	Keep bool
	// Settings are extra postgresql.conf settings, written as
	// `name = value` after the harness's own, so they win. Values are
	// written verbatim: quote strings ('...').
	Settings map[string]string
}

// Cluster is a PostgreSQL server the tests talk to: one that Start made, or
// the one PGMOAT_TEST_DSN names.
type Cluster struct {
	// Host and Port are the server's TCP address (127.0.0.1 for a started
	// cluster).
	Host string
	Port int
	// Superuser and SuperPassword log in as a superuser.
	Superuser, SuperPassword string
	// CAFile is the PEM of the CA that signed the server's certificate, ""
	// if unknown or the server has no TLS.
	CAFile string
	// ServerCertFile and ServerKeyFile are a certificate and key valid for
	// 127.0.0.1, ::1 and localhost, signed by CertCAFile; usable as pgmoat's
	// client-facing certificate. For a started cluster it is the server's
	// own certificate and CertCAFile == CAFile.
	ServerCertFile, ServerKeyFile string
	// CertCAFile is the CA that signed ServerCertFile. Unlike CAFile it is
	// set for a PGMOAT_TEST_DSN server too.
	CertCAFile string

	// Dir holds the cluster (data/, tls/); DataDir is the data directory and
	// LogFile the server's log. All "" for a PGMOAT_TEST_DSN server, except
	// Dir, which then holds only tls/.
	Dir, DataDir, LogFile string
	// BinDir holds the PostgreSQL binaries used ("" if none were found for
	// a PGMOAT_TEST_DSN server).
	BinDir string

	external  bool
	removeDir bool
	keep      bool
	user      serverUser
	proc      *exec.Cmd
	exited    <-chan struct{}
	waitErr   error

	stopOnce sync.Once
	stopErr  error
}

// Start initialises and starts a throwaway cluster (see the package
// documentation for what it holds) and returns once it accepts connections
// and its users exist. The caller must call Stop.
func Start(opts Options) (*Cluster, error) {
	bin, err := BinDir()
	if err != nil {
		return nil, err
	}
	su, err := currentServerUser()
	if err != nil {
		return nil, err
	}
	c := &Cluster{
		Host:          "127.0.0.1",
		Superuser:     DefaultSuperuser,
		SuperPassword: DefaultSuperPassword,
		BinDir:        bin,
		keep:          opts.Keep,
		user:          su,
	}
	if opts.Dir == "" {
		base, err := tempBase(su)
		if err != nil {
			return nil, err
		}
		removeStale(base)
		dir, err := os.MkdirTemp(base, stalePrefix)
		if err != nil {
			return nil, err
		}
		c.Dir, c.removeDir = dir, !opts.Keep
		// The owner file lets a later Start remove the directory once this
		// process is gone; a kept directory must not have one.
		if !opts.Keep {
			if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
				c.Stop()
				return nil, err
			}
		}
	} else {
		dir, err := filepath.Abs(opts.Dir)
		if err != nil {
			return nil, err
		}
		if _, err := os.Stat(filepath.Join(dir, "data")); err == nil {
			return nil, fmt.Errorf("%s already holds a cluster (data/); remove it or pick another directory", dir)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		c.Dir, c.removeDir = dir, !opts.Keep
	}
	c.DataDir = filepath.Join(c.Dir, "data")
	c.LogFile = filepath.Join(c.DataDir, "postgres.log")

	if err := c.initialise(opts); err != nil {
		c.Stop()
		return nil, err
	}
	if err := c.launchFreePort(opts.Port); err != nil {
		c.Stop()
		return nil, err
	}
	if err := c.createUsers(); err != nil {
		c.Stop()
		return nil, fmt.Errorf("creating the test users: %w%s", err, c.logTailSuffix())
	}
	return c, nil
}

// initialise runs initdb and writes the certificates, postgresql.conf and
// pg_hba.conf.
func (c *Cluster) initialise(opts Options) error {
	if err := c.user.chown(c.Dir); err != nil {
		return fmt.Errorf("giving %s to the postgres OS user: %w", c.Dir, err)
	}
	cmd := c.user.command(c.Dir, filepath.Join(c.BinDir, "initdb"),
		"-D", c.DataDir, "-U", c.Superuser, "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("initdb failed: %v\n%s", err, out)
	}

	certs, err := writeCerts(filepath.Join(c.Dir, "tls"))
	if err != nil {
		return fmt.Errorf("making TLS certificates: %w", err)
	}
	c.CAFile, c.CertCAFile = certs.CA, certs.CA
	c.ServerCertFile, c.ServerKeyFile = certs.Cert, certs.Key
	// The server's own copies: PostgreSQL insists that its key belongs to
	// it and is not readable by others, and the test process may not be
	// able to read files the server owns.
	for _, f := range []struct{ from, to string }{
		{certs.Cert, "server.crt"}, {certs.Key, "server.key"},
	} {
		b, err := os.ReadFile(f.from)
		if err != nil {
			return err
		}
		to := filepath.Join(c.DataDir, f.to)
		if err := os.WriteFile(to, b, 0o600); err != nil {
			return err
		}
		if err := c.user.chown(to); err != nil {
			return err
		}
	}

	conf, err := os.OpenFile(filepath.Join(c.DataDir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = conf.WriteString(c.serverConf(opts.Settings))
	if cerr := conf.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing postgresql.conf: %w", err)
	}
	if err := os.WriteFile(filepath.Join(c.DataDir, "pg_hba.conf"), []byte(c.hbaConf()), 0o600); err != nil {
		return fmt.Errorf("writing pg_hba.conf: %w", err)
	}
	return c.user.chown(filepath.Join(c.DataDir, "pg_hba.conf"))
}

func (c *Cluster) serverConf(extra map[string]string) string {
	// The socket path must fit in sun_path (107 bytes) with its file name.
	socketDir := c.DataDir
	if len(socketDir)+len("/.s.PGSQL.65535") > 100 {
		socketDir = ""
	}
	var b strings.Builder
	b.WriteString("\n# pgtest: a throwaway cluster for tests; durability is off on purpose.\n")
	for _, kv := range [][2]string{
		{"listen_addresses", "'127.0.0.1'"},
		{"unix_socket_directories", quoteConf(socketDir)},
		{"max_connections", "300"},
		{"shared_buffers", "'64MB'"},
		{"fsync", "off"},
		{"synchronous_commit", "off"},
		{"full_page_writes", "off"},
		{"max_wal_size", "'1GB'"},
		{"huge_pages", "off"},
		{"logging_collector", "off"},
		{"log_line_prefix", "'%m [%p] %q%u@%d '"},
		{"log_timezone", "'UTC'"},
		{"timezone", "'UTC'"},
		{"ssl", "on"},
		{"ssl_cert_file", "'server.crt'"},
		{"ssl_key_file", "'server.key'"},
		{"password_encryption", "'scram-sha-256'"},
	} {
		fmt.Fprintf(&b, "%s = %s\n", kv[0], kv[1])
	}
	keys := make([]string, 0, len(extra))
	for k := range extra {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "%s = %s\n", k, extra[k])
	}
	return b.String()
}

func (c *Cluster) hbaConf() string {
	var b strings.Builder
	b.WriteString("# pgtest: one user per authentication method; `host` matches TLS and plain alike.\n")
	b.WriteString("local all all trust\n")
	for _, l := range [][2]string{
		{c.Superuser, "trust"},
		{UserTrust, "trust"},
		{UserClear, "password"},
		{UserMD5, "md5"},
		{UserSCRAM, "scram-sha-256"},
		// Roles that tests create themselves: md5 uses SCRAM when the
		// stored password is a SCRAM verifier.
		{"all", "md5"},
	} {
		for _, addr := range []string{"127.0.0.1/32", "::1/128"} {
			fmt.Fprintf(&b, "host all %s %s %s\n", l[0], addr, l[1])
		}
	}
	return b.String()
}

func quoteConf(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// launchFreePort starts the postmaster on port, or on a free port when
// port is 0, retrying with another port when a concurrent test binary took
// the one picked in between.
func (c *Cluster) launchFreePort(port int) error {
	if port != 0 {
		return c.launch(port)
	}
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		p, perr := FreePort()
		if perr != nil {
			return perr
		}
		err = c.launch(p)
		if err == nil || !errors.Is(err, errPortInUse) {
			return err
		}
	}
	return err
}

var errPortInUse = errors.New("port in use")

// FreePort asks the kernel for a free TCP port on 127.0.0.1. Another
// process may take it before the caller listens on it; the caller's own
// "address in use" then says so.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// launch starts the postmaster in the background and waits until it takes
// connections.
func (c *Cluster) launch(port int) error {
	logf, err := os.OpenFile(c.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	logStart, _ := logf.Seek(0, 2)
	cmd := c.user.command(c.Dir, filepath.Join(c.BinDir, "postgres"), "-D", c.DataDir, "-p", strconv.Itoa(port))
	cmd.Stdout, cmd.Stderr = logf, logf
	// SIGQUIT (immediate shutdown) if the starting process dies.
	exited, err := StartTied(cmd, syscall.SIGQUIT, &c.waitErr)
	logf.Close()
	if err != nil {
		return fmt.Errorf("starting postgres: %w", err)
	}
	c.Port = port
	c.proc = cmd
	c.exited = exited

	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	for {
		select {
		case <-exited:
			c.proc = nil
			log := c.logSince(logStart)
			if strings.Contains(log, "could not bind") || strings.Contains(log, "Address already in use") {
				return fmt.Errorf("%w: %d: %s", errPortInUse, port, log)
			}
			return fmt.Errorf("postgres exited during start-up (%v); server log:\n%s", c.waitErr, log)
		case <-ctx.Done():
			return fmt.Errorf("postgres did not accept connections within %v%s", startTimeout, c.logTailSuffix())
		case <-time.After(50 * time.Millisecond):
		}
		if c.ping(ctx) == nil {
			return nil
		}
	}
}

func (c *Cluster) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := pgconn.Connect(ctx, c.SuperConnString("postgres", "sslmode=disable"))
	if err != nil {
		return err
	}
	return conn.Close(ctx)
}

// createUsers makes the per-method users, gives the superuser its password
// and lets every user create tables in databases made from template1.
func (c *Cluster) createUsers() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := c.ExecSQL(ctx, "postgres", fmt.Sprintf(`
ALTER ROLE %[1]s PASSWORD '%[2]s';
CREATE ROLE %[3]s LOGIN;
CREATE ROLE %[4]s LOGIN PASSWORD '%[5]s';
CREATE ROLE %[6]s LOGIN PASSWORD '%[7]s';
SET password_encryption = 'md5';
CREATE ROLE %[8]s LOGIN PASSWORD '%[9]s';
RESET password_encryption;
GRANT ALL ON SCHEMA public TO PUBLIC;
`, pgx.Identifier{c.Superuser}.Sanitize(), c.SuperPassword, UserTrust, UserClear, PasswordClear,
		UserSCRAM, PasswordSCRAM, UserMD5, PasswordMD5))
	if err != nil {
		return err
	}
	// Since PostgreSQL 15 only the owner may create in public; tests run
	// as the per-method users in databases the superuser owns.
	return c.ExecSQL(ctx, "template1", "GRANT ALL ON SCHEMA public TO PUBLIC")
}

// Stop stops the server and removes its directory (unless Options.Keep).
// It is safe to call more than once and on a partly started cluster.
func (c *Cluster) Stop() error {
	c.stopOnce.Do(func() {
		if c.proc != nil {
			sig := syscall.SIGQUIT // immediate: nothing here needs to survive
			if c.keep {
				sig = syscall.SIGINT // fast: leave a consistent data directory
			}
			_ = c.proc.Process.Signal(sig)
			select {
			case <-c.exited:
			case <-time.After(30 * time.Second):
				_ = c.proc.Process.Kill()
				<-c.exited
			}
			c.proc = nil
		}
		if c.removeDir && c.Dir != "" {
			c.stopErr = os.RemoveAll(c.Dir)
		}
	})
	return c.stopErr
}

// Addr is the server's host:port.
func (c *Cluster) Addr() string { return net.JoinHostPort(c.Host, strconv.Itoa(c.Port)) }

// ConnString returns a postgres:// URL for user (with password, if not
// empty) and database db. params are key=value pairs added as URL query
// parameters, such as "sslmode=disable" or "sslrootcert=" + c.CAFile.
func (c *Cluster) ConnString(user, password, db string, params ...string) string {
	u := url.URL{Scheme: "postgres", Host: c.Addr(), Path: "/" + db}
	if password != "" {
		u.User = url.UserPassword(user, password)
	} else {
		u.User = url.User(user)
	}
	q := make([]string, 0, len(params))
	for _, p := range params {
		k, v, _ := strings.Cut(p, "=")
		q = append(q, url.QueryEscape(k)+"="+url.QueryEscape(v))
	}
	u.RawQuery = strings.Join(q, "&")
	return u.String()
}

// SuperConnString is ConnString for the superuser.
func (c *Cluster) SuperConnString(db string, params ...string) string {
	return c.ConnString(c.Superuser, c.SuperPassword, db, params...)
}

// ExecSQL runs sql (one or more statements, simple protocol) as the
// superuser in database db.
func (c *Cluster) ExecSQL(ctx context.Context, db, sql string) error {
	conn, err := pgconn.Connect(ctx, c.SuperConnString(db, "sslmode=disable"))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql).ReadAll()
	return err
}

// LogTail returns the last n lines of the server log ("" if there is no
// log to read).
func (c *Cluster) LogTail(n int) string {
	if c.LogFile == "" {
		return ""
	}
	b, err := os.ReadFile(c.LogFile)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (c *Cluster) logTailSuffix() string {
	if t := c.LogTail(30); t != "" {
		return "; server log (" + c.LogFile + ") ends:\n" + t
	}
	return ""
}

func (c *Cluster) logSince(offset int64) string {
	b, err := os.ReadFile(c.LogFile)
	if err != nil || int64(len(b)) < offset {
		return ""
	}
	return strings.TrimSpace(string(b[offset:]))
}
