package e2e

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	dto "github.com/prometheus/client_model/go"

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

// TestReloadRefusesTruncatedConfig empties pgmoat's configuration file,
// then cuts it after its first lines, then before its policy, as an editor
// or a tool writing it in place (or a full disk) would, and sends SIGHUP
// each time: every reload is refused as truncated, and DROP TABLE of the
// protected table is still blocked. `pgmoat config check --against`
// refuses the same files. Then the file turns protection off on purpose
// (policy: {protect: []}): accepted, with the diff in the log and the
// audit log and the new protection on /metrics.
func TestReloadRefusesTruncatedConfig(t *testing.T) {
	c := pgtest.Get(t)
	db := c.NewDatabase(t)
	c.Exec(t, db, "CREATE TABLE users(id int)")
	m := moattest.Start(t, c, moattest.Options{Config: protectUsers})
	conn := connect(t, m.SuperConnString(db))
	full, err := os.ReadFile(m.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	before := scrapeMetrics(t, m)
	hash := policyHash(t, before)
	if n := metricValue(t, before, "pgmoat_policy_protect_patterns", nil); n != 1 {
		t.Errorf("pgmoat_policy_protect_patterns = %v, want 1", n)
	}
	viewer := &admin.Client{BaseURL: m.AdminURL, Token: moattest.ViewerToken}
	pol, err := viewer.Policy(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if pol.Hash != hash || !slices.Equal(pol.Policy.Protect, []string{"public.users"}) || pol.File != m.ConfigPath {
		t.Errorf("GET /api/v1/policy = %+v, want hash %s protecting public.users from %s", *pol, hash, m.ConfigPath)
	}

	lines := strings.SplitAfter(string(full), "\n")
	policyAt := slices.Index(lines, "policy:\n")
	cuts := []struct{ name, content, want string }{
		{"empty", "", "empty"},
		{"first 5 lines", strings.Join(lines[:5], ""), "looks truncated"},
		{"cut before the policy", strings.Join(lines[:policyAt], ""), "does not state policy"},
		{"cut after the policy key", strings.Join(lines[:policyAt+1], ""), "does not state policy"},
	}
	cutFile := filepath.Join(t.TempDir(), "cut.yaml")
	for i, cut := range cuts {
		writeFile(t, m.ConfigPath, cut.content)
		m.Reload()
		if n := strings.Count(m.Log(), "configuration reload rejected"); n != i+1 {
			t.Fatalf("%s: %d rejected reloads logged, want %d:\n%s", cut.name, n, i+1, m.Log())
		}
		if _, err := conn.Exec(context.Background(), "DROP TABLE users"); stateOf(err) != "42501" {
			t.Fatalf("%s: DROP TABLE users after the reload: err = %v, want 42501", cut.name, err)
		}
		writeFile(t, cutFile, cut.content)
		_, stderr, code := pgmoatCLI(t, m, moattest.ViewerToken, "config", "check", cutFile, "--against", m.AdminURL)
		if code != 2 || !strings.Contains(stderr, cut.want) {
			t.Errorf("%s: pgmoat config check --against: exit %d, want 2 naming %q\n%s", cut.name, code, cut.want, stderr)
		}
	}
	fams := scrapeMetrics(t, m)
	if f := metricValue(t, fams, "pgmoat_config_reloads_total", labels("result", "failure")); f != float64(len(cuts)) {
		t.Errorf("pgmoat_config_reloads_total{result=failure} = %v, want %d", f, len(cuts))
	}
	if got := policyHash(t, fams); got != hash {
		t.Errorf("policy hash %s after refused reloads, was %s", got, hash)
	}
	evs := waitAuditEvents(t, m.AuditPath, "a config_reload_failed per cut", func(evs []audit.Event) bool {
		return countEvents(evs, audit.ConfigReloadFailed) == len(cuts)
	})
	if e := findEvent(evs, audit.ConfigReloadFailed, func(e audit.Event) bool { return strings.Contains(e.Error, "truncated") }); e == nil {
		t.Errorf("no config_reload_failed event says the file looks truncated")
	}

	// Protection off, on purpose: config check says it lowers protection
	// (exit 1), and the reload is accepted and audited with its diff.
	off := strings.TrimSuffix(string(full), protectUsers) + "policy: {protect: []}\n"
	writeFile(t, cutFile, off)
	out, stderr, code := pgmoatCLI(t, m, moattest.ViewerToken, "config", "check", cutFile, "--against", m.AdminURL)
	if code != 1 || !strings.Contains(out, "protection removed: public.users (lowers protection)") {
		t.Errorf("pgmoat config check of protect: []: exit %d, want 1 with the diff\n%s%s", code, out, stderr)
	}
	writeFile(t, m.ConfigPath, off)
	m.Reload()
	if log := m.Log(); !strings.Contains(log, "configuration reloaded") || !strings.Contains(log, `reload lowers protection" change="protection removed: public.users"`) {
		t.Fatalf("protect: [] not reloaded with its diff logged:\n%s", log)
	}
	if !dropAllowedInRolledBackTx(t, conn, "users") {
		t.Error("DROP TABLE users still refused after protection was turned off on purpose")
	}
	evs = waitAuditEvents(t, m.AuditPath, "a config_changed event", func(evs []audit.Event) bool {
		return countEvents(evs, audit.ConfigChanged) == 1
	})
	ch := findEvent(evs, audit.ConfigChanged, nil)
	if !slices.Equal(ch.Changes, []string{"protection removed: public.users (lowers protection)"}) || ch.PolicyHash == hash {
		t.Errorf("config_changed = %+v, want the removed protection and a new policy hash", *ch)
	}
	fams = scrapeMetrics(t, m)
	for _, ck := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"pgmoat_policy_protect_patterns", nil, 0},
		{"pgmoat_config_protection_lowered_total", nil, 1},
		{"pgmoat_config_reloads_total", labels("result", "success"), 1},
		{"pgmoat_admin_tokens", labels("role", "approver"), 2},
	} {
		if v := metricValue(t, fams, ck.name, ck.labels); v != ck.want {
			t.Errorf("%s%v = %v, want %v", ck.name, ck.labels, v, ck.want)
		}
	}
	if got := policyHash(t, fams); got != ch.PolicyHash {
		t.Errorf("pgmoat_policy_info hash = %s, want the config_changed event's %s", got, ch.PolicyHash)
	}
}

// policyHash returns the hash label of pgmoat_policy_info.
func policyHash(t *testing.T, fams map[string]*dto.MetricFamily) string {
	t.Helper()
	f := fams["pgmoat_policy_info"]
	if f == nil || len(f.GetMetric()) != 1 {
		t.Fatalf("pgmoat_policy_info: want exactly one series, got %v", f)
	}
	for _, l := range f.GetMetric()[0].GetLabel() {
		if l.GetName() == "hash" {
			return l.GetValue()
		}
	}
	t.Fatal("pgmoat_policy_info has no hash label")
	return ""
}

// TestReloadLoweringProtectionNeedsTheAuditLog: with the audit log failing
// (its path leads to /dev/full), a reload that lowers protection is
// refused, since it could not be recorded, and DROP stays blocked; one that
// only adds protection takes effect.
func TestReloadLoweringProtectionNeedsTheAuditLog(t *testing.T) {
	c := pgtest.Get(t)
	db := c.NewDatabase(t)
	c.Exec(t, db, "CREATE TABLE users(id int); CREATE TABLE orders(id int)")
	m := moattest.Start(t, c, moattest.Options{Config: protectUsers})
	conn := connect(t, m.SuperConnString(db))
	full, err := os.ReadFile(m.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	base := strings.TrimSuffix(string(full), protectUsers)
	if err := os.Rename(m.AuditPath, m.AuditPath+".before"); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/dev/full", m.AuditPath); err != nil {
		t.Fatal(err)
	}
	reopenAudit(t, m)
	approver := &admin.Client{BaseURL: m.AdminURL, Token: moattest.ApproverToken}

	writeFile(t, m.ConfigPath, base+"policy: {protect: []}\n")
	var apiErr *admin.APIError
	if err := approver.Reload(context.Background()); !errors.As(err, &apiErr) || !strings.Contains(apiErr.Message, "audit log cannot record it") {
		t.Errorf("reload lowering protection with the audit log down: %v, want it refused", err)
	}
	if _, err := conn.Exec(context.Background(), "DROP TABLE users"); stateOf(err) != "42501" {
		t.Errorf("DROP TABLE users after the refused reload: err = %v, want 42501", err)
	}

	writeFile(t, m.ConfigPath, base+"policy: {protect: [public.users, public.orders]}\n")
	if err := approver.Reload(context.Background()); err != nil {
		t.Errorf("reload adding protection with the audit log down: %v", err)
	}
	if _, err := conn.Exec(context.Background(), "DROP TABLE orders"); stateOf(err) != "42501" {
		t.Errorf("DROP TABLE orders after protecting it: err = %v, want 42501", err)
	}
}
