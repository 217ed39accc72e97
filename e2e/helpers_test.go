package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgmoat/pgmoat/admin"
	"github.com/pgmoat/pgmoat/approvals"
	"github.com/pgmoat/pgmoat/internal/moattest"
	"github.com/pgmoat/pgmoat/internal/pgtest"
)

// holdPolicy protects public.users and public.orders and holds destructive
// statements from sessions whose application_name is deployer; everyone
// else is blocked by the default rule.
const holdPolicy = `policy:
  protect: [public.users, public.orders]
  rules:
    - {name: deploys, match: {applications: [deployer]}, operations: [destructive], action: hold}
`

// usersSchema is a small protected schema: users and orders (protected by
// holdPolicy), audit_log (not protected), with a few rows each.
const usersSchema = `
CREATE TABLE users (id int PRIMARY KEY, name text, legacy_flag bool);
CREATE TABLE orders (id int PRIMARY KEY, user_id int);
CREATE TABLE audit_log (id serial PRIMARY KEY, msg text);
INSERT INTO users SELECT g, 'user' || g, false FROM generate_series(1, 3) g;
INSERT INTO orders SELECT g, g FROM generate_series(1, 3) g;
`

// newDB returns a fresh database with usersSchema.
func newDB(t *testing.T, c *pgtest.Cluster) string {
	t.Helper()
	db := c.NewDatabase(t)
	c.Exec(t, db, usersSchema)
	return db
}

// connect opens a pgx connection (closed at cleanup), failing t on error.
func connect(t testing.TB, connString string, configure ...func(*pgx.ConnConfig)) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(connString)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range configure {
		f(cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("connecting to %s: %v", connString, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// simpleProtocol makes every pgx query use the simple Query message.
func simpleProtocol(cfg *pgx.ConnConfig) {
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
}

// stateOf returns the SQLSTATE of a server error, or "" when err is not
// one.
func stateOf(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// wantCode fails t unless err is a server error with SQLSTATE code, and
// returns it.
func wantCode(t testing.TB, err error, code, what string) *pgconn.PgError {
	t.Helper()
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != code {
		t.Fatalf("%s: err = %v, want SQLSTATE %s", what, err, code)
	}
	return pe
}

// wantBlocked fails t unless err is pgmoat's block of a statement on
// object: SQLSTATE 42501 at severity ERROR, naming the object, with the
// rule in DETAIL and how to get approval in HINT.
func wantBlocked(t testing.TB, err error, object, what string) *pgconn.PgError {
	t.Helper()
	pe := wantCode(t, err, "42501", what)
	if pe.Severity != "ERROR" || !strings.HasPrefix(pe.Message, "pgmoat blocked") || !strings.Contains(pe.Message, object) ||
		!strings.Contains(pe.Detail, "Rule: ") || !strings.Contains(pe.Hint, "pgmoat approve") {
		t.Fatalf("%s: want pgmoat's block naming %s, got severity=%q message=%q detail=%q hint=%q",
			what, object, pe.Severity, pe.Message, pe.Detail, pe.Hint)
	}
	return pe
}

// wantUsable fails t unless conn still answers a query.
func wantUsable(t testing.TB, conn *pgx.Conn) {
	t.Helper()
	var n int
	if err := conn.QueryRow(context.Background(), "SELECT 41 + 1").Scan(&n); err != nil || n != 42 {
		t.Fatalf("connection not usable after the refusal: n=%d err=%v", n, err)
	}
}

// direct is a superuser connection straight to PostgreSQL, for looking at
// what really happened.
func direct(t testing.TB, c *pgtest.Cluster, db string) *pgx.Conn {
	t.Helper()
	return c.Connect(t, db)
}

// tableExists reports whether the table (schema-qualified) exists.
func tableExists(t testing.TB, conn *pgx.Conn, table string) bool {
	t.Helper()
	var ok bool
	if err := conn.QueryRow(context.Background(), "SELECT to_regclass($1) IS NOT NULL", table).Scan(&ok); err != nil {
		t.Fatal(err)
	}
	return ok
}

// countRows returns the number of rows of table.
func countRows(t testing.TB, conn *pgx.Conn, table string) int {
	t.Helper()
	var n int
	if err := conn.QueryRow(context.Background(), "SELECT count(*) FROM "+table).Scan(&n); err != nil {
		t.Fatalf("counting %s: %v", table, err)
	}
	return n
}

// wantTable fails t unless table exists with n rows.
func wantTable(t testing.TB, conn *pgx.Conn, table string, n int) {
	t.Helper()
	if !tableExists(t, conn, table) {
		t.Fatalf("table %s is gone", table)
	}
	if got := countRows(t, conn, table); got != n {
		t.Fatalf("table %s has %d rows, want %d", table, got, n)
	}
}

// approver returns an admin API client with the token of alice (or bob
// with second).
func approver(m *moattest.Moat, second bool) *admin.Client {
	tok := moattest.ApproverToken
	if second {
		tok = moattest.Approver2Token
	}
	return &admin.Client{BaseURL: m.AdminURL, Token: tok}
}

// waitHolds polls the admin API until n holds are pending and returns
// them.
func waitHolds(t testing.TB, m *moattest.Moat, n int) []approvals.HoldInfo {
	t.Helper()
	var holds []approvals.HoldInfo
	moattest.WaitFor(t, 60*time.Second, fmt.Sprintf("%d pending holds", n), func() bool {
		var err error
		holds, err = approver(m, false).ListHolds(context.Background(), approvals.StatusPending)
		if err != nil {
			t.Fatalf("listing holds: %v", err)
		}
		return len(holds) >= n
	})
	if len(holds) != n {
		t.Fatalf("%d holds pending, want %d", len(holds), n)
	}
	return holds
}

// waitHoldStatus polls the admin API until hold id has status st.
func waitHoldStatus(t testing.TB, m *moattest.Moat, id string, st approvals.Status) approvals.HoldInfo {
	t.Helper()
	var h *approvals.HoldInfo
	moattest.WaitFor(t, 30*time.Second, fmt.Sprintf("hold %s to be %s", id, st), func() bool {
		var err error
		h, err = approver(m, false).GetHold(context.Background(), id)
		if err != nil {
			t.Fatalf("getting hold %s: %v", id, err)
		}
		return h.Status == st
	})
	return *h
}

var holdIDInNotice = regexp.MustCompile(`\(hold ([0-9a-f]{16}),`)

// noticeHoldID returns the hold id a pgmoat hold notice names, or "".
func noticeHoldID(n *pgconn.Notice) string {
	if m := holdIDInNotice.FindStringSubmatch(n.Message); m != nil {
		return m[1]
	}
	return ""
}

// pgmoatCLI runs the pgmoat binary as a user would, with the admin URL and
// token in the environment, and returns its output and exit code.
func pgmoatCLI(t testing.TB, m *moattest.Moat, token string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, moattest.Binary(t), args...)
	cmd.Env = append(os.Environ(), "PGMOAT_ADMIN_URL="+m.AdminURL, "PGMOAT_TOKEN="+token)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		code = exit.ExitCode()
	default:
		t.Fatalf("running pgmoat %v: %v", args, err)
	}
	return out.String(), errOut.String(), code
}

// stmtResult is the outcome of one statement, as a client sees it.
type stmtResult struct {
	err error
	tag string
}

// await waits for a statement running in the background.
func await(t testing.TB, ch <-chan stmtResult, timeout time.Duration, what string) stmtResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(timeout):
		t.Fatalf("%s: no answer after %s", what, timeout)
		return stmtResult{}
	}
}

// notReturned fails t if the background statement has already answered.
func notReturned(t testing.TB, ch <-chan stmtResult, what string) {
	t.Helper()
	select {
	case r := <-ch:
		t.Fatalf("%s answered while its hold is pending: tag=%q err=%v", what, r.tag, r.err)
	default:
	}
}
