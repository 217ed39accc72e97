package clients

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pgmoat/pgmoat/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// TestNodeDirect runs the node-postgres scenario straight against
// PostgreSQL for every authentication method, with and without verified
// TLS: the baseline the proxy's tests compare against.
func TestNodeDirect(t *testing.T) {
	c := pgtest.Get(t)
	c.AuthUsers(t)
	db := c.NewDatabase(t)
	var baseline map[string]any
	for _, u := range pgtest.AuthUsersList {
		for _, tls := range []bool{false, true} {
			if tls && c.CAFile == "" {
				continue
			}
			name := u.Name + map[bool]string{false: "/plain", true: "/tls"}[tls]
			t.Run(name, func(t *testing.T) {
				out := RunNode(t, NodeConfigFor(c, u.Name, u.Password, db, tls))
				var doc map[string]any
				if err := json.Unmarshal(out, &doc); err != nil {
					t.Fatalf("output is not JSON: %v\n%s", err, out)
				}
				if doc["tls"] != tls {
					t.Errorf("tls = %v, want %v", doc["tls"], tls)
				}
				if got := path(doc, "session", "rows", 0, "user"); got != u.Name {
					t.Errorf("current_user = %v, want %s", got, u.Name)
				}
				checks := map[string][2]any{
					"division by zero":   {path(doc, "error", "code"), "22012"},
					"bad integer":        {path(doc, "errorInTransaction", "code"), "22P02"},
					"aborted":            {path(doc, "abortedTransaction", "code"), "25P02"},
					"rolled back":        {path(doc, "transaction", "afterRollback"), 0.0},
					"committed":          {path(doc, "transaction", "afterCommit"), 1.0},
					"second prepared":    {path(doc, "prepared", 1, "rows", 0, "doubled"), 100.0},
					"parameterized":      {path(doc, "parameterized", "rows", 0, "sum"), 42.0},
					"bytea":              {path(doc, "typesSimple", "rows", 0, "bin", "bytea_hex"), "00ff10"},
					"int8 exact":         {path(doc, "typesExtended", "rows", 0, "big"), "9007199254740993"},
					"notice":             {path(doc, "notices", 0, "message"), "pgmoat notice 42"},
					"notification":       {path(doc, "notification", "payload"), "hello from node"},
					"from other session": {path(doc, "notification", "fromNotifier"), true},
				}
				for what, c := range checks {
					if c[0] != c[1] {
						t.Errorf("%s: got %v, want %v", what, c[0], c[1])
					}
				}
				if !reflect.DeepEqual(doc["typesSimple"], doc["typesExtended"]) {
					t.Errorf("simple and extended protocol disagree on the same rows")
				}
				// Apart from who and how, every run must say the same.
				delete(doc, "session")
				delete(doc, "tls")
				if baseline == nil {
					baseline = doc
				} else if !reflect.DeepEqual(doc, baseline) {
					t.Errorf("results differ from the first run's")
				}
			})
		}
	}
}

// TestNodeReportsServerErrors checks that a failed login comes back as a
// NodeError carrying the SQLSTATE, which the proxy's negative tests rely on.
func TestNodeReportsServerErrors(t *testing.T) {
	c := pgtest.Get(t)
	c.AuthUsers(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := NodeConfigFor(c, pgtest.UserSCRAM, "wrong", "postgres", false)
	cfg.Scenario = "connect"
	_, _, err := RunNodeContext(ctx, cfg)
	var ne *NodeError
	if !errors.As(err, &ne) || ne.Code != "28P01" || ne.ExitCode != 1 {
		t.Fatalf("wrong password: got %v, want a NodeError with SQLSTATE 28P01", err)
	}
}

// TestPsqlDirect runs a psql script for every authentication method, with
// and without TLS, and checks output, error text and exit status.
func TestPsqlDirect(t *testing.T) {
	c := pgtest.Get(t)
	c.AuthUsers(t)
	db := c.NewDatabase(t)
	script := `\set ON_ERROR_STOP 1
SELECT current_user, (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid());
CREATE TEMP TABLE t AS SELECT g AS id FROM generate_series(1, 3) g;
SELECT string_agg(id::text, ',' ORDER BY id) FROM t;
SELECT 1/0;
SELECT 'not reached';
`
	for _, u := range pgtest.AuthUsersList {
		for _, mode := range []string{"disable", "verify-full"} {
			t.Run(u.Name+"/"+mode, func(t *testing.T) {
				params := []string{"sslmode=" + mode}
				if mode != "disable" {
					if c.CAFile == "" {
						t.Skip("server TLS CA unknown")
					}
					params = append(params, "sslrootcert="+c.CAFile)
				}
				stdout, stderr, code := Psql(t, c.ConnString(u.Name, u.Password, db, params...), script, "-A", "-t", "-q")
				wantSSL := map[string]string{"disable": "f", "verify-full": "t"}[mode]
				if want := u.Name + "|" + wantSSL + "\n1,2,3\n"; stdout != want {
					t.Errorf("stdout = %q, want %q", stdout, want)
				}
				if code != 3 || !strings.Contains(stderr, "ERROR:  division by zero") {
					t.Errorf("exit %d, stderr %q; want 3 and the division error", code, stderr)
				}
			})
		}
	}
}

// path walks a decoded JSON document; nil if any step is missing.
func path(v any, steps ...any) any {
	for _, s := range steps {
		switch k := s.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			a, ok := v.([]any)
			if !ok || k >= len(a) {
				return nil
			}
			v = a[k]
		}
	}
	return v
}
