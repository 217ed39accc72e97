package proxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgmoat/pgmoat/config"

	"github.com/pgmoat/pgmoat/internal/clients"
	"github.com/pgmoat/pgmoat/internal/pgtest"
)

// clientTLSParams are pgx connection parameters for a client that talks
// TLS to pgmoat (verifying its certificate) or not.
func clientTLSParams(c *pgtest.Cluster, on bool) []string {
	if on {
		return []string{"sslmode=verify-full", "sslrootcert=" + c.CertCAFile}
	}
	return []string{"sslmode=disable"}
}

// TestAuthMethods logs in as every harness user (trust, cleartext password,
// md5, SCRAM-SHA-256) through pgmoat, with TLS between client and pgmoat
// on and off, and TLS between pgmoat and PostgreSQL off (sslmode=disable)
// and verified (sslmode=verify-full against the harness CA).
func TestAuthMethods(t *testing.T) {
	c := pgtest.Get(t)
	c.AuthUsers(t)
	db := c.NewDatabase(t)
	for _, upstream := range []string{"disable", "verify-full"} {
		for _, clientTLS := range []bool{false, true} {
			opts := []proxyOption{withUpstream(c, upstream)}
			if clientTLS {
				opts = append(opts, withClientTLS(c.ServerCertFile, c.ServerKeyFile))
			}
			p := startProxy(t, Options{}, opts...)
			for _, u := range pgtest.AuthUsersList {
				name := fmt.Sprintf("%s/client_tls=%v/upstream=%s", u.Method, clientTLS, upstream)
				t.Run(name, func(t *testing.T) {
					ctx := ctxTimeout(t, 30*time.Second)
					conn := connect(t, p.connString(u.Name, u.Password, db, clientTLSParams(c, clientTLS)...))
					var user string
					var upstreamSSL bool
					err := conn.QueryRow(ctx, "SELECT current_user, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&user, &upstreamSSL)
					if err != nil {
						t.Fatal(err)
					}
					if user != u.Name {
						t.Errorf("logged in as %q", user)
					}
					if upstreamSSL != (upstream != "disable") {
						t.Errorf("upstream TLS = %v with sslmode=%s", upstreamSSL, upstream)
					}
					if _, isTLS := conn.PgConn().Conn().(*tls.Conn); isTLS != clientTLS {
						t.Errorf("client TLS = %v", isTLS)
					}
					if u.Password == "" {
						return
					}
					// A wrong password: the server's own error, relayed.
					_, err = pgx.Connect(ctx, p.connString(u.Name, "wrong", db, clientTLSParams(c, clientTLS)...))
					if pgCode(err) != "28P01" {
						t.Errorf("wrong password: got %v, want SQLSTATE 28P01", err)
					}
				})
			}
		}
	}
}

// TestServerErrorsRelayed checks that the server's own FATAL errors during
// startup reach the client as they are.
func TestServerErrorsRelayed(t *testing.T) {
	c := pgtest.Get(t)
	p := startProxy(t, Options{})
	ctx := ctxTimeout(t, 30*time.Second)
	_, err := pgx.Connect(ctx, p.connString(c.Superuser, c.SuperPassword, "no_such_database_here"))
	if pgCode(err) != "3D000" || !strings.Contains(err.Error(), `database "no_such_database_here" does not exist`) {
		t.Fatalf("got %v", err)
	}
	_, err = pgx.Connect(ctx, p.connString("no_such_role_here", "x", "postgres"))
	if pgCode(err) != "28P01" && pgCode(err) != "28000" {
		t.Fatalf("unknown role: got %v", err)
	}
	eventually(t, 10*time.Second, "auth_failed logged", func() bool {
		return strings.Count(p.logs.String(), "reason=auth_failed") == 2
	})
}

// TestChannelBinding covers SCRAM-SHA-256-PLUS across pgmoat's TLS
// termination.
func TestChannelBinding(t *testing.T) {
	c := pgtest.Get(t)
	c.AuthUsers(t)
	db := c.NewDatabase(t)
	ctx := ctxTimeout(t, time.Minute)
	scram := func(p *testProxy, params ...string) string {
		return p.connString(pgtest.UserSCRAM, pgtest.PasswordSCRAM, db, params...)
	}

	t.Run("pgmoat presents the upstream's own certificate", func(t *testing.T) {
		// tls-server-end-point binds to the certificate's hash, which
		// is then the same on both legs: channel binding passes.
		p := startProxy(t, Options{}, withUpstream(c, "verify-full"), withClientTLS(c.ServerCertFile, c.ServerKeyFile))
		conn := connect(t, scram(p, "sslmode=verify-full", "sslrootcert="+c.CertCAFile, "channel_binding=require"))
		if err := conn.Ping(ctx); err != nil {
			t.Fatal(err)
		}
	})

	p := startProxy(t, Options{}, withUpstream(c, "verify-full"), withClientTLS(selfSignedCert(t)))
	t.Run("different certificate, channel binding required", func(t *testing.T) {
		_, err := pgx.Connect(ctx, scram(p, "sslmode=require", "channel_binding=require"))
		if err == nil || !strings.Contains(err.Error(), "channel binding required") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("different certificate, channel binding preferred", func(t *testing.T) {
		// The client sees no -PLUS mechanism but, being on TLS, says it
		// supports channel binding; the upstream would refuse that as a
		// downgrade, so pgmoat says why instead.
		_, err := pgx.Connect(ctx, scram(p, "sslmode=require"))
		if pgCode(err) != "28000" || !strings.Contains(err.Error(), "channel binding cannot pass through") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("different certificate, channel binding disabled", func(t *testing.T) {
		conn := connect(t, scram(p, "sslmode=require", "channel_binding=disable"))
		if err := conn.Ping(ctx); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("psql requiring channel binding fails, not hangs", func(t *testing.T) {
		plainUpstream := startProxy(t, Options{}, withClientTLS(selfSignedCert(t)))
		for _, proxy := range []*testProxy{p, plainUpstream} {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd, err := clients.PsqlCommand(ctx, scram(proxy, "sslmode=require", "channel_binding=require"), "-c", "SELECT 1")
			if err != nil {
				t.Fatal(err)
			}
			out, err := cmd.CombinedOutput()
			if ctx.Err() != nil {
				t.Fatal("psql hung")
			}
			if err == nil || !strings.Contains(string(out), "channel binding is required") {
				t.Errorf("psql: %v\n%s", err, out)
			}
		}
	})
}

// TestUpstreamSSLModes connects through pgmoat with every upstream
// sslmode and checks, on the server, whether the session is encrypted; a
// cancel must reach the server in every mode too.
func TestUpstreamSSLModes(t *testing.T) {
	c := pgtest.Get(t)
	db := c.NewDatabase(t)
	ctx := ctxTimeout(t, time.Minute)
	for mode, wantTLS := range map[string]bool{
		"disable": false, "allow": false, "prefer": true,
		"require": true, "verify-ca": true, "verify-full": true,
	} {
		t.Run(mode, func(t *testing.T) {
			p := startProxy(t, Options{}, withUpstream(c, mode))
			conn := p.superConn(t, db)
			var ssl bool
			if err := conn.QueryRow(ctx, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl); err != nil {
				t.Fatal(err)
			}
			if ssl != wantTLS {
				t.Errorf("upstream TLS = %v, want %v", ssl, wantTLS)
			}
			done := make(chan error, 1)
			go func() {
				_, err := conn.PgConn().Exec(context.Background(), "SELECT pg_sleep(30)").ReadAll()
				done <- err
			}()
			waitActive(t, db, conn.PgConn().PID())
			if err := conn.PgConn().CancelRequest(ctx); err != nil {
				t.Fatal(err)
			}
			if err := <-done; pgCode(err) != "57014" {
				t.Errorf("cancel: got %v", err)
			}
		})
	}
	t.Run("verify-full by host name", func(t *testing.T) {
		p := startProxy(t, Options{}, func(cfg *config.Config) {
			cfg.Upstream = fmt.Sprintf("postgres://localhost:%d?sslmode=verify-full&sslrootcert=%s", c.Port, url.QueryEscape(c.CAFile))
		})
		if err := p.superConn(t, db).Ping(ctx); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("verification failures", func(t *testing.T) {
		otherCA, _ := selfSignedCert(t)
		for _, mode := range []string{"verify-ca", "verify-full"} {
			p := startProxy(t, Options{}, func(cfg *config.Config) {
				cfg.Upstream = fmt.Sprintf("postgres://%s?sslmode=%s&sslrootcert=%s", c.Addr(), mode, url.QueryEscape(otherCA))
			})
			_, err := pgx.Connect(ctx, p.connString(c.Superuser, c.SuperPassword, db))
			if pgCode(err) != "08006" || !strings.Contains(err.Error(), "certificate") {
				t.Errorf("%s with the wrong CA: got %v", mode, err)
			}
		}
		// require with a root certificate verifies the chain, as libpq does.
		p := startProxy(t, Options{}, func(cfg *config.Config) {
			cfg.Upstream = fmt.Sprintf("postgres://%s?sslmode=require&sslrootcert=%s", c.Addr(), url.QueryEscape(otherCA))
		})
		if _, err := pgx.Connect(ctx, p.connString(c.Superuser, c.SuperPassword, db)); pgCode(err) != "08006" {
			t.Errorf("require with the wrong root certificate: got %v", err)
		}
	})
}

// TestNegotiateProtocolVersion asks for protocol 3.2 and an unknown
// protocol option: the server's NegotiateProtocolVersion (PostgreSQL 15
// speaks 3.0) reaches the client and the session proceeds.
func TestNegotiateProtocolVersion(t *testing.T) {
	c := pgtest.Get(t)
	c.AuthUsers(t)
	db := c.NewDatabase(t)
	p := startProxy(t, Options{})
	conn := dialProxy(t, p)
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	payload := []byte("user\x00" + pgtest.UserTrust + "\x00database\x00" + db + "\x00_pq_.pgmoat_test\x00on\x00\x00")
	conn.Write(startupPacket(pgproto3.ProtocolVersion32, payload))
	fe := pgproto3.NewFrontend(conn, conn)
	var npv *pgproto3.NegotiateProtocolVersion
	for {
		msg, err := fe.Receive()
		if err != nil {
			t.Fatal(err)
		}
		switch m := msg.(type) {
		case *pgproto3.NegotiateProtocolVersion:
			npv = &pgproto3.NegotiateProtocolVersion{NewestMinorProtocol: m.NewestMinorProtocol, UnrecognizedOptions: append([]string(nil), m.UnrecognizedOptions...)}
		case *pgproto3.ErrorResponse:
			t.Fatalf("%s %s", m.Code, m.Message)
		}
		if _, ok := msg.(*pgproto3.ReadyForQuery); ok {
			break
		}
	}
	if npv == nil {
		t.Fatal("no NegotiateProtocolVersion relayed")
	}
	if len(npv.UnrecognizedOptions) != 1 || npv.UnrecognizedOptions[0] != "_pq_.pgmoat_test" {
		t.Errorf("unrecognized options %q", npv.UnrecognizedOptions)
	}
}
