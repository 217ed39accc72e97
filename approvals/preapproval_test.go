package approvals

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pgmoat/pgmoat/rules"
)

const migration = `
-- 2025_03_14_drop_legacy.sql
DROP TABLE billing.invoices_legacy;
DELETE FROM billing.invoices WHERE created_at < '2019-01-01';
ALTER TABLE billing.customers DROP COLUMN fax;
`

func fingerprint(t testing.TB, sql string) string {
	t.Helper()
	fps, err := rules.Fingerprints(sql)
	if err != nil || len(fps) != 1 {
		t.Fatalf("Fingerprints(%q) = %v, %v", sql, fps, err)
	}
	return fps[0]
}

func preApprove(t *testing.T, h *harness, req PreApprovalRequest) *PreApproval {
	t.Helper()
	p, err := h.s.PreApprove(req)
	if err != nil {
		t.Fatalf("PreApprove: %v", err)
	}
	return p
}

func TestPreApprovalMatchesEveryStatementWithOtherLiterals(t *testing.T) {
	h := newHarness(t, holdsConfig(), Options{})
	p := preApprove(t, h, PreApprovalRequest{SQL: migration, TTL: 2 * time.Hour, Reason: "PR 1234", Approver: "ci-deploy"})
	if len(p.Fingerprints) != 3 || p.Status != PreApprovalActive || p.Approver != "ci-deploy" {
		t.Fatalf("PreApprove = %+v", p)
	}
	for _, stmt := range []string{
		"drop table billing.invoices_legacy",
		"DELETE FROM billing.invoices WHERE created_at < '2020-06-30'", // another literal
		"ALTER TABLE billing.customers DROP COLUMN fax",
	} {
		got, ok := h.s.Match(fingerprint(t, stmt), "alice", "app")
		if !ok || got.ID != p.ID {
			t.Errorf("Match(%q) = %+v, %v; want %s", stmt, got, ok, p.ID)
		}
	}
	for _, stmt := range []string{
		"DROP TABLE billing.invoices",
		"DELETE FROM billing.invoices",
		"ALTER TABLE billing.customers DROP COLUMN email",
	} {
		if got, ok := h.s.Match(fingerprint(t, stmt), "alice", "app"); ok {
			t.Errorf("Match(%q) = %+v; want no match", stmt, got)
		}
	}
	if got := h.rec.types(); !slices.Equal(got, []EventType{EventPreApprovalCreated}) {
		t.Errorf("events %v", got)
	}
}

func TestPreApprovalLimits(t *testing.T) {
	h := newHarness(t, holdsConfig(), Options{})
	preApprove(t, h, PreApprovalRequest{SQL: "DROP TABLE t1", TTL: time.Hour, Reason: "r", Approver: "a", Database: "app"})
	preApprove(t, h, PreApprovalRequest{SQL: "DROP TABLE t2", TTL: time.Hour, Reason: "r", Approver: "a", User: "migrator"})
	preApprove(t, h, PreApprovalRequest{SQL: "DROP TABLE t3", TTL: time.Hour, Reason: "r", Approver: "a", User: "migrator", Database: "app"})
	for _, tc := range []struct {
		sql, user, db string
		want          bool
	}{
		{"DROP TABLE t1", "anyone", "app", true},
		{"DROP TABLE t1", "anyone", "App", false},
		{"DROP TABLE t1", "anyone", "other", false},
		{"DROP TABLE t2", "migrator", "other", true},
		{"DROP TABLE t2", "alice", "app", false},
		{"DROP TABLE t3", "migrator", "app", true},
		{"DROP TABLE t3", "migrator", "other", false},
		{"DROP TABLE t3", "alice", "app", false},
	} {
		if _, ok := h.s.Match(fingerprint(t, tc.sql), tc.user, tc.db); ok != tc.want {
			t.Errorf("Match(%q, user %s, db %s) = %v, want %v", tc.sql, tc.user, tc.db, ok, tc.want)
		}
	}
}

func TestPreApprovalExpiresExactly(t *testing.T) {
	h := newHarness(t, holdsConfig(), Options{})
	p := preApprove(t, h, PreApprovalRequest{SQL: "TRUNCATE audit.events", TTL: 2 * time.Hour, Reason: "r", Approver: "a"})
	fp := fingerprint(t, "TRUNCATE audit.events")

	h.clock.Jump(2*time.Hour - time.Nanosecond)
	if _, ok := h.s.Match(fp, "u", "d"); !ok {
		t.Fatal("no match just before expiry")
	}
	h.clock.Jump(time.Nanosecond)
	if _, ok := h.s.Match(fp, "u", "d"); ok {
		t.Fatal("match at expiry")
	}
	if err := h.s.MarkUsed(p.ID, Usage{Fingerprint: fp}); !errors.Is(err, ErrNotPending) {
		t.Errorf("MarkUsed after expiry: %v", err)
	}
	if l := h.listPre(t); len(l) != 1 || l[0].Status != PreApprovalExpired {
		t.Errorf("list after expiry: %+v", l)
	}
	h.clock.Jump(DefaultKeepEndedFor)
	if l := h.listPre(t); len(l) != 0 {
		t.Errorf("list a day after expiry: %+v", l)
	}
	if _, ok := h.s.Match(fp, "u", "d"); ok {
		t.Error("match after purge")
	}
}

func TestPreApprovalUseAndRevoke(t *testing.T) {
	h := newHarness(t, holdsConfig(), Options{})
	p := preApprove(t, h, PreApprovalRequest{SQL: "DROP TABLE t", TTL: time.Hour, Reason: "PR 7", Approver: "ci"})
	fp := fingerprint(t, "DROP TABLE t")
	u := Usage{Fingerprint: fp, Statement: "DROP TABLE t", User: "migrator", Database: "app", SessionID: "s-1", Rule: "no-drops"}

	if err := h.s.MarkUsed(p.ID, u); err != nil {
		t.Fatal(err)
	}
	ev := h.rec.last()
	if ev.Type != EventPreApprovalUsed || ev.Use.Statement != "DROP TABLE t" || ev.Actor != "ci" ||
		ev.Reason != "PR 7" || ev.PreApproval.Uses != 1 {
		t.Errorf("used event %+v", ev)
	}
	if got := testutil.ToFloat64(h.m.PreapprovalsUsed); got != 1 {
		t.Errorf("preapprovals used = %v", got)
	}

	// A use the audit log refuses does not count and must stop the statement.
	h.rec.setRefuse(EventPreApprovalUsed)
	if err := h.s.MarkUsed(p.ID, u); !errors.Is(err, ErrNotRecorded) {
		t.Errorf("MarkUsed with failing audit: %v", err)
	}
	h.rec.setRefuse()
	if got, _ := h.s.GetPreApproval(p.ID); got.Uses != 1 {
		t.Errorf("uses = %d, want 1", got.Uses)
	}

	r, err := h.s.Revoke(p.ID, "carol")
	if err != nil || r.Status != PreApprovalRevoked || r.RevokedBy != "carol" {
		t.Fatalf("Revoke = %+v, %v", r, err)
	}
	if _, ok := h.s.Match(fp, "migrator", "app"); ok {
		t.Error("match after revoke")
	}
	if err := h.s.MarkUsed(p.ID, u); !errors.Is(err, ErrNotPending) {
		t.Errorf("MarkUsed after revoke: %v", err)
	}
	if _, err := h.s.Revoke(p.ID, "carol"); !errors.Is(err, ErrNotPending) || !strings.Contains(err.Error(), "already revoked") {
		t.Errorf("second revoke: %v", err)
	}
	if _, err := h.s.Revoke("nope", "carol"); !errors.Is(err, ErrNotFound) {
		t.Errorf("revoke unknown: %v", err)
	}
	want := []EventType{EventPreApprovalCreated, EventPreApprovalUsed, EventPreApprovalRevoked}
	if got := h.rec.types(); !slices.Equal(got, want) {
		t.Errorf("events %v, want %v", got, want)
	}
}

func TestPreApprovalInvalid(t *testing.T) {
	h := newHarness(t, holdsConfig(), Options{})
	ok := PreApprovalRequest{SQL: "DROP TABLE t", TTL: time.Hour, Reason: "r", Approver: "a"}
	for _, tc := range []struct {
		name string
		edit func(*PreApprovalRequest)
		want string
	}{
		{"no reason", func(r *PreApprovalRequest) { r.Reason = " " }, "reason is required"},
		{"no approver", func(r *PreApprovalRequest) { r.Approver = "" }, "approver"},
		{"no ttl", func(r *PreApprovalRequest) { r.TTL = 0 }, "ttl"},
		{"ttl too long", func(r *PreApprovalRequest) { r.TTL = MaxPreApprovalTTL + time.Second }, "ttl"},
		{"bad sql", func(r *PreApprovalRequest) { r.SQL = "DROP TABLEE t" }, "does not parse"},
		{"no statement", func(r *PreApprovalRequest) { r.SQL = "-- nothing\n" }, "no statement"},
	} {
		req := ok
		tc.edit(&req)
		_, err := h.s.PreApprove(req)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	h.rec.setRefuse(EventPreApprovalCreated)
	if _, err := h.s.PreApprove(ok); !errors.Is(err, ErrNotRecorded) {
		t.Errorf("unrecorded: %v", err)
	}
	if l := h.listPre(t); len(l) != 0 {
		t.Errorf("registered despite errors: %+v", l)
	}
	if _, err := h.s.PreApprove(PreApprovalRequest{SQL: "DROP TABLE t", TTL: MaxPreApprovalTTL, Reason: "r", Approver: "a"}); err == nil {
		t.Error("recording refused, yet PreApprove succeeded")
	}
}

func TestParseTTL(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"2h": 2 * time.Hour, "90m": 90 * time.Minute, "7d": 7 * 24 * time.Hour, "1.5d": 36 * time.Hour,
		"1d12h": 36 * time.Hour, " 30d ": 30 * 24 * time.Hour,
	} {
		if got, err := ParseTTL(in); err != nil || got != want {
			t.Errorf("ParseTTL(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "soon", "d", "xd", "-1d", "1d1x"} {
		if _, err := ParseTTL(in); err == nil {
			t.Errorf("ParseTTL(%q) accepted", in)
		}
	}
}
