package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/pgmoat/pgmoat/approvals"
	"github.com/pgmoat/pgmoat/internal/clients"
	"github.com/pgmoat/pgmoat/internal/moattest"
	"github.com/pgmoat/pgmoat/internal/pgtest"
)

// screenshotsEnv names a directory where TestConsoleInBrowser saves the
// console's screenshots (the README's docs/console-*.png).
const screenshotsEnv = "PGMOAT_SCREENSHOTS"

// browser starts headless Chromium (Debian's package, which
// scripts/ensure-deps.sh installs) and returns a context to drive it.
func browser(t *testing.T) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("chromium not found: run scripts/ensure-deps.sh (apt-get install chromium)")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // root in CI
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	// The first run starts the browser, for the life of ctx: no deadline.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return ctx
}

// do runs browser steps with a deadline, failing t on error.
func do(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("%s: %v\npage:\n%s", what, err, pageText(ctx))
	}
}

// pageText is what the page shows, for a failure message.
func pageText(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href + "\n" + document.body.innerText`))
	if err != nil {
		return err.Error()
	}
	return s
}

// get runs one browser action that returns a value.
func get[T any](t *testing.T, ctx context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return v
}

// The console in a real browser: a viewer on instance B sees a DROP TABLE
// held on instance A with its buttons disabled and is refused by the
// server; an approver signs in on B, approves it with a reason, and the
// psql client on A completes.
func TestConsoleInBrowser(t *testing.T) {
	c := pgtest.Get(t)
	a, b := sharedPair(t, c, controlDB(t), 15*time.Second)
	db := newDB(t, c)
	pg := direct(t, c, db)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd, err := clients.PsqlCommand(ctx, a.SuperConnString(db, deployer), "-v", "ON_ERROR_STOP=1", "-c", "DROP TABLE users")
	if err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	psqlDone := make(chan error, 1)
	go func() { psqlDone <- cmd.Wait() }()
	id := waitHolds(t, b, 1)[0].ID
	// A second hold, so the console shows more than one.
	other := startHeld(t, a, db, "TRUNCATE orders", false)
	other.holdNotice(t)
	card := fmt.Sprintf(`article[data-id="%s"]`, id)
	css := func(sel string) chromedp.CSS { return chromedp.CSS(sel) }

	br := browser(t)
	signIn := func(token string) {
		t.Helper()
		do(t, br, "sign in",
			chromedp.Navigate(b.AdminURL+"/ui/"),
			chromedp.WaitVisible(css("#token")),
			chromedp.SendKeys(css("#token"), token),
			chromedp.Click(css("#login-form button[type=submit]")),
			chromedp.WaitVisible(css(card)),
		)
	}

	// The viewer: sees the hold, with its buttons disabled.
	signIn(moattest.ViewerToken)
	statement := get(t, br, "read the viewer's card", chromedp.Text(css(card+" pre.sql")))
	disabled := get(t, br, "read the viewer's buttons", chromedp.Evaluate[bool](fmt.Sprintf(
		`document.querySelector('%s button.approve').disabled && document.querySelector('%s button.deny').disabled`, card, card)))
	if !strings.Contains(statement, "DROP TABLE users") || !disabled {
		t.Fatalf("viewer's card: statement %q, buttons disabled %v", statement, disabled)
	}
	// … and the server refuses the viewer's approval even when sent.
	status := get(t, br, "approve as the viewer", chromedp.Evaluate[int](fmt.Sprintf(`(async () => {
		const s = await (await fetch('/api/v1/session')).json();
		const r = await fetch('/api/v1/holds/%s/approve', {method: 'POST',
			headers: {'Content-Type': 'application/json', 'X-CSRF-Token': s.csrf}, body: JSON.stringify({reason: 'viewer'})});
		return r.status;
	})()`, id), chromedp.EvalAwaitPromise))
	if status != 403 {
		t.Fatalf("the viewer's approval answered %d, want 403", status)
	}
	do(t, br, "sign out", chromedp.Click(css("#signout")), chromedp.WaitVisible(css("#login")))

	// The approver.
	signIn(moattest.ApproverToken)
	if dir := os.Getenv(screenshotsEnv); dir != "" {
		screenshots(t, br, dir)
	}
	reason := "reviewed in the console, PR 77"
	do(t, br, "approve",
		chromedp.SendKeys(css("#reason-"+id), reason),
		chromedp.Click(css(card+" button.approve")),
		chromedp.WaitNotPresent(css(card)),
	)
	select {
	case err := <-psqlDone:
		if err != nil || !strings.Contains(out.String(), "DROP TABLE") {
			t.Fatalf("psql after the approval: %v\n%s%s", err, out.String(), errOut.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("psql had not completed 10s after the approval in the console")
	}
	if tableExists(t, pg, "public.users") {
		t.Fatal("users still exists after the approved DROP")
	}
	info := waitHoldStatus(t, a, id, approvals.StatusApproved)
	if len(info.Approvals) != 1 || info.Approvals[0].Approver != "alice" || info.Approvals[0].Reason != reason {
		t.Fatalf("approvals %+v", info.Approvals)
	}
	// The ended hold shows under Ended.
	do(t, br, "ended tab", chromedp.Click(chromedp.CSS("#tab-ended")))
	ended := get(t, br, "ended tab", chromedp.Text(chromedp.CSS("#ended")))
	if !strings.Contains(ended, "approved") || !strings.Contains(ended, "DROP TABLE users") {
		t.Errorf("ended tab: %q", ended)
	}
}

// screenshots saves the console at desktop and phone widths.
func screenshots(t *testing.T, br context.Context, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// A reason half typed on the other hold, as an approver would.
	do(t, br, "type a reason", chromedp.SendKeys(chromedp.CSS("#pending article:nth-child(2) input"), "cleanup ticket OPS-1432"),
		chromedp.Sleep(300*time.Millisecond))
	desktop := get(t, br, "desktop screenshot", chromedp.FullScreenshot(100))
	do(t, br, "phone size", chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile), chromedp.Sleep(300*time.Millisecond))
	phone := get(t, br, "phone screenshot", chromedp.CaptureScreenshot())
	do(t, br, "desktop size", chromedp.EmulateReset())
	for name, png := range map[string][]byte{"console-desktop.png": desktop, "console-phone.png": phone} {
		if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
