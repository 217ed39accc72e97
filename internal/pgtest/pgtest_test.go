package pgtest

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

// TestAuthMethods checks that each harness user is asked for its own
// method, logs in with its password over plain TCP and over verified TLS,
// and is refused with a wrong one.
func TestAuthMethods(t *testing.T) {
	c := Get(t)
	c.AuthUsers(t)
	for _, u := range AuthUsersList {
		t.Run(u.Name, func(t *testing.T) {
			m, err := c.AuthMethod(ctx(t), u.Name)
			if err != nil || m != u.Method {
				t.Fatalf("AuthMethod(%s) = %q, %v; want %q", u.Name, m, err, u.Method)
			}
			modes := [][]string{{"sslmode=disable"}}
			if c.CAFile != "" {
				modes = append(modes, []string{"sslmode=verify-full", "sslrootcert=" + c.CAFile})
			}
			for _, params := range modes {
				conn, err := pgx.Connect(ctx(t), c.ConnString(u.Name, u.Password, "postgres", params...))
				if err != nil {
					t.Fatalf("%v: connect: %v", params, err)
				}
				var user string
				var ssl bool
				err = conn.QueryRow(ctx(t), "SELECT current_user, coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false)").Scan(&user, &ssl)
				conn.Close(ctx(t))
				if err != nil {
					t.Fatalf("%v: query: %v", params, err)
				}
				if wantSSL := params[0] != "sslmode=disable"; user != u.Name || ssl != wantSSL {
					t.Errorf("%v: current_user=%s ssl=%v; want %s ssl=%v", params, user, ssl, u.Name, wantSSL)
				}
			}
			if u.Method == MethodTrust {
				return
			}
			_, err = pgconn.Connect(ctx(t), c.ConnString(u.Name, "wrong", "postgres", "sslmode=disable"))
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != "28P01" {
				t.Errorf("wrong password: got %v, want SQLSTATE 28P01", err)
			}
		})
	}
}

// TestMD5StoredAsMD5 guards the point of UserMD5: a client must be able to
// do real MD5 authentication, which needs an md5 hash on the server.
func TestMD5StoredAsMD5(t *testing.T) {
	c := Get(t)
	c.AuthUsers(t)
	conn := c.Connect(t, "postgres")
	var md5, scram string
	err := conn.QueryRow(ctx(t), `SELECT
		(SELECT left(rolpassword, 3) FROM pg_authid WHERE rolname = $1),
		(SELECT left(rolpassword, 14) FROM pg_authid WHERE rolname = $2)`, UserMD5, UserSCRAM).Scan(&md5, &scram)
	if err != nil {
		t.Fatal(err)
	}
	if md5 != "md5" || scram != "SCRAM-SHA-256$" {
		t.Errorf("stored hashes start %q and %q; want md5 and SCRAM-SHA-256$", md5, scram)
	}
}

// TestNewDatabase checks that each test gets its own database, usable by
// the per-method users, and that it is gone after the test.
func TestNewDatabase(t *testing.T) {
	c := Get(t)
	c.AuthUsers(t)
	var first string
	t.Run("first", func(t *testing.T) {
		first = c.NewDatabase(t)
		conn, err := pgx.Connect(ctx(t), c.ConnString(UserSCRAM, PasswordSCRAM, first, "sslmode=disable"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx(t))
		if _, err := conn.Exec(ctx(t), "CREATE TABLE only_here (id int); INSERT INTO only_here VALUES (1)"); err != nil {
			t.Fatalf("test user cannot create a table: %v", err)
		}
		second := c.NewDatabase(t)
		if second == first {
			t.Fatalf("NewDatabase returned %s twice", first)
		}
		conn2, err := pgx.Connect(ctx(t), c.ConnString(UserTrust, "", second, "sslmode=disable"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn2.Close(ctx(t))
		var n int
		if err := conn2.QueryRow(ctx(t), "SELECT count(*) FROM pg_class WHERE relname = 'only_here'").Scan(&n); err != nil || n != 0 {
			t.Errorf("table from %s visible in %s: n=%d err=%v", first, second, n, err)
		}
	})
	var exists bool
	if err := c.Connect(t, "postgres").QueryRow(ctx(t), "SELECT exists(SELECT FROM pg_database WHERE datname = $1)", first).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if exists {
		t.Errorf("database %s still exists after its test ended", first)
	}
}

// TestDropWhileConnected checks that cleanup does not fail when a test
// leaves a session open in its database.
func TestDropWhileConnected(t *testing.T) {
	c := Get(t)
	var conn *pgx.Conn
	t.Run("leaky", func(t *testing.T) {
		db := c.NewDatabase(t)
		var err error
		conn, err = pgx.Connect(ctx(t), c.SuperConnString(db, "sslmode=disable"))
		if err != nil {
			t.Fatal(err)
		}
	})
	conn.Close(context.Background())
}

// TestDblink checks what the evasion corpus's schema needs from contrib.
func TestDblink(t *testing.T) {
	c := Get(t)
	db := c.NewDatabase(t)
	c.Exec(t, db, "CREATE EXTENSION dblink")
	var v int
	err := c.Connect(t, db).QueryRow(ctx(t), "SELECT x FROM dblink($1, 'SELECT 42') AS t(x int)",
		strings.TrimPrefix(c.SuperConnString(db, "sslmode=disable"), "")).Scan(&v)
	if err != nil || v != 42 {
		t.Fatalf("dblink: %d, %v", v, err)
	}
}

// TestSettings checks the settings tests rely on.
func TestSettings(t *testing.T) {
	c := Get(t)
	if c.external {
		t.Skip("settings of a PGMOAT_TEST_DSN server are its own")
	}
	conn := c.Connect(t, "postgres")
	for name, want := range map[string]string{
		"ssl": "on", "max_connections": "300", "TimeZone": "UTC", "fsync": "off", "listen_addresses": "127.0.0.1",
	} {
		var got string
		if err := conn.QueryRow(ctx(t), "SELECT current_setting($1)", name).Scan(&got); err != nil || got != want {
			t.Errorf("%s = %q (%v); want %q", name, got, err, want)
		}
	}
}

// TestStartStop starts a second cluster next to Main's and checks that
// Stop takes the server down and removes its directory.
func TestStartStop(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a second cluster")
	}
	c, err := Start(Options{Settings: map[string]string{"application_name": "'pgtest_second'"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	if c.Port == Get(t).Port {
		t.Fatalf("second cluster on the same port %d", c.Port)
	}
	var app string
	conn := c.Connect(t, "postgres")
	if err := conn.QueryRow(ctx(t), "SELECT current_setting('application_name')").Scan(&app); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx(t))
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(c.Dir); !os.IsNotExist(err) {
		t.Errorf("%s still exists after Stop: %v", c.Dir, err)
	}
	if err := c.ping(ctx(t)); err == nil {
		t.Errorf("server still answers after Stop")
	}
}
