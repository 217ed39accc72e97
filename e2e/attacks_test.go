package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgmoat/pgmoat/internal/moattest"
	"github.com/pgmoat/pgmoat/internal/pgtest"
	"github.com/pgmoat/pgmoat/rules"
)

// attacksEnv says which runs of each case of the attack corpus to make:
// unset, "1" or "pgmoat" through pgmoat (what make test runs), "direct"
// only the corpus's own check straight on the server (for whoever edits
// the corpus), "all" both, "skip" none (make test's second pass, which
// changes only the relay).
const attacksEnv = "PGMOAT_ATTACKS"

// attackRuns returns which runs attacksEnv asks for.
func attackRuns(t *testing.T) (direct, viaPgmoat bool) {
	switch v := os.Getenv(attacksEnv); v {
	case "skip":
		t.Skipf("%s=skip", attacksEnv)
	case "", "1", "pgmoat":
		return false, true
	case "direct":
		return true, false
	case "all":
		return true, true
	default:
		t.Fatalf("%s=%q: want 1, pgmoat, direct or all", attacksEnv, v)
	}
	return false, false
}

// Passwords of each case's roles (pg_hba asks roles the harness does not
// know for one).
const (
	attackMigPassword = "mig-pw"
	attackAppPassword = "app-pw"
)

// attackStepTimeout bounds one statement of a case: an attack that makes a
// session wait on itself (a lock held by the guard's own transaction, say)
// must fail the case, not the test binary.
const attackStepTimeout = 30 * time.Second

// TestAttacks runs the attack corpus (testdata/attacks, see
// attackcorpus_test.go for the format): for every case, in a fresh copy of
// the corpus's schema,
//
//   - direct (PGMOAT_ATTACKS=direct or all): the case's statements sent
//     straight to the server prove the corpus honest: an attack must damage
//     a protected table or change the application probe's answers, a
//     harmless twin must succeed;
//   - pgmoat (PGMOAT_ATTACKS=1 or all): the same statements through pgmoat
//     (one pgmoat for all cases, protecting the schema's tables with the
//     default rules). An attack must be refused by pgmoat (an error whose
//     message pgmoat wrote) and leave every protected table, its contract
//     and the probe's answers as they were; a harmless twin must run
//     without an error.
//
// At the end it logs a summary per class: attacks refused, twins that ran,
// and each failing case with what it changed.
//
// Run one class with go test -run 'TestAttacks/contract/' ./e2e/, one case
// with -run 'TestAttacks/contract/revoke-select/'.
func TestAttacks(t *testing.T) {
	direct, viaPgmoat := attackRuns(t)
	corpus := loadAttackCorpus(t)
	h := startAttackHarness(t)
	t.Cleanup(func() { t.Logf("summary:\n%s", h.summary()) })
	for _, class := range attackClasses {
		t.Run(class, func(t *testing.T) {
			for _, kc := range corpus[class] {
				t.Run(kc.name, func(t *testing.T) {
					// Cases that change the cluster run alone, before the
					// class's other cases.
					if !kc.exclusive {
						t.Parallel()
					}
					if kc.twoPhase && !h.twoPhase {
						t.Skip("the server takes no prepared transactions (max_prepared_transactions = 0)")
					}
					if direct {
						t.Run("direct", func(t *testing.T) { h.run(t, kc, false) })
					}
					if viaPgmoat {
						t.Run("pgmoat", func(t *testing.T) { h.run(t, kc, true) })
					}
				})
			}
		})
	}
}

// attackHarness is what every case shares: a cluster, the template
// database with the corpus's schema, and pgmoat.
type attackHarness struct {
	c        *pgtest.Cluster
	moat     *moattest.Moat
	template string
	probe    []probeBlock
	seq      atomic.Int64
	// twoPhase is whether the server takes PREPARE TRANSACTION.
	twoPhase bool

	mu      sync.Mutex
	results []attackResult
}

// attackResult is one run's verdict, for the summary.
type attackResult struct {
	class, name string
	expect      attackExpect
	viaPgmoat   bool
	verdict     verdict
	changed     []string
	knownLimit  bool
}

func (h *attackHarness) record(kc *attackCase, viaPgmoat bool, v verdict, changed []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.results = append(h.results, attackResult{kc.class, kc.name, kc.expect, viaPgmoat, v, changed, kc.knownLimit})
}

// summary tells, per class, how many attacks pgmoat refused and how many
// twins it let run, and names every case that failed and how.
func (h *attackHarness) summary() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var b strings.Builder
	for _, class := range attackClasses {
		var attacks, attacksOK, twins, twinsOK int
		var failures []string
		for _, r := range h.results {
			if r.class != class {
				continue
			}
			where := "direct"
			if r.viaPgmoat {
				where = "pgmoat"
			}
			if r.viaPgmoat && r.expect == expectRefused {
				attacks++
			} else if r.viaPgmoat {
				twins++
			}
			if r.verdict == verdictPass {
				if r.viaPgmoat && r.expect == expectRefused {
					attacksOK++
				} else if r.viaPgmoat {
					twinsOK++
				}
				continue
			}
			what := ""
			if len(r.changed) > 0 {
				what = fmt.Sprintf(" (%d changes, first: %s)", len(r.changed), rules.Shorten(r.changed[0], 160))
			}
			if r.knownLimit && r.viaPgmoat {
				what += " [known limit, see README]"
			}
			failures = append(failures, fmt.Sprintf("    %s %s: %s%s", where, r.name, r.verdict, what))
		}
		if attacks+twins+len(failures) == 0 {
			continue
		}
		sort.Strings(failures)
		fmt.Fprintf(&b, "%s: %d/%d attacks refused cleanly, %d/%d twins ran\n", class, attacksOK, attacks, twinsOK, twins)
		for _, f := range failures {
			b.WriteString(f + "\n")
		}
	}
	return b.String()
}

// startAttackHarness starts a cluster of its own (cases change cluster-wide
// settings and need prepared transactions; PGMOAT_TEST_DSN's server is used
// when set), the shared roles, the template database and pgmoat.
func startAttackHarness(t *testing.T) *attackHarness {
	t.Helper()
	var c *pgtest.Cluster
	if os.Getenv(pgtest.EnvDSN) != "" {
		c = pgtest.Get(t)
	} else {
		var err error
		c, err = pgtest.Start(pgtest.Options{Settings: map[string]string{"max_prepared_transactions": "20"}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := c.Stop(); err != nil {
				t.Errorf("stopping the attacks' cluster: %v", err)
			}
		})
	}
	h := &attackHarness{c: c, probe: loadProbe(t), template: fmt.Sprintf("attacks_template_%d", os.Getpid())}
	for _, role := range []string{"attack_owner", "attack_rw", "ledger"} {
		c.Exec(t, "postgres", fmt.Sprintf(`DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '%[1]s') THEN CREATE ROLE %[1]s NOLOGIN; END IF;
END $$`, role))
	}
	c.Exec(t, "postgres", "CREATE DATABASE "+h.template)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := c.ExecSQL(ctx, "postgres", "DROP DATABASE IF EXISTS "+h.template+" WITH (FORCE)"); err != nil {
			t.Errorf("dropping %s: %v", h.template, err)
		}
	})
	schema, err := os.ReadFile(filepath.Join(attacksDir, "schema.sql"))
	if err != nil {
		t.Fatal(err)
	}
	stmts, err := splitSQL(string(schema))
	if err != nil {
		t.Fatalf("schema.sql: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, err := pgconn.Connect(ctx, c.SuperConnString(h.template, "sslmode=disable"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s).ReadAll(); err != nil {
			conn.Close(ctx)
			t.Fatalf("schema.sql: %v\n%s", err, s)
		}
	}
	res, err := conn.Exec(ctx, "SHOW max_prepared_transactions").ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	h.twoPhase = string(res[0].Rows[0][0]) != "0"
	conn.Close(ctx)
	h.moat = moattest.Start(t, c, moattest.Options{Config: attackPolicy()})
	return h
}

// attackVars are a run's placeholder values.
type attackVars struct {
	mig, app, db string
	host         string
	port         int
}

// pairs returns placeholder and value pairs.
func (v attackVars) pairs() [][2]string {
	conn := fmt.Sprintf("host=%s port=%d dbname=%s user=%s password=%s", v.host, v.port, v.db, v.mig, attackMigPassword)
	return [][2]string{
		{"{{mig}}", v.mig}, // the migration role (LOGIN): owns the database, member of attack_owner and ledger
		{"{{migpw}}", attackMigPassword},
		{"{{app}}", v.app}, // the application's role (LOGIN), member of attack_rw
		{"{{db}}", v.db},
		{"{{port}}", strconv.Itoa(v.port)},
		{"{{conn}}", conn}, // libpq connection string of the migration role to the case's database
	}
}

func (v attackVars) expand(s string) string {
	var args []string
	for _, kv := range v.pairs() {
		args = append(args, kv[0], kv[1])
	}
	return strings.NewReplacer(args...).Replace(s)
}

// attackRun is one run of a case: directly on the server or through pgmoat.
type attackRun struct {
	h         *attackHarness
	kc        *attackCase
	viaPgmoat bool
	vars      attackVars
	dbOID     uint32
	appOID    uint32
	checker   *pgx.Conn      // superuser, straight to the case's database
	attacker  *pgconn.PgConn // the session the case's statements go through
	other     *pgconn.PgConn // the superuser's session for direct steps
}

// stepOutcome is what the attacker (or the other session) saw.
type stepOutcome struct {
	step attackStep
	tag  string
	err  error
}

// byPgmoat reports whether pgmoat (not the server) refused the step.
func (o stepOutcome) byPgmoat() bool {
	var pe *pgconn.PgError
	return errors.As(o.err, &pe) && strings.HasPrefix(pe.Message, "pgmoat")
}

// asDesigned reports whether the step succeeded, or failed with the
// SQLSTATE the case says it fails with.
func (o stepOutcome) asDesigned() bool {
	if o.step.wantErr == "" {
		return o.err == nil
	}
	var pe *pgconn.PgError
	return errors.As(o.err, &pe) && pe.Code == o.step.wantErr && !o.byPgmoat()
}

func (o stepOutcome) String() string {
	if o.err != nil {
		who := "error"
		if o.byPgmoat() {
			who = "REFUSED by pgmoat"
		}
		return fmt.Sprintf("%s → %s: %s", o.step, who, errText(o.err))
	}
	return fmt.Sprintf("%s → ok %s", o.step, o.tag)
}

// verdict is how a run of a case ended, for the summary.
type verdict string

const (
	verdictPass verdict = "pass"
	// Through pgmoat, an attack that was not refused and did damage; not
	// refused and did nothing (the server, or the attack itself, failed);
	// refused, but another of its statements did damage.
	verdictThrough    verdict = "attack went through"
	verdictNotRefused verdict = "attack not refused, nothing changed"
	verdictPartial    verdict = "attack refused in part, damage done"
	// Through pgmoat, a twin that pgmoat refused, or that failed otherwise.
	verdictTwinRefused verdict = "harmless twin refused by pgmoat"
	verdictTwinFailed  verdict = "harmless twin failed"
	// Straight on the server: the corpus itself is wrong.
	verdictCorpusDud    verdict = "corpus: attack harmless without pgmoat"
	verdictCorpusBroken verdict = "corpus: twin fails without pgmoat"
)

// judge decides a run from what each step answered and what changed.
func judge(kc *attackCase, viaPgmoat bool, outcomes []stepOutcome, changed []string) verdict {
	refused, failed := 0, 0
	for _, o := range outcomes {
		if !o.asDesigned() {
			failed++
		}
		if o.byPgmoat() {
			refused++
		}
	}
	switch {
	case !viaPgmoat && kc.expect == expectRefused && len(changed) == 0:
		return verdictCorpusDud
	case !viaPgmoat && kc.expect == expectAllowed && failed > 0:
		return verdictCorpusBroken
	case !viaPgmoat:
		return verdictPass
	case kc.expect == expectRefused && refused == 0 && len(changed) > 0:
		return verdictThrough
	case kc.expect == expectRefused && refused == 0:
		return verdictNotRefused
	case kc.expect == expectRefused && len(changed) > 0:
		return verdictPartial
	case kc.expect == expectAllowed && refused > 0:
		return verdictTwinRefused
	case kc.expect == expectAllowed && failed > 0:
		return verdictTwinFailed
	}
	return verdictPass
}

// run runs kc once and judges it.
func (h *attackHarness) run(t *testing.T, kc *attackCase, viaPgmoat bool) {
	ctx := context.Background()
	r := &attackRun{h: h, kc: kc, viaPgmoat: viaPgmoat}
	r.create(t)
	for _, s := range kc.setup {
		if err := r.direct(ctx, s); err != nil {
			t.Fatalf("setup: %v\n%s", errText(err), r.vars.expand(s))
		}
	}
	r.closeOther()
	snap := r.snapshotter(t)
	before := snap.snapshot(ctx)
	var outcomes []stepOutcome
	for _, st := range kc.steps {
		outcomes = append(outcomes, r.step(ctx, st))
	}
	r.closeSessions()
	changed := before.diff(snap.snapshot(ctx))

	var report strings.Builder
	fmt.Fprintf(&report, "%s.sql:%d %s (%s): %s\n", kc.class, kc.line, kc.name, kc.expect, strings.Join(kc.why, " "))
	for _, o := range outcomes {
		fmt.Fprintf(&report, "  %s\n", o)
	}
	if len(changed) > 0 {
		fmt.Fprintf(&report, "changed:\n  %s\n", strings.Join(changed, "\n  "))
	} else {
		report.WriteString("changed: nothing\n")
	}
	v := judge(kc, viaPgmoat, outcomes, changed)
	h.record(kc, viaPgmoat, v, changed)
	if v != verdictPass && kc.knownLimit && viaPgmoat {
		t.Logf("known limit, see README: %s\n%s", v, report.String())
		return
	}
	if v != verdictPass {
		t.Errorf("%s\n%s", v, report.String())
		return
	}
	t.Log(report.String())
}

// create makes the run's roles and database (a copy of the template) and
// registers their removal.
func (r *attackRun) create(t *testing.T) {
	t.Helper()
	n := r.h.seq.Add(1)
	where := "direct"
	if r.viaPgmoat {
		where = "pgmoat"
	}
	r.vars = attackVars{
		mig: fmt.Sprintf("atk%d_mig", n), app: fmt.Sprintf("atk%d_app", n), db: fmt.Sprintf("atk%d_%s", n, where),
		host: r.h.c.Host, port: r.h.c.Port,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	admin, err := r.adminConn(ctx, "postgres")
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	for _, sql := range []string{
		fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD '%s' IN ROLE attack_owner, ledger", r.vars.mig, attackMigPassword),
		// md5: a cheaper login than SCRAM for the probe's sessions.
		"SET password_encryption = 'md5'",
		fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD '%s' IN ROLE attack_rw", r.vars.app, attackAppPassword),
		"RESET password_encryption",
	} {
		if _, err := admin.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	rows, _ := admin.Query(ctx, "SELECT oid FROM pg_roles WHERE rolname IN ($1, $2) ORDER BY rolname = $2", r.vars.mig, r.vars.app)
	roleOIDs, err := pgx.CollectRows(rows, pgx.RowTo[uint32])
	if err != nil || len(roleOIDs) != 2 {
		t.Fatalf("role OIDs: %v %v", roleOIDs, err)
	}
	r.appOID = roleOIDs[1]
	// Roles go after the database (cleanups run last-registered first).
	t.Cleanup(func() { r.dropRoles(t, roleOIDs) })
	if _, err := admin.Exec(ctx, fmt.Sprintf("CREATE DATABASE %s TEMPLATE %s STRATEGY file_copy OWNER %s",
		r.vars.db, r.h.template, r.vars.mig)); err != nil {
		t.Fatalf("creating %s: %v", r.vars.db, err)
	}
	if err := admin.QueryRow(ctx, "SELECT oid FROM pg_database WHERE datname = $1", r.vars.db).Scan(&r.dbOID); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.dropDatabase(t) })
	// The checker opens before the case can lock anyone out, and gives up on
	// a locked table soon: that a table is locked is itself the finding.
	r.checker, err = r.superuserConn(ctx, r.vars.db, "500ms")
	if err != nil {
		t.Fatal(err)
	}
}

// adminConn is a superuser session straight to db for the harness's own
// work, immune to the settings cases give the cluster or the database.
func (r *attackRun) adminConn(ctx context.Context, db string) (*pgx.Conn, error) {
	return r.superuserConn(ctx, db, "10s")
}

func (r *attackRun) superuserConn(ctx context.Context, db, lockTimeout string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(r.h.c.SuperConnString(db, "sslmode=disable"))
	if err != nil {
		return nil, err
	}
	for k, v := range map[string]string{
		"search_path": "pg_catalog", "statement_timeout": "60s", "lock_timeout": lockTimeout,
		"default_transaction_read_only": "off", "session_replication_role": "origin",
	} {
		cfg.RuntimeParams[k] = v
	}
	return pgx.ConnectConfig(ctx, cfg)
}

// dropDatabase undoes what a case may have done to the cluster (settings,
// a database that takes no connections, prepared transactions) and drops
// the run's database.
func (r *attackRun) dropDatabase(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r.closeSessions()
	if r.checker != nil {
		r.checker.Close(ctx)
	}
	admin, err := r.adminConn(ctx, "postgres")
	if err != nil {
		t.Errorf("cleaning up after %s: %v", r.vars.db, err)
		return
	}
	defer admin.Close(ctx)
	if r.kc.exclusive {
		r.resetSystem(t, ctx, admin)
	}
	var name string
	if err := admin.QueryRow(ctx, "SELECT datname FROM pg_database WHERE oid = $1", r.dbOID).Scan(&name); err != nil {
		return // dropped by the case
	}
	db := pgx.Identifier{name}.Sanitize()
	admin.Exec(ctx, "ALTER DATABASE "+db+" ALLOW_CONNECTIONS true")
	admin.Exec(ctx, "ALTER DATABASE "+db+" CONNECTION LIMIT -1")
	rows, _ := admin.Query(ctx, "SELECT gid FROM pg_prepared_xacts WHERE database = $1", name)
	gids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Errorf("listing prepared transactions: %v", err)
	}
	if len(gids) > 0 {
		// ROLLBACK PREPARED must run in the transaction's database.
		in, err := r.adminConn(ctx, name)
		if err != nil {
			t.Errorf("connecting to %s to roll back its prepared transactions: %v", name, err)
		} else {
			for _, gid := range gids {
				if _, err := in.Exec(ctx, "ROLLBACK PREPARED "+rules.DollarQuote(gid)); err != nil {
					t.Errorf("ROLLBACK PREPARED %s: %v", gid, err)
				}
			}
			in.Close(ctx)
		}
	}
	if _, err := admin.Exec(ctx, "DROP DATABASE "+db+" WITH (FORCE)"); err != nil {
		t.Errorf("dropping %s: %v", name, err)
	}
}

// resetSystem undoes ALTER SYSTEM and ALTER ROLE ALL and waits until new
// sessions no longer see their settings, so that the next case starts on a
// clean cluster.
func (r *attackRun) resetSystem(t *testing.T, ctx context.Context, admin *pgx.Conn) {
	for _, sql := range []string{"ALTER ROLE ALL RESET ALL", "ALTER SYSTEM RESET ALL", "SELECT pg_reload_conf()"} {
		if _, err := admin.Exec(ctx, sql); err != nil {
			t.Errorf("%s: %v", sql, err)
			return
		}
	}
	moattest.WaitFor(t, 30*time.Second, "ALTER SYSTEM's settings to be gone from new sessions", func() bool {
		// A plain session: adminConn's own settings would hide those
		// from the file.
		conn, err := pgx.Connect(ctx, r.h.c.SuperConnString("postgres", "sslmode=disable"))
		if err != nil {
			return false
		}
		defer conn.Close(ctx)
		var n int
		err = conn.QueryRow(ctx, "SELECT count(*) FROM pg_catalog.pg_settings WHERE sourcefile LIKE '%postgresql.auto.conf'").Scan(&n)
		return err == nil && n == 0
	})
}

// dropRoles drops the run's roles under whatever names they have now.
func (r *attackRun) dropRoles(t *testing.T, oids []uint32) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin, err := r.adminConn(ctx, "postgres")
	if err != nil {
		t.Errorf("dropping roles: %v", err)
		return
	}
	defer admin.Close(ctx)
	rows, _ := admin.Query(ctx, "SELECT rolname FROM pg_roles WHERE oid = ANY($1)", oids)
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Errorf("dropping roles: %v", err)
	}
	for _, name := range names {
		if _, err := admin.Exec(ctx, "DROP ROLE "+pgx.Identifier{name}.Sanitize()); err != nil {
			t.Errorf("dropping role %s: %v", name, err)
		}
	}
}

// snapshotter returns the run's snapshotter, with the protected relations
// as they are now (after the setup).
func (r *attackRun) snapshotter(t *testing.T) *snapshotter {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rels, err := protectedRelations(ctx, r.checker)
	if err != nil {
		t.Fatal(err)
	}
	probeURL := fmt.Sprintf("postgres://%s:%s@%s/%s?sslmode=disable&connect_timeout=10",
		url.PathEscape(r.vars.app), attackAppPassword, net.JoinHostPort(r.vars.host, strconv.Itoa(r.vars.port)), url.PathEscape(r.vars.db))
	return &snapshotter{
		conn: r.checker, rels: rels, dbOID: r.dbOID, appOID: r.appOID,
		probe: func(ctx context.Context) dbState { return runProbe(ctx, probeURL, r.h.probe) },
	}
}

// step runs one step of the case.
func (r *attackRun) step(ctx context.Context, st attackStep) stepOutcome {
	o := stepOutcome{step: st}
	switch st.kind {
	case stepReconnect:
		if r.attacker != nil {
			r.attacker.Close(ctx)
			r.attacker = nil
		}
		return o
	case stepDirect:
		stmts, err := splitSQL(r.vars.expand(st.sql))
		if err != nil {
			o.err = err
			return o
		}
		for _, s := range stmts {
			if o.err = r.direct(ctx, s); o.err != nil {
				return o
			}
		}
		o.tag = "done"
		return o
	}
	if r.attacker == nil || r.attacker.IsClosed() {
		conn, err := r.connectAttacker(ctx)
		if err != nil {
			o.err = fmt.Errorf("connecting: %w", err)
			return o
		}
		r.attacker = conn
	}
	sctx, cancel := context.WithTimeout(ctx, attackStepTimeout)
	defer cancel()
	sql := r.vars.expand(st.sql)
	switch {
	case st.copyData != "":
		tag, err := r.attacker.CopyFrom(sctx, strings.NewReader(r.vars.expand(st.copyData)), sql)
		o.tag, o.err = tag.String(), err
	case st.extended:
		params := make([][]byte, len(st.params))
		for i, p := range st.params {
			params[i] = []byte(r.vars.expand(p))
		}
		var oids []uint32
		for _, name := range st.paramTypes {
			var oid uint32
			if err := r.checker.QueryRow(sctx, "SELECT $1::regtype::oid", name).Scan(&oid); err != nil {
				o.err = fmt.Errorf("type %s of a parameter: %w", name, err)
				return o
			}
			oids = append(oids, oid)
		}
		res := r.attacker.ExecParams(sctx, sql, params, oids, nil, nil).Read()
		o.tag, o.err = res.CommandTag.String(), res.Err
	default:
		results, err := r.attacker.Exec(sctx, sql).ReadAll()
		var tags []string
		for _, res := range results {
			tags = append(tags, res.CommandTag.String())
		}
		o.tag, o.err = strings.Join(tags, "; "), err
	}
	if sctx.Err() != nil && o.err != nil {
		o.err = fmt.Errorf("no answer within %s: %w", attackStepTimeout, o.err)
	}
	return o
}

// connectAttacker opens the attacker's session: as the migration role (or
// the superuser), through pgmoat or straight to the server.
func (r *attackRun) connectAttacker(ctx context.Context) (*pgconn.PgConn, error) {
	var connString string
	user, password := r.vars.mig, attackMigPassword
	if r.kc.superuser {
		user, password = r.h.c.Superuser, r.h.c.SuperPassword
	}
	db := r.vars.db
	if r.kc.database != "" {
		db = r.vars.expand(r.kc.database)
	}
	if r.viaPgmoat {
		connString = r.h.moat.ConnString(user, password, db)
	} else {
		connString = r.h.c.ConnString(user, password, db, "sslmode=disable")
	}
	cfg, err := pgconn.ParseConfig(connString)
	if err != nil {
		return nil, err
	}
	for _, kv := range r.kc.startup {
		cfg.RuntimeParams[kv[0]] = r.vars.expand(kv[1])
	}
	cctx, cancel := context.WithTimeout(ctx, attackStepTimeout)
	defer cancel()
	return pgconn.ConnectConfig(cctx, cfg)
}

// direct runs one statement in the superuser's other session.
func (r *attackRun) direct(ctx context.Context, sql string) error {
	if r.other == nil {
		conn, err := pgconn.Connect(ctx, r.h.c.SuperConnString(r.vars.db, "sslmode=disable"))
		if err != nil {
			return err
		}
		r.other = conn
	}
	sctx, cancel := context.WithTimeout(ctx, attackStepTimeout)
	defer cancel()
	_, err := r.other.Exec(sctx, r.vars.expand(sql)).ReadAll()
	return err
}

func (r *attackRun) closeOther() {
	if r.other != nil {
		r.other.Close(context.Background())
		r.other = nil
	}
}

// closeSessions ends the attacker's and the other session, as a client
// going away would (a prepared transaction outlives them).
func (r *attackRun) closeSessions() {
	if r.attacker != nil {
		r.attacker.Close(context.Background())
		r.attacker = nil
	}
	r.closeOther()
}
