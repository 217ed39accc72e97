package proxy

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgmoat/pgmoat/config"
	"github.com/pgmoat/pgmoat/internal/pgtest"
)

// selfSignedCert writes a certificate for 127.0.0.1 that is not the
// upstream server's, and its key, into a temporary directory.
func selfSignedCert(t testing.TB) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "pgmoat test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	return certFile, keyFile
}

func startupPacket(code uint32, payload []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(8+len(payload)))
	b = binary.BigEndian.AppendUint32(b, code)
	return append(b, payload...)
}

func startupMessage(params ...string) []byte {
	var payload []byte
	for _, p := range params {
		payload = append(append(payload, p...), 0)
	}
	return startupPacket(pgproto3.ProtocolVersion30, append(payload, 0))
}

// readByte reads the one-byte answer to an SSLRequest or GSSENCRequest.
func readByte(t testing.TB, c net.Conn) byte {
	t.Helper()
	var b [1]byte
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, b[:]); err != nil {
		t.Fatal(err)
	}
	return b[0]
}

// expectError reads messages until an ErrorResponse and returns it.
func expectError(t testing.TB, c net.Conn) *pgproto3.ErrorResponse {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	fe := pgproto3.NewFrontend(c, c)
	for {
		msg, err := fe.Receive()
		if err != nil {
			t.Fatalf("want an ErrorResponse, got %v", err)
		}
		if e, ok := msg.(*pgproto3.ErrorResponse); ok {
			return e
		}
	}
}

// expectReady logs in as the trust user over c and waits for ReadyForQuery.
func expectReady(t testing.TB, c net.Conn, db string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Write(startupMessage("user", pgtest.UserTrust, "database", db)); err != nil {
		t.Fatal(err)
	}
	fe := pgproto3.NewFrontend(c, c)
	for {
		msg, err := fe.Receive()
		if err != nil {
			t.Fatal(err)
		}
		switch m := msg.(type) {
		case *pgproto3.ErrorResponse:
			t.Fatalf("%s %s", m.Code, m.Message)
		case *pgproto3.ReadyForQuery:
			return
		}
	}
}

func dialProxy(t testing.TB, p *testProxy) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", p.addr(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestClientTLS(t *testing.T) {
	c := pgtest.Get(t)
	c.AuthUsers(t)
	db := c.NewDatabase(t)
	ctx := ctxTimeout(t, time.Minute)

	t.Run("terminated with the configured certificate", func(t *testing.T) {
		p := startProxy(t, Options{}, withClientTLS(c.ServerCertFile, c.ServerKeyFile))
		conn := connect(t, p.connString(pgtest.UserTrust, "", db, "sslmode=verify-full", "sslrootcert="+c.CertCAFile))
		if _, ok := conn.PgConn().Conn().(*tls.Conn); !ok {
			t.Errorf("client connection is %T, not TLS", conn.PgConn().Conn())
		}
		if err := conn.Ping(ctx); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("direct TLS without SSLRequest", func(t *testing.T) {
		// libpq 17's sslnegotiation=direct starts TLS at once, with
		// ALPN "postgresql".
		p := startProxy(t, Options{}, withClientTLS(c.ServerCertFile, c.ServerKeyFile))
		conn := connect(t, p.connString(pgtest.UserTrust, "", db, "sslmode=verify-full", "sslrootcert="+c.CertCAFile, "sslnegotiation=direct"))
		if _, ok := conn.PgConn().Conn().(*tls.Conn); !ok {
			t.Errorf("client connection is %T, not TLS", conn.PgConn().Conn())
		}
		if err := conn.Ping(ctx); err != nil {
			t.Fatal(err)
		}
		// Without ALPN, direct TLS is refused as PostgreSQL refuses it.
		tc := tls.Client(dialProxy(t, p), &tls.Config{InsecureSkipVerify: true})
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		if e := expectError(t, tc); e.Code != "08P01" || !strings.Contains(e.Message, "ALPN") {
			t.Errorf("got %s %s", e.Code, e.Message)
		}
	})
	t.Run("refused without a certificate", func(t *testing.T) {
		p := startProxy(t, Options{})
		_, err := pgx.Connect(ctx, p.connString(pgtest.UserTrust, "", db, "sslmode=require"))
		if err == nil || !strings.Contains(err.Error(), "refused TLS") {
			t.Fatalf("sslmode=require without tls.cert: got %v", err)
		}
		conn := connect(t, p.connString(pgtest.UserTrust, "", db, "sslmode=prefer"))
		if _, ok := conn.PgConn().Conn().(*tls.Conn); ok {
			t.Error("TLS without a certificate")
		}
	})
}

// TestEncryptionNegotiation speaks the startup phase by hand: libpq with
// gssencmode=prefer sends GSSENCRequest, and on 'N' goes on with an
// SSLRequest on the same connection.
func TestEncryptionNegotiation(t *testing.T) {
	c := pgtest.Get(t)
	c.AuthUsers(t)
	db := c.NewDatabase(t)
	withTLS := startProxy(t, Options{}, withClientTLS(c.ServerCertFile, c.ServerKeyFile))
	plain := startProxy(t, Options{})

	t.Run("GSSENC then SSL", func(t *testing.T) {
		conn := dialProxy(t, withTLS)
		conn.Write(startupPacket(codeGSSENCRequest, nil))
		if b := readByte(t, conn); b != 'N' {
			t.Fatalf("GSSENCRequest answered %q", b)
		}
		conn.Write(startupPacket(codeSSLRequest, nil))
		if b := readByte(t, conn); b != 'S' {
			t.Fatalf("SSLRequest answered %q", b)
		}
		tc := tls.Client(conn, &tls.Config{InsecureSkipVerify: true})
		expectReady(t, tc, db)
		if !tc.ConnectionState().HandshakeComplete {
			t.Error("no TLS")
		}
	})
	t.Run("SSL refused then GSSENC then plain", func(t *testing.T) {
		conn := dialProxy(t, plain)
		conn.Write(startupPacket(codeSSLRequest, nil))
		if b := readByte(t, conn); b != 'N' {
			t.Fatalf("SSLRequest answered %q", b)
		}
		conn.Write(startupPacket(codeGSSENCRequest, nil))
		if b := readByte(t, conn); b != 'N' {
			t.Fatalf("GSSENCRequest answered %q", b)
		}
		expectReady(t, conn, db)
	})
	t.Run("second SSLRequest", func(t *testing.T) {
		conn := dialProxy(t, plain)
		conn.Write(startupPacket(codeSSLRequest, nil))
		readByte(t, conn)
		conn.Write(startupPacket(codeSSLRequest, nil))
		if e := expectError(t, conn); e.Code != "08P01" || e.Severity != "FATAL" {
			t.Errorf("got %s %s %s", e.Severity, e.Code, e.Message)
		}
	})
	t.Run("plaintext injected after SSLRequest", func(t *testing.T) {
		conn := dialProxy(t, withTLS)
		conn.Write(append(startupPacket(codeSSLRequest, nil), startupMessage("user", pgtest.UserTrust)...))
		e := expectError(t, conn)
		if e.Code != "08P01" || !strings.Contains(e.Message, "unencrypted data after SSL request") {
			t.Errorf("got %s %s", e.Code, e.Message)
		}
	})
}

func TestMalformedStartup(t *testing.T) {
	p := startProxy(t, Options{})
	tests := []struct {
		name    string
		packet  []byte
		message string
	}{
		{"protocol 2.0", startupPacket(2<<16, []byte("user\x00x\x00\x00")), "unsupported frontend protocol 2.0"},
		{"protocol 3.1", startupPacket(3<<16|1, []byte("user\x00x\x00\x00")), "unsupported frontend protocol 3.1"},
		{"protocol 4.0", startupPacket(4<<16, []byte("user\x00x\x00\x00")), "unsupported frontend protocol 4.0"},
		{"length below minimum", []byte{0, 0, 0, 4, 0, 3, 0, 0}, "invalid length of startup packet"},
		{"length above maximum", binary.BigEndian.AppendUint32(nil, 1<<20), "invalid length of startup packet"},
		{"no terminator", startupPacket(pgproto3.ProtocolVersion30, []byte("user\x00x")), "invalid startup packet layout"},
		{"odd parameter list", startupPacket(pgproto3.ProtocolVersion30, []byte("user\x00x\x00database\x00")), "invalid startup packet layout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn := dialProxy(t, p)
			conn.Write(tt.packet)
			e := expectError(t, conn)
			if e.Severity != "FATAL" || e.Code != "08P01" || !strings.Contains(e.Message, tt.message) {
				t.Errorf("got %s %s %q, want FATAL 08P01 %q", e.Severity, e.Code, e.Message, tt.message)
			}
		})
	}
	if got := p.counter(p.met.ClientConnectionsRejected.WithLabelValues("protocol_error")); got != float64(len(tests)) {
		t.Errorf("rejected{protocol_error} = %v, want %d", got, len(tests))
	}
}

// TestSlowStartupDropped checks that clients stalling anywhere before the
// end of authentication are dropped after limits.startup_timeout, and that
// nothing is left behind.
func TestSlowStartupDropped(t *testing.T) {
	c := pgtest.Get(t)
	c.AuthUsers(t)
	db := c.NewDatabase(t)
	p := startProxy(t, Options{}, withClientTLS(c.ServerCertFile, c.ServerKeyFile),
		withLimits(func(l *config.Limits) { l.StartupTimeout = config.Duration(500 * time.Millisecond) }))
	base := runtime.NumGoroutine()

	stalls := map[string]func(net.Conn) net.Conn{
		"silent": func(c net.Conn) net.Conn { return c },
		"half a startup packet": func(c net.Conn) net.Conn {
			c.Write(startupMessage("user", pgtest.UserTrust)[:10])
			return c
		},
		"after the TLS handshake": func(c net.Conn) net.Conn {
			c.Write(startupPacket(codeSSLRequest, nil))
			readByte(t, c)
			tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true})
			if err := tc.Handshake(); err != nil {
				t.Fatal(err)
			}
			return tc
		},
		"never answering the password request": func(c net.Conn) net.Conn {
			c.Write(startupMessage("user", pgtest.UserClear, "database", db))
			fe := pgproto3.NewFrontend(c, c)
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if msg, err := fe.Receive(); err != nil {
				t.Fatal(err)
			} else if _, ok := msg.(*pgproto3.AuthenticationCleartextPassword); !ok {
				t.Fatalf("got %T", msg)
			}
			return c
		},
	}
	for name, stall := range stalls {
		t.Run(name, func(t *testing.T) {
			conn := stall(dialProxy(t, p))
			// pgmoat closes the connection; without the timeout this
			// read would hit its own 20 s deadline instead.
			conn.SetReadDeadline(time.Now().Add(20 * time.Second))
			_, err := io.Copy(io.Discard, conn)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("pgmoat did not drop the stalled client")
			}
		})
	}
	if got := p.counter(p.met.ClientConnectionsRejected.WithLabelValues("startup_timeout")); got != float64(len(stalls)) {
		t.Errorf("rejected{startup_timeout} = %v, want %d", got, len(stalls))
	}
	eventually(t, 10*time.Second, "goroutines to return to their number before the stalls", func() bool {
		return runtime.NumGoroutine() <= base
	})
	// The proxy still serves.
	conn := connect(t, p.connString(pgtest.UserTrust, "", db))
	if err := conn.Ping(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
}

func TestMaxConnections(t *testing.T) {
	c := pgtest.Get(t)
	db := c.NewDatabase(t)
	p := startProxy(t, Options{}, withLimits(func(l *config.Limits) { l.MaxConnections = 2 }))
	ctx := ctxTimeout(t, time.Minute)
	first := p.superConn(t, db)
	p.superConn(t, db)

	_, err := pgx.Connect(ctx, p.connString(c.Superuser, c.SuperPassword, db))
	if pgCode(err) != "53300" {
		t.Fatalf("third client: got %v, want SQLSTATE 53300", err)
	}
	if got := p.counter(p.met.ClientConnectionsRejected.WithLabelValues("max_connections")); got != 1 {
		t.Errorf("rejected{max_connections} = %v", got)
	}
	if got := p.counter(p.met.ClientConnectionsOpen); got != 2 {
		t.Errorf("open = %v", got)
	}

	// A CancelRequest is not a session: it works at the limit.
	done := make(chan error, 1)
	go func() {
		_, err := first.PgConn().Exec(context.Background(), "SELECT pg_sleep(30)").ReadAll()
		done <- err
	}()
	waitActive(t, db, first.PgConn().PID())
	if err := first.PgConn().CancelRequest(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; pgCode(err) != "57014" {
		t.Fatalf("cancel at the limit: %v", err)
	}

	first.Close(ctx)
	eventually(t, 10*time.Second, "a free slot", func() bool {
		conn, err := pgx.Connect(ctx, p.connString(c.Superuser, c.SuperPassword, db))
		if err != nil {
			return false
		}
		conn.Close(ctx)
		return true
	})
}
