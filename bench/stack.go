package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgmoat/pgmoat/internal/pgtest"
)

// benchDB is the database pgbench's tables live in.
const benchDB = "bench"

// Target names, in the order tables and charts show them.
const (
	targetDirect    = "direct"
	targetPgBouncer = "pgbouncer"
	targetPgmoat    = "pgmoat"
	targetPgmoatB   = "pgmoat-b" // a second pgmoat (-pgmoat-b), for A/B comparisons
)

// target is an address pgbench can be pointed at.
type target struct {
	Name string
	Host string
	Port int
	// Gone reports that the process behind the target has exited (nil
	// for the server itself, whose loss fails every target).
	Gone func() error
	// PID is the relay's process, whose CPU time each run reads (nil for
	// the server itself: its CPU is spread over one backend per client).
	PID func() int
}

// stack is the set of servers under test: PostgreSQL and, in front of it,
// PgBouncer, pgmoat and (for A/B runs) pgmoat-b.
type stack struct {
	dir     string // work directory: configs, logs, audit file
	cluster *pgtest.Cluster
	// hugePages says whether the cluster's shared memory is in huge
	// pages, and why not (see hugePagesSetting).
	hugePages string

	bouncer     *child
	bouncerPort int

	pgmoat  *pgmoatProc // nil when pgmoat is not a target
	pgmoatB *pgmoatProc // nil without -pgmoat-b

	// adminToken is the viewer token both pgmoats accept (in
	// adminTokenFile), for GET /api/v1/holds.
	adminToken     string
	adminTokenFile string
}

// startCluster starts the throwaway PostgreSQL with room for the idle
// sessions step, and the pgbench tables in it.
func (s *stack) startCluster(ctx context.Context, maxConns, scale int, pgbenchBin string) error {
	size := meminfoNumber("Hugepagesize")
	before := hugePagesAvailable()
	huge, why := hugePagesSetting(before, size)
	s.hugePages = why
	c, err := pgtest.Start(pgtest.Options{Settings: map[string]string{
		"max_connections": strconv.Itoa(maxConns),
		// Scale 10 is ~160 MB: keep it in shared buffers so that -S
		// measures the query path, not buffer replacement.
		"shared_buffers":  "'" + strconv.Itoa(sharedBuffersMiB) + "MB'",
		"huge_pages":      huge,
		"log_connections": "off",
	}})
	if err != nil {
		return fmt.Errorf("starting PostgreSQL: %w", err)
	}
	s.cluster = c
	if huge == "try" && hugePagesAvailable() >= before {
		s.hugePages = "off (PostgreSQL fell back to 4 KiB pages): fresh backends are slower than PgBouncer's pooled ones"
	}
	if err := c.ExecSQL(ctx, "postgres", "CREATE DATABASE "+benchDB); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, pgbenchBin, "-i", "-q", "-s", strconv.Itoa(scale),
		"-h", c.Host, "-p", strconv.Itoa(c.Port), "-U", c.Superuser, benchDB)
	cmd.Env = append(os.Environ(), "PGSSLMODE=disable", "PGPASSWORD="+c.SuperPassword)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("pgbench -i: %v\n%s", err, out)
	}
	return nil
}

// superConn connects to the bench database directly as the superuser.
func (s *stack) superConn(ctx context.Context) (*pgconn.PgConn, error) {
	return pgconn.Connect(ctx, s.cluster.SuperConnString(benchDB, "sslmode=disable"))
}

// connString is a plain-TCP connection string for the bench database
// through the given port (the server, PgBouncer or pgmoat).
func (s *stack) connString(port int, appName string) string {
	return fmt.Sprintf("postgres://%s:%s@127.0.0.1:%d/%s?sslmode=disable&application_name=%s&connect_timeout=10",
		s.cluster.Superuser, s.cluster.SuperPassword, port, benchDB, appName)
}

// probe opens a session through port and runs a query.
func (s *stack) probe(port int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgconn.Connect(ctx, s.connString(port, "pgmoat-bench-probe"))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "SELECT count(*) FROM pgbench_branches").ReadAll()
	return err
}

// startPgBouncer starts Debian's PgBouncer in session mode in front of the
// cluster, with a pool large enough for every pgbench client.
func (s *stack) startPgBouncer(maxClients int) error {
	port, err := pgtest.FreePort()
	if err != nil {
		return err
	}
	dir := filepath.Join(s.dir, "pgbouncer")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	ini := filepath.Join(dir, "pgbouncer.ini")
	users := filepath.Join(dir, "userlist.txt")
	conf := fmt.Sprintf(`[databases]
* = host=%s port=%d

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = trust
auth_file = %s
pool_mode = session
max_client_conn = %d
default_pool_size = %d
server_tls_sslmode = disable
client_tls_sslmode = disable
ignore_startup_parameters = extra_float_digits
log_connections = 0
log_disconnections = 0
`, s.cluster.Host, s.cluster.Port, port, users, maxClients+50, maxClients+8)
	if err := os.WriteFile(ini, []byte(conf), 0o644); err != nil {
		return err
	}
	// trust still wants the user in the auth file.
	if err := os.WriteFile(users, []byte(fmt.Sprintf("%q %q\n", s.cluster.Superuser, s.cluster.SuperPassword)), 0o644); err != nil {
		return err
	}
	bin, err := exec.LookPath("pgbouncer")
	if err != nil {
		return fmt.Errorf("pgbouncer not found (bench/run.sh installs Debian's package): %w", err)
	}
	cred, err := nonRootCredential()
	if err != nil {
		return err
	}
	c, err := startChild("pgbouncer", filepath.Join(dir, "pgbouncer.log"), cred, nil, bin, ini)
	if err != nil {
		return err
	}
	s.bouncer, s.bouncerPort = c, port
	if err := c.waitReady(30*time.Second, func() error { return s.probe(port) }); err != nil {
		return err
	}
	// The credential is set on the process itself (no su or runuser in
	// between) and PgBouncer runs in the foreground (no -d): the child is
	// PgBouncer, whose CPU time the matrix reads.
	return checkProcName(c.pid(), "pgbouncer")
}

// nonRootCredential is the identity PgBouncer runs as: itself when not
// root; the postgres OS user (which the harness makes when missing) when
// root, since PgBouncer refuses to run as root.
func nonRootCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("PgBouncer refuses to run as root and there is no postgres OS user: %w", err)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return nil, err
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return nil, err
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, nil
}

// pgmoatProc is one pgmoat the bench runs: the main one (target pgmoat)
// and, with -pgmoat-b, a second build or setting of it (target pgmoat-b),
// each with its own ports, config file, audit file and logs.
type pgmoatProc struct {
	name      string   // target name: pgmoat or pgmoat-b
	bin       string   // absolute path of the binary
	env       []string // K=V added to its environment
	port      int      // client listener
	adminPort int      // admin listener: /metrics, /api/v1/holds
	config    string
	starts    int
	proc      *child
	// profileDir, when set, makes the first process (the one the matrix
	// runs through) write CPU and allocation profiles there at exit.
	profileDir string
}

// pid is the running process's id.
func (p *pgmoatProc) pid() int { return p.proc.pid() }

// gone is nil while the current process runs (the memory steps replace
// it, so this reads p.proc at the time of the call).
func (p *pgmoatProc) gone() error { return p.proc.gone() }

// pgmoats lists the pgmoats the bench runs: pgmoat, then pgmoat-b.
func (s *stack) pgmoats() []*pgmoatProc {
	var ps []*pgmoatProc
	for _, p := range []*pgmoatProc{s.pgmoat, s.pgmoatB} {
		if p != nil {
			ps = append(ps, p)
		}
	}
	return ps
}

// holdApp is the application_name of the pending-holds step's sessions:
// the bench policy holds their destructive statements on protected tables.
const holdApp = "pgmoat-bench-hold"

// newPgmoat picks ports for a pgmoat and writes its config (see
// writePgmoatConfig); it does not start it.
func (s *stack) newPgmoat(name, bin string, env []string, maxConns int) (*pgmoatProc, error) {
	p := &pgmoatProc{name: name, bin: bin, env: env}
	var err error
	if p.port, err = pgtest.FreePort(); err != nil {
		return nil, err
	}
	if p.adminPort, err = pgtest.FreePort(); err != nil {
		return nil, err
	}
	p.config = filepath.Join(s.dir, name+".yaml")
	if err := s.writePgmoatConfig(p, maxConns); err != nil {
		return nil, err
	}
	return p, nil
}

// writePgmoatConfig writes the bench policy: the pgbench tables are
// protected, so every statement is analysed and judged, with the example
// policy's rules; destructive statements of the pending-holds step's
// sessions (holdApp) are held. The audit log goes to the work directory
// and the admin listener (metrics, holds) to a free port, with one viewer
// token so that the bench can list holds; there is no approver, so
// nothing held is ever approved.
func (s *stack) writePgmoatConfig(p *pgmoatProc, maxConns int) error {
	if s.adminToken == "" {
		b := make([]byte, 16)
		if _, err := rand.Read(b); err != nil {
			return err
		}
		s.adminToken = hex.EncodeToString(b)
		s.adminTokenFile = filepath.Join(s.dir, "admin-token")
		if err := os.WriteFile(s.adminTokenFile, []byte(s.adminToken+"\n"), 0o600); err != nil {
			return err
		}
	}
	conf := fmt.Sprintf(`# Written by bench/ for one run (%[8]s).
listen: 127.0.0.1:%[1]d
upstream: %[2]s
limits:
  max_connections: %[3]d
  drain_timeout: 2s
log:
  level: info
  format: text
admin:
  listen: 127.0.0.1:%[4]d
  tokens:
    - name: bench
      role: viewer
      token_file: %[6]s
policy:
  protect:
    - public.pgbench_accounts
    - public.pgbench_branches
    - public.pgbench_tellers
    - public.pgbench_history
  rules:
    - name: bench-pending-holds
      match:
        applications: [%[7]s]
      operations: [destructive]
      action: hold
    - name: migrations-need-approval
      match:
        applications: [goose, migrate, flyway]
      operations: [destructive]
      action: hold
    - name: analytics-refresh
      match:
        users: [analytics]
        clients: [10.20.0.0/16]
      operations: [truncate]
      action: log
holds:
  # Longer than any run: the pending-holds step withdraws its holds by
  # disconnecting.
  timeout: 2h
audit:
  path: %[5]s
  statements: decisions
`, p.port, s.upstreamURL(), maxConns, p.adminPort, filepath.Join(s.dir, p.name+"-audit.jsonl"),
		s.adminTokenFile, holdApp, p.name)
	return os.WriteFile(p.config, []byte(conf), 0o644)
}

// upstreamURL is pgmoat's upstream: the cluster over plain TCP, as
// PgBouncer and direct pgbench reach it.
func (s *stack) upstreamURL() string {
	return fmt.Sprintf("postgres://%s?sslmode=disable", s.cluster.Addr())
}

// startPgmoat starts pgmoat serve with its bench config and waits until a
// query passes through it.
func (s *stack) startPgmoat(p *pgmoatProc) error {
	p.starts++
	logPath := filepath.Join(s.dir, fmt.Sprintf("%s-%d.log", p.name, p.starts))
	argv := []string{p.bin, "serve",
		"--config", p.config,
		"--listen", fmt.Sprintf("127.0.0.1:%d", p.port),
		"--upstream", s.upstreamURL()}
	if p.profileDir != "" && p.starts == 1 {
		argv = append(argv, "--cpuprofile", filepath.Join(p.profileDir, p.name+".cpu.pprof"),
			"--memprofile", filepath.Join(p.profileDir, p.name+".mem.pprof"))
	}
	c, err := startChild(p.name, logPath, nil, p.env, argv...)
	if err != nil {
		return err
	}
	p.proc = c
	if err := c.waitReady(30*time.Second, func() error { return s.probe(p.port) }); err != nil {
		return err
	}
	return checkProcName(c.pid(), filepath.Base(p.bin))
}

// restartPgmoat replaces p's process with a fresh one, so that a memory
// step starts from a heap no earlier step has grown.
func (s *stack) restartPgmoat(p *pgmoatProc) error {
	if p.proc != nil {
		p.proc.stop(10 * time.Second)
	}
	return s.startPgmoat(p)
}

// describe is what `pgmoat version` prints and the environment settings
// the process was given; withPath adds the binary's path, which tells two
// builds of the same commit apart.
func (p *pgmoatProc) describe(withPath bool) string {
	v := "unknown"
	out, err := exec.Command(p.bin, "version").Output()
	if err != nil {
		v += " (" + err.Error() + ")"
	} else {
		v = strings.TrimSpace(string(out))
	}
	if withPath {
		v += " (" + p.bin + ")"
	}
	if len(p.env) > 0 {
		v += " with " + strings.Join(p.env, " ")
	}
	return v
}

// targets lists the addresses pgbench runs against, in names' order.
func (s *stack) targets(names []string) []target {
	var ts []target
	for _, n := range names {
		switch n {
		case targetDirect:
			ts = append(ts, target{Name: n, Host: s.cluster.Host, Port: s.cluster.Port})
		case targetPgBouncer:
			ts = append(ts, target{Name: n, Host: "127.0.0.1", Port: s.bouncerPort, Gone: s.bouncer.gone, PID: s.bouncer.pid})
		case targetPgmoat, targetPgmoatB:
			p := s.pgmoat
			if n == targetPgmoatB {
				p = s.pgmoatB
			}
			// Methods of p, not of p.proc: the memory steps replace the process.
			ts = append(ts, target{Name: n, Host: "127.0.0.1", Port: p.port, Gone: p.gone, PID: p.pid})
		}
	}
	return ts
}

// stop stops everything that was started, pgmoat and PgBouncer before
// the server they talk to.
func (s *stack) stop() {
	for _, p := range s.pgmoats() {
		if p.proc != nil {
			p.proc.stop(10 * time.Second)
		}
	}
	if s.bouncer != nil {
		s.bouncer.stop(10 * time.Second)
	}
	if s.cluster != nil {
		if err := s.cluster.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "bench: stopping PostgreSQL: %v\n", err)
		}
	}
}

// sharedBuffersMiB is the bench cluster's shared_buffers.
const sharedBuffersMiB = 256

// hugePagesNeededMiB is what the cluster's shared memory may take in huge
// pages: shared_buffers and the rest of the segment (locks, WAL buffers,
// a slot per connection: ~290 MiB in all at 400 connections, more for the
// idle-sessions step's 1,000). bench/run.sh reserves as much when it can;
// PostgreSQL is asked with huge_pages=try, and whether it took them is read
// from /proc/meminfo after it started.
const hugePagesNeededMiB = 512

// hugePagesSetting returns the cluster's huge_pages setting and a line for
// the report saying what it means.
//
// Without huge pages, each backend takes a minor page fault for every
// 4 KiB page of shared_buffers it touches for the first time. A relay that
// opens a server connection per client session (pgmoat, or a direct
// client) runs every cell on backends that fault all through the run,
// while PgBouncer's pool hands out backends that faulted in earlier cells:
// on 2 cores, `-S -M prepared` at 32 clients ran at ~9,000 TPS on fresh
// backends and ~30,000 with huge pages (bench/README.md). That measured the
// backends' age, not the relays, so the bench asks for huge pages and says
// when it could not have them.
func hugePagesSetting(free, size int64) (setting, why string) { // pages, kB
	if size <= 0 {
		return "off", "off (the kernel offers none): fresh backends are slower than PgBouncer's pooled ones"
	}
	freeMiB := free * size / 1024
	if freeMiB < hugePagesNeededMiB {
		return "off", fmt.Sprintf("off (%d MiB of huge pages free, %d needed; bench/run.sh reserves them when run as root): "+
			"fresh backends are slower than PgBouncer's pooled ones", freeMiB, hugePagesNeededMiB)
	}
	return "try", fmt.Sprintf("on (%d kB pages)", size)
}

// hugePagesAvailable is how many huge pages are neither in use nor
// promised to a mapping.
func hugePagesAvailable() int64 {
	return meminfoNumber("HugePages_Free") - meminfoNumber("HugePages_Rsvd")
}

// meminfoNumber is /proc/meminfo's figure for key (kB or a count), 0 when
// there is none.
func meminfoNumber(key string) int64 {
	f := strings.Fields(procField("/proc/meminfo", key))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseInt(f[0], 10, 64)
	return v
}
