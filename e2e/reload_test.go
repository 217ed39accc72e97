package e2e

import (
	"context"
	"errors"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgmoat/pgmoat/admin"
	"github.com/pgmoat/pgmoat/audit"
	"github.com/pgmoat/pgmoat/internal/moattest"
	"github.com/pgmoat/pgmoat/internal/pgtest"
)

const protectUsers = "policy:\n  protect: [public.users]\n"

// TestReloadAppliesToOpenSessions protects a new table by SIGHUP, then
// another through POST /api/v1/reload, and checks that the next statement
// of a session opened before either is judged by the new policy, on the
// same server backend (the session was not dropped).
func TestReloadAppliesToOpenSessions(t *testing.T) {
	c := pgtest.Get(t)
	db := c.NewDatabase(t)
	c.Exec(t, db, "CREATE TABLE users(id int); CREATE TABLE orders(id int); CREATE TABLE invoices(id int)")
	m := moattest.Start(t, c, moattest.Options{Config: protectUsers})
	conn := connect(t, m.SuperConnString(db, "application_name=long-lived"))
	pid := backendPID(t, conn)

	if !dropAllowedInRolledBackTx(t, conn, "orders") {
		t.Fatal("DROP TABLE orders refused before orders is protected")
	}
	base := configBase(t, m, protectUsers)
	writeFile(t, m.ConfigPath, base+"policy:\n  protect: [public.users, public.orders]\n")
	m.Reload()
	if !strings.Contains(m.Log(), "configuration reloaded") {
		t.Fatalf("SIGHUP reload did not succeed:\n%s", m.Log())
	}
	if _, err := conn.Exec(context.Background(), "DROP TABLE orders"); stateOf(err) != "42501" {
		t.Errorf("DROP TABLE orders after protecting it by SIGHUP: err = %v, want 42501", err)
	}
	if got := backendPID(t, conn); got != pid {
		t.Errorf("backend pid %d after the reload, was %d: the session was replaced", got, pid)
	}

	// The admin API: a viewer may not reload, an approver may.
	if !dropAllowedInRolledBackTx(t, conn, "invoices") {
		t.Fatal("DROP TABLE invoices refused before invoices is protected")
	}
	writeFile(t, m.ConfigPath, base+"policy:\n  protect: [public.users, public.orders, public.invoices]\n")
	viewer := &admin.Client{BaseURL: m.AdminURL, Token: moattest.ViewerToken}
	var apiErr *admin.APIError
	if err := viewer.Reload(context.Background()); !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusForbidden {
		t.Errorf("reload with a viewer token: %v, want HTTP 403", err)
	}
	if !dropAllowedInRolledBackTx(t, conn, "invoices") {
		t.Error("a viewer's reload request changed the policy")
	}
	approver := &admin.Client{BaseURL: m.AdminURL, Token: moattest.ApproverToken}
	if err := approver.Reload(context.Background()); err != nil {
		t.Fatalf("reload with an approver token: %v", err)
	}
	if _, err := conn.Exec(context.Background(), "DROP TABLE invoices"); stateOf(err) != "42501" {
		t.Errorf("DROP TABLE invoices after protecting it through the API: err = %v, want 42501", err)
	}
	if got := backendPID(t, conn); got != pid {
		t.Errorf("backend pid %d after the API reload, was %d", got, pid)
	}

	fams := scrapeMetrics(t, m)
	if s, f := metricValue(t, fams, "pgmoat_config_reloads_total", labels("result", "success")),
		metricValue(t, fams, "pgmoat_config_reloads_total", labels("result", "failure")); s != 2 || f != 0 {
		t.Errorf("pgmoat_config_reloads_total success=%v failure=%v, want 2 and 0", s, f)
	}
	// One config_loaded at start, one per reload.
	evs := waitAuditEvents(t, m.AuditPath, "three config_loaded events", func(evs []audit.Event) bool {
		return countEvents(evs, audit.ConfigLoaded) == 3
	})
	var last *audit.Event
	for i := range evs {
		if evs[i].Kind == audit.ConfigLoaded {
			last = &evs[i]
		}
	}
	if !strings.Contains(last.Reason, "public.invoices") {
		t.Errorf("the last config_loaded does not describe the new policy: %+v", *last)
	}
}

// TestReloadRejectsInvalidConfig writes a file with an unknown key (which
// also protects a new table) and reloads it by SIGHUP and through the API:
// rejected, logged, counted and audited, and the old policy stays in force
// in a session that stays connected.
func TestReloadRejectsInvalidConfig(t *testing.T) {
	c := pgtest.Get(t)
	db := c.NewDatabase(t)
	c.Exec(t, db, "CREATE TABLE users(id int); CREATE TABLE orders(id int)")
	m := moattest.Start(t, c, moattest.Options{Config: protectUsers})
	conn := connect(t, m.SuperConnString(db))
	pid := backendPID(t, conn)

	base := configBase(t, m, protectUsers)
	writeFile(t, m.ConfigPath, base+"policy:\n  protect: [public.users, public.orders]\n  protekt: [public.orders]\n")
	m.Reload()
	log := m.Log()
	if !strings.Contains(log, "configuration reload rejected") || !strings.Contains(log, "protekt") {
		t.Errorf("pgmoat's log does not show the rejected reload and the bad key:\n%s", log)
	}
	approver := &admin.Client{BaseURL: m.AdminURL, Token: moattest.ApproverToken}
	var apiErr *admin.APIError
	if err := approver.Reload(context.Background()); !errors.As(err, &apiErr) || apiErr.StatusCode != 500 || !strings.Contains(apiErr.Message, "protekt") {
		t.Errorf("API reload of the invalid file: %v, want HTTP 500 naming protekt", err)
	}

	if _, err := conn.Exec(context.Background(), "DROP TABLE users"); stateOf(err) != "42501" {
		t.Errorf("DROP TABLE users after a rejected reload: err = %v, want 42501 (old policy)", err)
	}
	if !dropAllowedInRolledBackTx(t, conn, "orders") {
		t.Error("the rejected file's protection of orders took effect")
	}
	if got := backendPID(t, conn); got != pid {
		t.Errorf("backend pid %d after the rejected reloads, was %d", got, pid)
	}
	fams := scrapeMetrics(t, m)
	if s, f := metricValue(t, fams, "pgmoat_config_reloads_total", labels("result", "success")),
		metricValue(t, fams, "pgmoat_config_reloads_total", labels("result", "failure")); s != 0 || f != 2 {
		t.Errorf("pgmoat_config_reloads_total success=%v failure=%v, want 0 and 2", s, f)
	}
	evs := waitAuditEvents(t, m.AuditPath, "two config_reload_failed events", func(evs []audit.Event) bool {
		return countEvents(evs, audit.ConfigReloadFailed) == 2
	})
	if e := findEvent(evs, audit.ConfigReloadFailed, nil); !strings.Contains(e.Error, "protekt") || !strings.Contains(e.Error, m.ConfigPath) {
		t.Errorf("config_reload_failed does not name the file and key: %+v", *e)
	}
	if n := countEvents(evs, audit.ConfigLoaded); n != 1 {
		t.Errorf("%d config_loaded events, want only the one at start: a rejected file is not loaded", n)
	}
}

// TestReloadListenChangeNeedsRestart changes listen in the file: the
// reload says the change needs a restart and pgmoat keeps serving on the
// old address.
func TestReloadListenChangeNeedsRestart(t *testing.T) {
	c := pgtest.Get(t)
	m := moattest.Start(t, c, moattest.Options{})
	cfg, err := os.ReadFile(m.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, m.ConfigPath, strings.Replace(string(cfg), "listen: "+m.Addr, "listen: 127.0.0.1:1", 1))
	m.Reload()
	if log := m.Log(); !strings.Contains(log, "takes effect only after a restart") || !strings.Contains(log, "key=listen") {
		t.Errorf("the reload does not say that listen needs a restart:\n%s", log)
	}
	conn := connect(t, m.SuperConnString("postgres"))
	mustExec(t, conn, "SELECT 1")
}

// configBase returns the generated config file without the
// Options.Config (tail) appended to it, for a test to append another.
func configBase(t *testing.T, m *moattest.Moat, tail string) string {
	t.Helper()
	cfg, err := os.ReadFile(m.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	base, ok := strings.CutSuffix(string(cfg), tail)
	if !ok {
		t.Fatalf("config file does not end with %q:\n%s", tail, cfg)
	}
	return base
}

func backendPID(t *testing.T, conn *pgx.Conn) int {
	t.Helper()
	var pid int
	if err := conn.QueryRow(context.Background(), "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	return pid
}

// dropAllowedInRolledBackTx reports whether pgmoat lets DROP TABLE table
// through, running it in a transaction that is rolled back so the table
// stays.
func dropAllowedInRolledBackTx(t *testing.T, conn *pgx.Conn, table string) bool {
	t.Helper()
	ctx := context.Background()
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	_, err = tx.Exec(ctx, "DROP TABLE "+table)
	switch code := stateOf(err); {
	case err == nil:
		return true
	case code == "42501":
		return false
	default:
		t.Fatalf("DROP TABLE %s in a transaction: %v", table, err)
		return false
	}
}
