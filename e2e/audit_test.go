package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgmoat/pgmoat/admin"
	"github.com/pgmoat/pgmoat/approvals"
	"github.com/pgmoat/pgmoat/audit"
	"github.com/pgmoat/pgmoat/internal/clients"
	"github.com/pgmoat/pgmoat/internal/moattest"
	"github.com/pgmoat/pgmoat/internal/pgtest"
	"github.com/pgmoat/pgmoat/rules"
)

// auditPolicy protects three tables; the deployer application's
// destructive statements are held for approval instead of blocked.
const auditPolicy = `policy:
  protect: [public.users, public.deploy_old, public.pre_old]
  rules:
    - name: deployer-needs-approval
      match:
        applications: [deployer]
      operations: [destructive]
      action: hold
`

// TestAuditEventsFromRealSessions drives pgx and psql sessions through the
// real binary (a blocked DROP, allowed statements, a hold approved through
// the admin API, a pre-approval used, a reload) and reads what a user of
// the audit file would read.
func TestAuditEventsFromRealSessions(t *testing.T) {
	c := pgtest.Get(t)
	db := c.NewDatabase(t)
	c.Exec(t, db, "CREATE TABLE users(id int, email text); CREATE TABLE deploy_old(id int); CREATE TABLE pre_old(id int)")
	m := moattest.Start(t, c, moattest.Options{Config: auditPolicy, AuditStatements: "all"})
	ctx := context.Background()
	api := &admin.Client{BaseURL: m.AdminURL, Token: moattest.ApproverToken}

	// A pgx session: allowed statements, then a blocked DROP.
	app := connect(t, m.SuperConnString(db, "application_name=e2e-pgx"))
	mustExec(t, app, "SELECT 1")
	mustExec(t, app, "INSERT INTO users VALUES (1, 'a@example.com')")
	_, err := app.Exec(ctx, "DROP TABLE users")
	if code := stateOf(err); code != "42501" {
		t.Fatalf("DROP TABLE users through pgmoat: err = %v, want SQLSTATE 42501", err)
	}
	closeConn(t, app)

	// A psql session: an allowed SELECT and a blocked DROP.
	out, stderr, code := clients.Psql(t, m.SuperConnString(db, "application_name=e2e-psql"),
		"SELECT count(*) AS n FROM users;\nDROP TABLE users;\n")
	if code != 0 || !strings.Contains(out, "1") || !strings.Contains(stderr, "pgmoat blocked") {
		t.Fatalf("psql: exit %d\nstdout: %s\nstderr: %s", code, out, stderr)
	}

	// A hold: the deployer's DROP waits until alice approves it.
	dep := connect(t, m.SuperConnString(db, "application_name=deployer"))
	held := make(chan error, 1)
	go func() {
		_, err := dep.Exec(ctx, "DROP TABLE deploy_old")
		held <- err
	}()
	hold := waitPendingHold(t, api)
	if _, err := api.Approve(ctx, hold.ID, "ticket OPS-42: table retired"); err != nil {
		t.Fatalf("approve %s: %v", hold.ID, err)
	}
	if err := <-held; err != nil {
		t.Fatalf("approved DROP TABLE deploy_old: %v", err)
	}
	closeConn(t, dep)

	// A pre-approval, then its use.
	pre, err := api.PreApprove(ctx, admin.PreApproveRequest{SQL: "DROP TABLE pre_old", TTL: 10 * time.Minute, Reason: "reviewed in PR 7"})
	if err != nil {
		t.Fatalf("pre-approve: %v", err)
	}
	user := connect(t, m.SuperConnString(db, "application_name=e2e-preapproved"))
	mustExec(t, user, "DROP TABLE pre_old")
	closeConn(t, user)

	// A reload of the unchanged file.
	m.Reload()

	evs := waitAuditEvents(t, m.AuditPath, "session_end of every session and config_loaded", func(evs []audit.Event) bool {
		for _, a := range []string{"e2e-pgx", "e2e-psql", "deployer", "e2e-preapproved"} {
			if findEvent(evs, audit.SessionEnd, func(e audit.Event) bool { return e.Application == a }) == nil {
				return false
			}
		}
		return countEvents(evs, audit.ConfigLoaded) == 2
	})
	assertAuditTimes(t, m.AuditPath)

	// Sessions: start and end with the identity of the client.
	ids := map[string]string{}
	for _, a := range []string{"e2e-pgx", "e2e-psql", "deployer", "e2e-preapproved"} {
		start := findEvent(evs, audit.SessionStart, func(e audit.Event) bool { return e.Application == a })
		if start == nil {
			t.Fatalf("no session_start for application %s", a)
		}
		if start.SessionID == "" || start.User != c.Superuser || start.Database != db || !strings.HasPrefix(start.Client, "127.0.0.1:") {
			t.Errorf("session_start of %s: %+v", a, *start)
		}
		end := findEvent(evs, audit.SessionEnd, func(e audit.Event) bool { return e.SessionID == start.SessionID })
		if end == nil {
			t.Fatalf("no session_end for session %s (%s)", start.SessionID, a)
		}
		if end.EndReason != "client_terminate" || end.User != c.Superuser || end.Database != db || end.Application != a || end.Client != start.Client {
			t.Errorf("session_end of %s: %+v", a, *end)
		}
		if end.Duration <= 0 {
			t.Errorf("session_end of %s has no duration: %+v", a, *end)
		}
		if indexOf(evs, start) > indexOf(evs, end) {
			t.Errorf("session_end of %s written before its session_start", a)
		}
		ids[a] = start.SessionID
	}

	// The blocked DROPs, with what was dropped, why, and by whom.
	fp, err := rules.Fingerprints("DROP TABLE users")
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"e2e-pgx", "e2e-psql"} {
		d := findEvent(evs, audit.Decision, func(e audit.Event) bool { return e.SessionID == ids[a] })
		if d == nil {
			t.Fatalf("no decision event in session %s (%s)", ids[a], a)
		}
		want := audit.Event{Statement: "DROP TABLE users", Fingerprint: fp[0], Decision: "block", Rule: rules.RuleDefaultDestructive}
		if d.Statement != want.Statement || d.Fingerprint != want.Fingerprint || d.Decision != want.Decision || d.Rule != want.Rule ||
			!slices.Equal(d.Operations, []string{"drop"}) || !slices.Equal(d.Objects, []string{"public.users"}) ||
			d.User != c.Superuser || d.Database != db || d.Application != a || d.Reason == "" {
			t.Errorf("decision in %s:\n got %+v\nwant statement/fingerprint/decision/rule %+v, operations [drop], objects [public.users]", a, *d, want)
		}
	}

	// audit.statements: all records every allowed statement.
	for _, s := range []struct{ app, sql string }{
		{"e2e-pgx", "SELECT 1"},
		{"e2e-pgx", "INSERT INTO users VALUES (1, 'a@example.com')"},
		{"e2e-psql", "SELECT count(*) AS n FROM users;"},
	} {
		// psql sends the semicolon; pgmoat records each statement without it.
		e := findEvent(evs, audit.Statement, func(e audit.Event) bool {
			return e.SessionID == ids[s.app] && e.Statement == strings.TrimSuffix(s.sql, ";")
		})
		if e == nil {
			t.Errorf("no statement event for %q in %s; statements there: %q", s.sql, s.app, statementsOf(evs, ids[s.app]))
			continue
		}
		if e.Decision != "allow" || e.Fingerprint == "" || e.Application != s.app {
			t.Errorf("statement event for %q: %+v", s.sql, *e)
		}
	}

	// The hold: created (with the rule that held it) and approved by alice
	// with her reason, in that order.
	created := findEvent(evs, audit.HoldCreated, func(e audit.Event) bool { return e.HoldID == hold.ID })
	approved := findEvent(evs, audit.HoldApproved, func(e audit.Event) bool { return e.HoldID == hold.ID })
	if created == nil || approved == nil {
		t.Fatalf("hold %s: hold_created %v, hold_approved %v", hold.ID, created != nil, approved != nil)
	}
	if created.Statement != "DROP TABLE deploy_old" || created.Rule != "deployer-needs-approval" || created.SessionID != ids["deployer"] ||
		created.Application != "deployer" || created.ExpiresAt.IsZero() {
		t.Errorf("hold_created: %+v", *created)
	}
	if !slices.Equal(approved.Approvers, []string{"alice"}) || approved.ApprovalReason != "ticket OPS-42: table retired" ||
		approved.SessionID != ids["deployer"] || approved.Statement != "DROP TABLE deploy_old" {
		t.Errorf("hold_approved: %+v", *approved)
	}
	if indexOf(evs, created) > indexOf(evs, approved) {
		t.Error("hold_approved written before hold_created")
	}
	if d := findEvent(evs, audit.Decision, func(e audit.Event) bool { return e.SessionID == ids["deployer"] }); d == nil || d.Decision != "hold" {
		t.Errorf("decision event for the held statement: %+v", d)
	}

	// The pre-approval: created by alice, then used by the session that ran it.
	pc := findEvent(evs, audit.PreapprovalCreated, func(e audit.Event) bool { return e.PreapprovalID == pre.ID })
	pu := findEvent(evs, audit.PreapprovalUsed, func(e audit.Event) bool { return e.PreapprovalID == pre.ID })
	if pc == nil || pu == nil {
		t.Fatalf("pre-approval %s: preapproval_created %v, preapproval_used %v", pre.ID, pc != nil, pu != nil)
	}
	if !slices.Equal(pc.Approvers, []string{"alice"}) || pc.ApprovalReason != "reviewed in PR 7" || pc.Statement != "DROP TABLE pre_old" || len(pc.Fingerprints) != 1 {
		t.Errorf("preapproval_created: %+v", *pc)
	}
	if pu.SessionID != ids["e2e-preapproved"] || pu.Statement != "DROP TABLE pre_old" || pu.Application != "e2e-preapproved" || pu.Fingerprint != pc.Fingerprints[0] {
		t.Errorf("preapproval_used: %+v", *pu)
	}

	// config_loaded: first at start, before any session, then after the reload.
	if evs[0].Kind != audit.ConfigLoaded || !strings.Contains(evs[0].Reason, "public.users") || !strings.Contains(evs[0].Reason, "1 rule") {
		t.Errorf("the log does not start with the policy in force: %+v", evs[0])
	}
	if cl := findEvent(evs[1:], audit.ConfigLoaded, nil); indexOf(evs[1:], cl) < indexOf(evs[1:], pu) {
		t.Errorf("config_loaded of the reload written before the last pre-approval use: %+v", *cl)
	}
}

// TestAuditKeepsPipelinedTexts pipelines a few thousand Query messages
// of a few shapes with other literals: most are judged by the fast path
// from the read buffer, without a copy, and the buffer is read into again
// and again while the audit log (audit.statements: all) is still writing
// what arrived in it. Every statement must be recorded as it was sent:
// allowed ones, ones that change session state, blocked ones. (The log
// encodes an event before RecordAsync returns; were it to queue events
// instead, this is the test that would see borrowed texts go stale.)
func TestAuditKeepsPipelinedTexts(t *testing.T) {
	c := pgtest.Get(t)
	db := c.NewDatabase(t)
	c.Exec(t, db, "CREATE TABLE users(id int, email text); CREATE TABLE events(id int, note text)")
	m := moattest.Start(t, c, moattest.Options{Config: "policy:\n  protect: [public.users]\n", AuditStatements: "all"})
	ctx := context.Background()
	pc, err := pgconn.Connect(ctx, m.SuperConnString(db, "application_name=pipelined"))
	if err != nil {
		t.Fatal(err)
	}
	const n = 3000
	var allowed, blocked []string
	fe := pc.Frontend()
	for i := range n {
		var q string
		switch i % 4 {
		case 0:
			q = fmt.Sprintf("INSERT INTO events VALUES (%d, '%s')", i, strings.Repeat("n", i%41))
		case 1:
			q = fmt.Sprintf("SELECT id, email FROM users WHERE id = %d", i)
		case 2:
			q = fmt.Sprintf("SET statement_timeout = %d", 60000+i)
		case 3:
			q = fmt.Sprintf("UPDATE users SET email = 'x%d'", i)
			blocked = append(blocked, q)
			fe.Send(&pgproto3.Query{String: q})
			continue
		}
		allowed = append(allowed, q)
		fe.Send(&pgproto3.Query{String: q})
	}
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	errs := 0
	for ready := 0; ready < n; {
		msg, err := fe.Receive()
		if err != nil {
			t.Fatalf("after %d of %d replies: %v", ready, n, err)
		}
		switch msg := msg.(type) {
		case *pgproto3.ReadyForQuery:
			ready++
		case *pgproto3.ErrorResponse:
			if msg.Code != "42501" {
				t.Fatalf("error %s: %s", msg.Code, msg.Message)
			}
			errs++
		}
	}
	if errs != len(blocked) {
		t.Fatalf("%d statements refused, want the %d UPDATEs without WHERE", errs, len(blocked))
	}
	pc.Close(ctx)

	evs := waitAuditEvents(t, m.AuditPath, "the session's end", func(evs []audit.Event) bool {
		return findEvent(evs, audit.SessionEnd, func(e audit.Event) bool { return e.Application == "pipelined" }) != nil
	})
	start := findEvent(evs, audit.SessionStart, func(e audit.Event) bool { return e.Application == "pipelined" })
	var gotAllowed, gotBlocked []string
	for _, e := range evs {
		switch {
		case e.SessionID != start.SessionID:
		case e.Kind == audit.Statement && e.Decision == "allow":
			gotAllowed = append(gotAllowed, e.Statement)
		case e.Kind == audit.Decision && e.Decision == "block":
			gotBlocked = append(gotBlocked, e.Statement)
		}
	}
	for _, c := range []struct {
		what      string
		got, want []string
	}{{"allowed", gotAllowed, allowed}, {"blocked", gotBlocked, blocked}} {
		slices.Sort(c.got)
		slices.Sort(c.want)
		if !slices.Equal(c.got, c.want) {
			for i := range min(len(c.got), len(c.want)) {
				if c.got[i] != c.want[i] {
					t.Errorf("%s statements recorded: %d, want %d; first difference: %q, want %q", c.what, len(c.got), len(c.want), c.got[i], c.want[i])
					break
				}
			}
			if len(c.got) != len(c.want) {
				t.Errorf("%s statements recorded: %d, want %d", c.what, len(c.got), len(c.want))
			}
		}
	}
}

// TestAuditPreapprovedStatementNotRecordedAsBlocked runs a pre-approved
// DROP with audit.statements: all. The DROP ran, so the "statement" line
// recording it must not say decision "block": whoever searches the log for
// blocked statements would count a statement that destroyed a table.
func TestAuditPreapprovedStatementNotRecordedAsBlocked(t *testing.T) {
	c := pgtest.Get(t)
	db := c.NewDatabase(t)
	c.Exec(t, db, "CREATE TABLE old_stuff(id int)")
	m := moattest.Start(t, c, moattest.Options{Config: "policy:\n  protect: [public.old_stuff]\n", AuditStatements: "all"})
	api := &admin.Client{BaseURL: m.AdminURL, Token: moattest.ApproverToken}
	if _, err := api.PreApprove(context.Background(), admin.PreApproveRequest{SQL: "DROP TABLE old_stuff", TTL: time.Minute, Reason: "retired"}); err != nil {
		t.Fatal(err)
	}
	conn := connect(t, m.SuperConnString(db, "application_name=preapproved"))
	mustExec(t, conn, "DROP TABLE old_stuff")
	evs := waitAuditEvents(t, m.AuditPath, "the statement event", func(evs []audit.Event) bool {
		return findEvent(evs, audit.Statement, func(e audit.Event) bool { return e.Statement == "DROP TABLE old_stuff" }) != nil
	})
	if u := findEvent(evs, audit.PreapprovalUsed, nil); u == nil || u.Decision != "allow" {
		t.Errorf("preapproval_used: %+v", u)
	}
	for _, e := range evs {
		if e.Statement == "DROP TABLE old_stuff" && e.Decision == "block" {
			t.Errorf("the pre-approved DROP, which ran, is recorded as blocked: %s line %+v", e.Kind, e)
		}
	}
}

// TestAuditHasNoPasswords logs in through pgmoat with cleartext, md5 and
// SCRAM passwords (pgx and psql) and checks that no password, stored
// password hash or admin token reaches the audit file.
func TestAuditHasNoPasswords(t *testing.T) {
	c := pgtest.Get(t)
	c.AuthUsers(t)
	db := c.NewDatabase(t)
	c.Exec(t, db, "CREATE TABLE users(id int)")
	m := moattest.Start(t, c, moattest.Options{Config: "policy:\n  protect: [public.users]\n", AuditStatements: "all"})
	ctx := context.Background()
	users := []struct{ name, password string }{
		{pgtest.UserClear, pgtest.PasswordClear},
		{pgtest.UserMD5, pgtest.PasswordMD5},
		{pgtest.UserSCRAM, pgtest.PasswordSCRAM},
		{c.Superuser, c.SuperPassword},
	}
	for _, u := range users {
		conn := connect(t, m.ConnString(u.name, u.password, db, "application_name=pw-pgx"))
		mustExec(t, conn, "SELECT 1")
		if _, err := conn.Exec(ctx, "DROP TABLE users"); stateOf(err) != "42501" {
			t.Fatalf("%s: DROP TABLE users: %v", u.name, err)
		}
		closeConn(t, conn)
		_, stderr, code := clients.Psql(t, m.ConnString(u.name, u.password, db, "application_name=pw-psql"), "SELECT 2;\nDROP TABLE users;\n")
		if code != 0 || !strings.Contains(stderr, "pgmoat blocked") {
			t.Fatalf("psql as %s: exit %d: %s", u.name, code, stderr)
		}
	}
	// Approver tokens go through the admin API; they must not be logged either.
	api := &admin.Client{BaseURL: m.AdminURL, Token: moattest.ApproverToken}
	if _, err := api.PreApprove(ctx, admin.PreApproveRequest{SQL: "DROP TABLE users", TTL: time.Minute, Reason: "token check"}); err != nil {
		t.Fatal(err)
	}
	waitAuditEvents(t, m.AuditPath, "session_end of every session", func(evs []audit.Event) bool {
		n := 0
		for _, e := range evs {
			if e.Kind == audit.SessionEnd {
				n++
			}
		}
		return n == 2*len(users)
	})
	evs, _ := audit.ReadFile(m.AuditPath)
	for _, u := range users {
		if findEvent(evs, audit.Decision, func(e audit.Event) bool { return e.User == u.name }) == nil {
			t.Errorf("no decision event for %s: the check below would prove little", u.name)
		}
	}
	data, err := os.ReadFile(m.AuditPath)
	if err != nil {
		t.Fatal(err)
	}
	secrets := []string{moattest.ApproverToken, moattest.Approver2Token, moattest.ViewerToken}
	for _, u := range users {
		sum := md5.Sum([]byte(u.password + u.name))
		secrets = append(secrets, u.password, "md5"+hex.EncodeToString(sum[:]))
	}
	for _, s := range secrets {
		if bytes.Contains(data, []byte(s)) {
			t.Errorf("the audit file contains the secret %q", s)
		}
	}
}

// TestAuditRedact switches audit.redact on by reload and checks that the
// literals of allowed and blocked statements stay out of the file.
func TestAuditRedact(t *testing.T) {
	c := pgtest.Get(t)
	db := c.NewDatabase(t)
	c.Exec(t, db, "CREATE TABLE users(id int, email text)")
	m := moattest.Start(t, c, moattest.Options{Config: "policy:\n  protect: [public.users]\n", AuditStatements: "all"})
	cfg, err := os.ReadFile(m.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	const flush = "  flush_interval: 20ms\n"
	if !bytes.Contains(cfg, []byte(flush)) {
		t.Fatalf("moattest config has no %q line to add redact after:\n%s", flush, cfg)
	}
	writeFile(t, m.ConfigPath, strings.Replace(string(cfg), flush, flush+"  redact: true\n", 1))
	m.Reload()
	if !strings.Contains(m.Log(), "configuration reloaded") {
		t.Fatalf("reload with audit.redact failed:\n%s", m.Log())
	}

	conn := connect(t, m.SuperConnString(db, "application_name=redact"))
	mustExec(t, conn, "SELECT count(*) FROM users WHERE email = 'alice.secret@example.com'")
	if _, err := conn.Exec(context.Background(), "UPDATE users SET email = 'bob.secret@example.com'"); stateOf(err) != "42501" {
		t.Fatalf("UPDATE without WHERE: %v, want 42501", err)
	}
	closeConn(t, conn)
	evs := waitAuditEvents(t, m.AuditPath, "session_end", func(evs []audit.Event) bool {
		return findEvent(evs, audit.SessionEnd, func(e audit.Event) bool { return e.Application == "redact" }) != nil
	})
	st := findEvent(evs, audit.Statement, func(e audit.Event) bool { return strings.Contains(e.Statement, "email =") })
	if st == nil || st.Statement != "SELECT count(*) FROM users WHERE email = $1" {
		t.Errorf("redacted statement event: %+v", st)
	}
	d := findEvent(evs, audit.Decision, nil)
	if d == nil || d.Statement != "UPDATE users SET email = $1" || d.Decision != "block" || !slices.Equal(d.Operations, []string{"update_all"}) {
		t.Errorf("redacted decision event: %+v", d)
	}
	data, _ := os.ReadFile(m.AuditPath)
	for _, lit := range []string{"alice.secret", "bob.secret"} {
		if bytes.Contains(data, []byte(lit)) {
			t.Errorf("literal %q is in the audit file despite audit.redact", lit)
		}
	}
}

// TestAuditVerifyCommand runs `pgmoat audit verify` on the files a real
// run wrote: intact (exit 0), with one byte edited (exit 1 naming the
// line), and across a rotation by rename and SIGUSR1 (exit 0 for old+new).
func TestAuditVerifyCommand(t *testing.T) {
	c := pgtest.Get(t)
	db := c.NewDatabase(t)
	c.Exec(t, db, "CREATE TABLE users(id int)")
	m := moattest.Start(t, c, moattest.Options{Config: "policy:\n  protect: [public.users]\n"})
	blockedSession := func(app string) {
		conn := connect(t, m.SuperConnString(db, "application_name="+app))
		if _, err := conn.Exec(context.Background(), "DROP TABLE users"); stateOf(err) != "42501" {
			t.Fatalf("DROP TABLE users: %v", err)
		}
		closeConn(t, conn)
	}
	for _, app := range []string{"verify-1", "verify-2"} {
		blockedSession(app)
	}
	waitAuditEvents(t, m.AuditPath, "two sessions ended", func(evs []audit.Event) bool {
		return findEvent(evs, audit.SessionEnd, func(e audit.Event) bool { return e.Application == "verify-2" }) != nil
	})
	out, code := runVerify(t, m.AuditPath)
	// config_loaded, then session_start, decision and session_end twice.
	if code != 0 || !strings.Contains(out, "ok: 7 lines in 1 file, chained from genesis") {
		t.Fatalf("verify of the live file: exit %d\n%s", code, out)
	}

	// One byte edited in line 3: the first letter of its event name.
	lines := fileLines(t, m.AuditPath)
	i := strings.Index(lines[2], `"event":"`) + len(`"event":"`)
	edited := []byte(lines[2])
	edited[i]++
	lines[2] = string(edited)
	tampered := filepath.Join(t.TempDir(), "tampered.jsonl")
	writeFile(t, tampered, strings.Join(lines, "\n")+"\n")
	out, code = runVerify(t, tampered)
	if code != 1 || !strings.Contains(out, "BROKEN: "+tampered+":3:") || !strings.Contains(out, "2 lines verified before it") {
		t.Errorf("verify of a file with line 3 edited: exit %d\n%s", code, out)
	}

	// Rotation: rename, SIGUSR1, more events in a new file.
	rotated := m.AuditPath + ".1"
	if err := os.Rename(m.AuditPath, rotated); err != nil {
		t.Fatal(err)
	}
	reopenAudit(t, m)
	blockedSession("verify-3")
	waitAuditEvents(t, m.AuditPath, "the session after rotation ended", func(evs []audit.Event) bool {
		return findEvent(evs, audit.SessionEnd, func(e audit.Event) bool { return e.Application == "verify-3" }) != nil
	})
	if evs, _ := audit.ReadFile(rotated); len(evs) != 7 {
		t.Errorf("the rotated file has %d events, want the 7 written before rotation", len(evs))
	}
	out, code = runVerify(t, rotated, m.AuditPath)
	if code != 0 || !strings.Contains(out, "ok: 10 lines in 2 files, chained from genesis") {
		t.Errorf("verify of old+new after rotation: exit %d\n%s", code, out)
	}
	out, code = runVerify(t, m.AuditPath, rotated)
	if code != 1 || !strings.Contains(out, "BROKEN: "+rotated+":1:") {
		t.Errorf("verify of new+old (wrong order): exit %d\n%s", code, out)
	}
	out, code = runVerify(t, tampered, m.AuditPath)
	if code != 1 || !strings.Contains(out, "BROKEN: "+tampered+":3:") {
		t.Errorf("verify of tampered old + new: exit %d\n%s", code, out)
	}
}

// TestAuditBoundsAndChainHead sends a 4 MiB DROP through the real binary
// (refused): its audit line stays small and records the statement's
// length and SHA-256. `pgmoat audit verify --from-genesis` accepts the
// whole file and refuses it with its first lines cut, and the chain head
// it prints is the one /metrics shows.
func TestAuditBoundsAndChainHead(t *testing.T) {
	c := pgtest.Get(t)
	db := c.NewDatabase(t)
	c.Exec(t, db, "CREATE TABLE users(id int)")
	m := moattest.Start(t, c, moattest.Options{Config: "policy:\n  protect: [public.users]\n"})
	conn := connect(t, m.SuperConnString(db, "default_query_exec_mode=simple_protocol"))
	stmt := "DROP TABLE users /* " + strings.Repeat("padding ", 512<<10) + "*/"
	if _, err := conn.Exec(context.Background(), stmt); stateOf(err) != "42501" {
		t.Fatalf("a 4 MiB DROP TABLE users: err = %v, want 42501", err)
	}
	closeConn(t, conn)
	evs := waitAuditEvents(t, m.AuditPath, "the session ended", func(evs []audit.Event) bool {
		return countEvents(evs, audit.SessionEnd) == 1
	})
	d := findEvent(evs, audit.Decision, nil)
	sum := sha256.Sum256([]byte(stmt))
	if d == nil || d.StatementBytes != len(stmt) || d.StatementSHA256 != hex.EncodeToString(sum[:]) || !strings.HasPrefix(stmt, d.Statement) {
		t.Fatalf("decision event %+v: want the statement cut, with its length %d and SHA-256", d, len(stmt))
	}
	for i, line := range fileLines(t, m.AuditPath) {
		if len(line) > 32<<10 {
			t.Errorf("audit line %d is %d bytes", i+1, len(line))
		}
	}

	out, code := runVerify(t, "--from-genesis", m.AuditPath)
	head := regexp.MustCompile(`chain head: seq (\d+) hash ([0-9a-f]{64})`).FindStringSubmatch(out)
	if code != 0 || head == nil {
		t.Fatalf("verify --from-genesis of the live file: exit %d\n%s", code, out)
	}
	fams := scrapeMetrics(t, m)
	if seq := metricValue(t, fams, "pgmoat_audit_chain_head_sequence", labels("hash", head[2])); fmt.Sprint(seq) != head[1] {
		t.Errorf("pgmoat_audit_chain_head_sequence{hash=%s} = %v, want verify's seq %s", head[2], seq, head[1])
	}
	cut := filepath.Join(t.TempDir(), "cut.jsonl")
	writeFile(t, cut, strings.Join(fileLines(t, m.AuditPath)[2:], "\n")+"\n")
	if out, code := runVerify(t, cut); code != 0 {
		t.Errorf("verify of the file without its first lines, no --from-genesis: exit %d\n%s", code, out)
	}
	if out, code := runVerify(t, "--from-genesis", cut); code != 1 || !strings.Contains(out, "BROKEN: "+cut+":1: the first line does not start a chain") {
		t.Errorf("verify --from-genesis of the file without its first lines: exit %d\n%s", code, out)
	}
}

// TestAuditFailClosed points the audit path at /dev/full (every write
// fails with ENOSPC, even for root) while pgmoat runs: destructive
// statements are refused and the failure is visible in metrics and in
// pgmoat's log, while SELECT keeps working; once the file is back, blocking
// and logging work normally and the hash chain is intact across the gap.
func TestAuditFailClosed(t *testing.T) {
	c := pgtest.Get(t)
	db := c.NewDatabase(t)
	c.Exec(t, db, "CREATE TABLE users(id int); INSERT INTO users VALUES (1), (2)")
	// ops-console's DROPs are let through but logged: only the audit line
	// vouches for them, so without the audit log they must be refused.
	m := moattest.Start(t, c, moattest.Options{Config: `policy:
  protect: [public.users]
  rules:
    - name: ops-console-logged
      match:
        applications: [ops-console]
      operations: [drop]
      action: log
`})
	ctx := context.Background()
	app := connect(t, m.SuperConnString(db, "application_name=app"))
	ops := connect(t, m.SuperConnString(db, "application_name=ops-console"))
	direct := c.Connect(t, db)
	usersExists := func() bool {
		var n int
		if err := direct.QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE tablename = 'users'").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 1
	}

	// The disk "fills": the audit path now leads to /dev/full.
	before := m.AuditPath + ".before"
	if err := os.Rename(m.AuditPath, before); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/dev/full", m.AuditPath); err != nil {
		t.Fatal(err)
	}
	reopenAudit(t, m)

	_, err := ops.Exec(ctx, "DROP TABLE users")
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "42501" || !strings.Contains(pe.Message, "audit log") {
		t.Errorf("logged DROP with the audit log down: err = %v, want 42501 mentioning the audit log", err)
	}
	if _, err := app.Exec(ctx, "DROP TABLE users"); stateOf(err) != "42501" {
		t.Errorf("blocked DROP with the audit log down: err = %v, want 42501", err)
	}
	if !usersExists() {
		t.Fatal("users was dropped while the audit log could not be written")
	}
	var n int
	if err := app.QueryRow(ctx, "SELECT count(*) FROM users").Scan(&n); err != nil || n != 2 {
		t.Errorf("SELECT on an open session with the audit log down: n=%d err=%v", n, err)
	}
	fresh := connect(t, m.SuperConnString(db, "application_name=fresh"))
	if err := fresh.QueryRow(ctx, "SELECT count(*) FROM users").Scan(&n); err != nil || n != 2 {
		t.Errorf("SELECT on a new session with the audit log down: n=%d err=%v", n, err)
	}
	if v := metricValue(t, scrapeMetrics(t, m), "pgmoat_audit_write_errors_total", nil); v < 1 {
		t.Errorf("pgmoat_audit_write_errors_total = %v with the audit log down", v)
	}
	if !strings.Contains(m.Log(), "audit log write failed") {
		t.Errorf("pgmoat's log does not report the audit write failure:\n%s", m.Log())
	}

	// The disk has room again: a regular file at the path, SIGUSR1.
	if err := os.Remove(m.AuditPath); err != nil {
		t.Fatal(err)
	}
	reopenAudit(t, m)
	if _, err := app.Exec(ctx, "DROP TABLE users"); stateOf(err) != "42501" || strings.Contains(err.Error(), "audit log") {
		t.Errorf("blocked DROP after recovery: err = %v, want a plain 42501 block", err)
	}
	if !usersExists() {
		t.Fatal("users dropped by a blocked statement")
	}
	if _, err := ops.Exec(ctx, "DROP TABLE users"); err != nil {
		t.Errorf("logged DROP after recovery: %v", err)
	}
	evs, err := audit.ReadFile(m.AuditPath)
	if err != nil {
		t.Fatal(err)
	}
	if d := findEvent(evs, audit.Decision, func(e audit.Event) bool { return e.Application == "app" }); d == nil || d.Decision != "block" {
		t.Errorf("no block decision written after recovery: %+v", evs)
	}
	if d := findEvent(evs, audit.Decision, func(e audit.Event) bool { return e.Application == "ops-console" }); d == nil || d.Decision != "log" {
		t.Errorf("no log decision written after recovery: %+v", evs)
	}
	if out, code := runVerify(t, before, m.AuditPath); code != 0 {
		t.Errorf("the chain across the failure does not verify: exit %d\n%s", code, out)
	}
}

// closeConn ends a session with Terminate, as a well-behaved client does.
func closeConn(t *testing.T, conn *pgx.Conn) {
	t.Helper()
	if err := conn.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func mustExec(t *testing.T, conn *pgx.Conn, sql string) {
	t.Helper()
	if _, err := conn.Exec(context.Background(), sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func waitPendingHold(t *testing.T, api *admin.Client) approvals.HoldInfo {
	t.Helper()
	var hold approvals.HoldInfo
	moattest.WaitFor(t, 20*time.Second, "a pending hold", func() bool {
		hs, err := api.ListHolds(context.Background(), approvals.StatusPending)
		if err != nil {
			t.Fatal(err)
		}
		if len(hs) == 1 {
			hold = hs[0]
		}
		return len(hs) == 1
	})
	return hold
}

// waitAuditEvents reads the audit file until cond holds for its events.
func waitAuditEvents(t *testing.T, path, what string, cond func([]audit.Event) bool) []audit.Event {
	t.Helper()
	var evs []audit.Event
	var err error
	moattest.WaitFor(t, 20*time.Second, what+" in the audit file", func() bool {
		evs, err = audit.ReadFile(path)
		return err == nil && cond(evs)
	})
	return evs
}

// findEvent returns the first event of kind that match accepts (any, when
// match is nil).
func findEvent(evs []audit.Event, kind audit.Kind, match func(audit.Event) bool) *audit.Event {
	for i := range evs {
		if evs[i].Kind == kind && (match == nil || match(evs[i])) {
			return &evs[i]
		}
	}
	return nil
}

func countEvents(evs []audit.Event, kind audit.Kind) int {
	n := 0
	for _, e := range evs {
		if e.Kind == kind {
			n++
		}
	}
	return n
}

func indexOf(evs []audit.Event, e *audit.Event) int {
	for i := range evs {
		if &evs[i] == e {
			return i
		}
	}
	return -1
}

func statementsOf(evs []audit.Event, session string) []string {
	var s []string
	for _, e := range evs {
		if e.SessionID == session && e.Statement != "" {
			s = append(s, string(e.Kind)+": "+e.Statement)
		}
	}
	return s
}

// assertAuditTimes checks the time field of every line as written: RFC
// 3339, UTC, exactly six fractional digits.
func assertAuditTimes(t *testing.T, path string) {
	t.Helper()
	for i, line := range fileLines(t, path) {
		var f struct {
			Time string `json:"time"`
		}
		if err := json.Unmarshal([]byte(line), &f); err != nil {
			t.Fatalf("line %d: %v", i+1, err)
		}
		tm, err := time.Parse(time.RFC3339Nano, f.Time)
		if err != nil || !strings.HasSuffix(f.Time, "Z") || tm.Format(audit.TimeFormat) != f.Time || len(f.Time) != len("2006-01-02T15:04:05.000000Z") {
			t.Errorf("line %d: time %q is not RFC 3339 UTC with microseconds", i+1, f.Time)
		}
		if d := time.Since(tm); d < 0 || d > 10*time.Minute {
			t.Errorf("line %d: time %s is not now", i+1, f.Time)
		}
	}
}

func fileLines(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return lines
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// runVerify runs `pgmoat audit verify files...` and returns its output and
// exit code.
func runVerify(t *testing.T, files ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(moattest.Binary(t), append([]string{"audit", "verify"}, files...)...)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &exit):
		return string(out), exit.ExitCode()
	}
	t.Fatalf("pgmoat audit verify: %v", err)
	return "", -1
}

// reopenAudit sends SIGUSR1 and waits until pgmoat has reopened the audit
// path.
func reopenAudit(t *testing.T, m *moattest.Moat) {
	t.Helper()
	before := strings.Count(m.Log(), "audit log reopened")
	m.Signal(syscall.SIGUSR1)
	moattest.WaitFor(t, 10*time.Second, "the audit log reopened", func() bool {
		return strings.Count(m.Log(), "audit log reopened") > before
	})
}
