package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgmoat/pgmoat/approvals"
	"github.com/pgmoat/pgmoat/audit"
	"github.com/pgmoat/pgmoat/internal/moattest"
	"github.com/pgmoat/pgmoat/internal/pgtest"
)

// controlDB starts a PostgreSQL cluster of its own for a control
// database, so that a test can stop it without stopping the upstream.
func controlDB(t *testing.T) *pgtest.Cluster {
	t.Helper()
	c, err := pgtest.Start(pgtest.Options{})
	if err != nil {
		t.Fatalf("starting the control database: %v", err)
	}
	t.Cleanup(func() { c.Stop() })
	return c
}

// sharedPair starts instances a and b of pgmoat in front of the harness
// cluster, sharing the control database ctl.
func sharedPair(t *testing.T, c, ctl *pgtest.Cluster, lease time.Duration) (a, b *moattest.Moat) {
	t.Helper()
	conf := func(id string) string {
		return holdPolicy + fmt.Sprintf(`state:
  dsn: %s
  instance_id: %s
  lease: %s
  poll_interval: 200ms
  timeout: 2s
`, ctl.SuperConnString("postgres", "sslmode=disable"), id, lease)
	}
	a = moattest.Start(t, c, moattest.Options{Config: conf("pgmoat-a")})
	b = moattest.Start(t, c, moattest.Options{Config: conf("pgmoat-b")})
	return a, b
}

// A statement held on A is approved through B's API and completes on A's
// client; each instance's audit log is its own chain, with its instance id
// on every line, and verify checks both.
func TestSharedStateApproveOnOtherInstance(t *testing.T) {
	c := pgtest.Get(t)
	a, b := sharedPair(t, c, controlDB(t), 15*time.Second)
	db := newDB(t, c)
	pg := direct(t, c, db)

	h := startHeld(t, a, db, "DROP TABLE users", false)
	id := h.holdNotice(t)
	seen, err := approver(b, false).GetHold(context.Background(), id)
	if err != nil || seen.Instance != "pgmoat-a" || seen.Status != approvals.StatusPending {
		t.Fatalf("B sees %+v, %v", seen, err)
	}
	start := time.Now()
	if _, err := approver(b, true).Approve(context.Background(), id, "reviewed on B"); err != nil {
		t.Fatal(err)
	}
	r := await(t, h.done, 5*time.Second, "DROP TABLE on A after the approval on B")
	if r.err != nil || r.tag != "DROP TABLE" {
		t.Fatalf("after approval: tag %q, err %v", r.tag, r.err)
	}
	t.Logf("A's client completed %s after the approval on B", time.Since(start))
	if tableExists(t, pg, "public.users") {
		t.Fatal("users still exists after the approved DROP")
	}

	// B recorded the approval (by bob), A the hold; each line names its instance.
	moattest.WaitFor(t, 10*time.Second, "the approval in B's audit log", func() bool {
		evs, _ := audit.ReadFile(b.AuditPath)
		for _, ev := range evs {
			if ev.Kind == audit.HoldApproved && ev.HoldID == id && ev.Approvers[0] == "bob" && ev.Instance == "pgmoat-b" {
				return true
			}
		}
		return false
	})
	a.Stop()
	b.Stop()
	for path, inst := range map[string]string{a.AuditPath: "pgmoat-a", b.AuditPath: "pgmoat-b"} {
		evs, err := audit.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs {
			if ev.Instance != inst {
				t.Fatalf("%s: %s event with instance %q", filepath.Base(path), ev.Kind, ev.Instance)
			}
		}
	}
	out, errOut, code := pgmoatCLI(t, a, "", "audit", "verify", a.AuditPath, b.AuditPath)
	if code != 0 || !strings.Contains(out, "instance pgmoat-a") || !strings.Contains(out, "instance pgmoat-b") || strings.Count(out, "ok: ") != 2 {
		t.Fatalf("audit verify of both instances: exit %d\n%s%s", code, out, errOut)
	}
}

// A one-use pre-approval made on A lets one statement through, on B; the
// same statement on A afterwards is judged as if there were none.
func TestSharedStateOneUsePreApproval(t *testing.T) {
	c := pgtest.Get(t)
	a, b := sharedPair(t, c, controlDB(t), 15*time.Second)
	db := newDB(t, c)
	pg := direct(t, c, db)
	file := filepath.Join(t.TempDir(), "m.sql")
	if err := os.WriteFile(file, []byte("TRUNCATE orders;\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := pgmoatCLI(t, a, moattest.ApproverToken, "approve", "--file", file, "--ttl", "1h", "--reason", "cleanup", "--uses", "1")
	if code != 0 {
		t.Fatalf("pgmoat approve: exit %d\n%s%s", code, out, errOut)
	}
	_, err := connect(t, b.SuperConnString(db)).Exec(context.Background(), "TRUNCATE orders")
	if err != nil {
		t.Fatalf("pre-approved TRUNCATE through B: %v", err)
	}
	wantTable(t, pg, "public.orders", 0)
	c.Exec(t, db, "INSERT INTO orders VALUES (1, 1)")
	_, err = connect(t, a.SuperConnString(db)).Exec(context.Background(), "TRUNCATE orders")
	wantBlocked(t, err, "public.orders", "second TRUNCATE through A")
	wantTable(t, pg, "public.orders", 1)
	list, err := approver(a, false).ListPreApprovals(context.Background())
	if err != nil || len(list) != 1 || list[0].Uses != 1 || list[0].Status != approvals.PreApprovalExhausted {
		t.Fatalf("pre-approvals: %+v, %v", list, err)
	}
}

// A killed with SIGKILL: B withdraws its hold once A's lease has run out,
// and says so in its audit log.
func TestSharedStateDeadInstance(t *testing.T) {
	c := pgtest.Get(t)
	lease := 2 * time.Second
	a, b := sharedPair(t, c, controlDB(t), lease)
	db := newDB(t, c)
	h := startHeld(t, a, db, "DROP TABLE users", false)
	id := h.holdNotice(t)
	a.Signal(os.Kill)
	<-a.Done()
	killed := time.Now()
	info := waitHoldStatus(t, b, id, approvals.StatusWithdrawn)
	if d := time.Since(killed); d < lease/2 {
		t.Errorf("withdrawn %s after the kill, before the lease could run out", d)
	}
	if !strings.Contains(info.Resolution, "instance pgmoat-a stopped renewing its lease") {
		t.Errorf("resolution %q", info.Resolution)
	}
	moattest.WaitFor(t, 10*time.Second, "the withdrawal in B's audit log", func() bool {
		evs, _ := audit.ReadFile(b.AuditPath)
		for _, ev := range evs {
			if ev.Kind == audit.HoldWithdrawn && ev.HoldID == id && strings.Contains(ev.ApprovalReason, "pgmoat-a") {
				return true
			}
		}
		return false
	})
	r := await(t, h.done, 10*time.Second, "the client of the killed instance")
	if r.err == nil {
		t.Error("the killed instance's client got no error")
	}
}

// The control database stopped: new holds and approvals are refused
// quickly and clearly, allowed statements keep working.
func TestSharedStateControlDatabaseDown(t *testing.T) {
	c := pgtest.Get(t)
	ctl := controlDB(t)
	a, b := sharedPair(t, c, ctl, 15*time.Second)
	db := newDB(t, c)
	if err := ctl.Stop(); err != nil {
		t.Fatal(err)
	}
	conn := connect(t, a.SuperConnString(db, deployer))
	start := time.Now()
	_, err := conn.Exec(context.Background(), "DROP TABLE users")
	pe := wantCode(t, err, "42501", "DROP TABLE with the control database down")
	if !strings.Contains(pe.Hint, "could not hold it for approval") || !strings.Contains(pe.Hint, "control database is unavailable") {
		t.Errorf("refusal hint %q", pe.Hint)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("the refusal took %s", d)
	}
	wantTable(t, direct(t, c, db), "public.users", 3)
	wantUsable(t, conn)
	var n int
	if err := conn.QueryRow(context.Background(), "SELECT count(*) FROM users").Scan(&n); err != nil || n != 3 {
		t.Fatalf("allowed SELECT: %d, %v", n, err)
	}
	_, err = approver(b, false).Approve(context.Background(), "0123456789abcdef", "lgtm")
	if err == nil || !strings.Contains(err.Error(), "HTTP 503") || !strings.Contains(err.Error(), "control database is unavailable") {
		t.Errorf("approval with the control database down: %v", err)
	}
	moattest.WaitFor(t, 10*time.Second, "pgmoat_state_up 0", func() bool {
		return strings.Contains(a.Metrics(t), "pgmoat_state_up 0")
	})
	if !strings.Contains(a.Metrics(t), `pgmoat_state_errors_total{op="create_hold"}`) {
		t.Error("no create_hold error counted")
	}
}
