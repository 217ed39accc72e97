package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgmoat/pgmoat/internal/clients"
	"github.com/pgmoat/pgmoat/internal/pgtest"
)

// psqlScript exercises what a migration or an operator's script does:
// DDL, a transaction, COPY from the script itself, an error without
// ON_ERROR_STOP, meta-commands and formatted output.
const psqlScript = `
\set VERBOSITY terse
CREATE TABLE accounts (id int PRIMARY KEY, owner text NOT NULL, balance numeric(12,2), opened date);
BEGIN;
INSERT INTO accounts VALUES (1, 'ada', 100.50, '2020-01-01'), (2, 'grace', 0, '2021-06-30');
UPDATE accounts SET balance = balance + 10 WHERE id = 2;
COMMIT;
COPY accounts FROM STDIN;
3	linus	-5.25	2022-02-02
4	ünïcode ✓	\N	\N
\.
SELECT * FROM accounts ORDER BY id;
SELECT 1/0;
INSERT INTO accounts VALUES (1, 'duplicate', 0, NULL);
\d accounts
\echo done with :ROW_COUNT
SELECT owner, balance FROM accounts WHERE balance > $$0$$ ORDER BY owner LIMIT 1 \gset first_
\echo first owner :first_owner
SELECT count(*) AS n, sum(balance) FROM accounts; SELECT 'multi' AS m;
\x on
SELECT id, owner FROM accounts WHERE id = 4;
`

func TestPsqlScript(t *testing.T) {
	c := pgtest.Get(t)
	p := startProxy(t, Options{})
	run := func(connString string) (string, string) {
		out, errOut, code := clients.Psql(t, connString, psqlScript)
		if code != 0 {
			t.Fatalf("psql exited %d: %s", code, errOut)
		}
		return out, errOut
	}
	directDB, proxyDB := c.NewDatabase(t), c.NewDatabase(t)
	wantOut, wantErr := run(c.SuperConnString(directDB, "sslmode=disable"))
	gotOut, gotErr := run(p.connString(c.Superuser, c.SuperPassword, proxyDB))
	if gotOut != wantOut {
		t.Errorf("stdout through pgmoat differs from direct:\n--- direct\n%s\n--- pgmoat\n%s", wantOut, gotOut)
	}
	if gotErr != wantErr {
		t.Errorf("stderr through pgmoat differs from direct:\n--- direct\n%s\n--- pgmoat\n%s", wantErr, gotErr)
	}
	for _, want := range []string{"ünïcode ✓", "division by zero", "duplicate key", "first owner ada", "multi"} {
		if !strings.Contains(gotOut+gotErr, want) {
			t.Errorf("output lacks %q:\n%s\n%s", want, gotOut, gotErr)
		}
	}
}

// TestPsqlCtrlC interrupts psql in the middle of a long query: psql sends
// a CancelRequest on a new connection, which pgmoat routes to the right
// server backend.
func TestPsqlCtrlC(t *testing.T) {
	c := pgtest.Get(t)
	db := c.NewDatabase(t)
	p := startProxy(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd, err := clients.PsqlCommand(ctx, p.connString(c.Superuser, c.SuperPassword, db), "-c", "SELECT pg_sleep(30)")
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	direct := directConn(t, db)
	eventually(t, 20*time.Second, "psql's query to run", func() bool {
		var n int
		err := direct.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = $1 AND state = 'active' AND query = 'SELECT pg_sleep(30)'`, db).Scan(&n)
		return err == nil && n == 1
	})
	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	if ctx.Err() != nil {
		t.Fatal("psql did not end")
	}
	if err == nil {
		t.Error("psql succeeded despite the cancel")
	}
	if !strings.Contains(stderr.String(), "canceling statement due to user request") {
		t.Errorf("psql stderr: %s", stderr.String())
	}
	if d := time.Since(start); d > 25*time.Second {
		t.Errorf("psql took %v after Ctrl-C: the sleep ran to its end", d)
	}
}

// TestNodePostgres runs the node-postgres scenario directly and through
// pgmoat for every authentication method, with TLS between the client and
// pgmoat on and off (and verified TLS to the server), and compares the JSON.
func TestNodePostgres(t *testing.T) {
	c := pgtest.Get(t)
	c.AuthUsers(t)
	if err := clients.EnsureNode(); err != nil {
		t.Fatal(err)
	}
	db := c.NewDatabase(t)
	p := startProxy(t, Options{}, withUpstream(c, "verify-full"), withClientTLS(c.ServerCertFile, c.ServerKeyFile))
	for _, u := range pgtest.AuthUsersList {
		for _, tls := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/tls=%v", u.Method, tls), func(t *testing.T) {
				direct := clients.NodeConfigFor(c, u.Name, u.Password, db, tls)
				viaProxy := direct
				viaProxy.Host, viaProxy.Port = p.host, p.port
				if tls {
					viaProxy.SSL = &clients.NodeSSL{RejectUnauthorized: true, CA: c.CertCAFile}
				}
				want := clients.RunNode(t, direct)
				got := clients.RunNode(t, viaProxy)
				if !jsonEqual(t, got, want) {
					t.Errorf("node-postgres through pgmoat differs from direct:\n--- direct\n%s\n--- pgmoat\n%s", want, got)
				}
			})
		}
	}
}

func jsonEqual(t testing.TB, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, a)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, b)
	}
	xs, _ := json.Marshal(x)
	ys, _ := json.Marshal(y)
	return bytes.Equal(xs, ys)
}
