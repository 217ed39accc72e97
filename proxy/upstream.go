package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgmoat/pgmoat/config"
)

// upstreamDialer connects to the upstream PostgreSQL server and negotiates
// TLS as the upstream URL's sslmode says, the way libpq does.
type upstreamDialer struct {
	addr    string
	mode    string // disable, allow, prefer, require, verify-ca, verify-full
	timeout time.Duration
	tls     *tls.Config // nil for disable
}

// upstreamConn is an open upstream connection after TLS negotiation.
type upstreamConn struct {
	net.Conn
	tls  bool
	cert []byte // DER of the server's leaf certificate, when tls
}

func newUpstreamDialer(up config.Upstream, timeout time.Duration) (*upstreamDialer, error) {
	d := &upstreamDialer{addr: up.Addr(), mode: up.SSLMode, timeout: timeout}
	if d.mode == "require" && up.SSLRootCert != "" {
		// libpq: with a root certificate, require behaves like verify-ca.
		d.mode = "verify-ca"
	}
	if d.mode == "disable" {
		return d, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if net.ParseIP(up.Host) == nil {
		cfg.ServerName = up.Host // SNI, as libpq sends it
	}
	var roots *x509.CertPool // nil: the system's roots
	if up.SSLRootCert != "" {
		pem, err := os.ReadFile(up.SSLRootCert)
		if err != nil {
			return nil, fmt.Errorf("sslrootcert: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("sslrootcert %s: no PEM certificates", up.SSLRootCert)
		}
	}
	switch d.mode {
	case "allow", "prefer", "require":
		cfg.InsecureSkipVerify = true // libpq does not verify in these modes
	case "verify-ca":
		// Verify the chain but not the host name: Go has no such mode, so
		// skip its verification and do the chain check here.
		cfg.InsecureSkipVerify = true
		cfg.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
			return verifyChain(raw, roots)
		}
	case "verify-full":
		cfg.RootCAs = roots
		cfg.ServerName = up.Host // an IP is checked against the IP SANs
	default:
		return nil, fmt.Errorf("unknown sslmode %q", d.mode)
	}
	d.tls = cfg
	return d, nil
}

func verifyChain(raw [][]byte, roots *x509.CertPool) error {
	if len(raw) == 0 {
		return errors.New("server sent no certificate")
	}
	certs := make([]*x509.Certificate, len(raw))
	for i, r := range raw {
		c, err := x509.ParseCertificate(r)
		if err != nil {
			return err
		}
		certs[i] = c
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter})
	return err
}

// upstreamError is a failure to reach the upstream server; the client gets
// FATAL 08006.
type upstreamError struct {
	addr string
	err  error
}

func (e *upstreamError) Error() string {
	return fmt.Sprintf("could not connect to upstream %s: %v", e.addr, e.err)
}
func (e *upstreamError) Unwrap() error { return e.err }

// dial connects and negotiates TLS within the connect timeout (and ctx).
// forceTLS is libpq's second attempt in sslmode=allow; in sslmode=prefer,
// a failed TLS handshake is followed by a plaintext attempt, as in libpq.
func (d *upstreamDialer) dial(ctx context.Context, forceTLS bool) (*upstreamConn, error) {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	uc, err := d.attempt(ctx, forceTLS, false)
	var he *handshakeError
	if err != nil && d.mode == "prefer" && errors.As(err, &he) && ctx.Err() == nil {
		return d.attempt(ctx, false, true)
	}
	return uc, err
}

// handshakeError is a failed TLS handshake with the upstream.
type handshakeError struct{ err error }

func (e *handshakeError) Error() string { return "TLS handshake: " + e.err.Error() }
func (e *handshakeError) Unwrap() error { return e.err }

func (d *upstreamDialer) attempt(ctx context.Context, forceTLS, plain bool) (*upstreamConn, error) {
	var nd net.Dialer
	c, err := nd.DialContext(ctx, "tcp", d.addr)
	if err != nil {
		return nil, &upstreamError{d.addr, err}
	}
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	uc, err := d.negotiate(ctx, c, forceTLS, plain)
	if err != nil {
		c.Close()
		if ctx.Err() != nil || errors.Is(err, os.ErrDeadlineExceeded) {
			err = fmt.Errorf("%w (connect_timeout %s)", err, d.timeout)
		}
		return nil, &upstreamError{d.addr, err}
	}
	uc.SetDeadline(time.Time{})
	return uc, nil
}

var sslRequest = []byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f} // length 8, code 80877103

func (d *upstreamDialer) negotiate(ctx context.Context, c net.Conn, forceTLS, plain bool) (*upstreamConn, error) {
	wantTLS := !plain && d.mode != "disable" && (d.mode != "allow" || forceTLS)
	if !wantTLS {
		return &upstreamConn{Conn: c}, nil
	}
	if _, err := c.Write(sslRequest); err != nil {
		return nil, err
	}
	// Read exactly one byte: anything after it would be plaintext that
	// an attacker injected ahead of the handshake.
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return nil, fmt.Errorf("reading the SSLRequest answer: %w", err)
	}
	switch b[0] {
	case 'S':
	case 'N':
		if d.mode == "prefer" {
			return &upstreamConn{Conn: c}, nil
		}
		return nil, errors.New("server does not support SSL, but sslmode " + d.mode + " requires it")
	default:
		return nil, fmt.Errorf("unexpected answer %q to SSLRequest", b[0])
	}
	tc := tls.Client(c, d.tls)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, &handshakeError{err}
	}
	uc := &upstreamConn{Conn: tc, tls: true}
	if pc := tc.ConnectionState().PeerCertificates; len(pc) > 0 {
		uc.cert = pc[0].Raw
	}
	return uc, nil
}

// cancel forwards a CancelRequest to the upstream on a new connection,
// encrypted when the sslmode allows TLS, so the key does not cross the
// network in the clear when the sessions' own traffic does not.
func (d *upstreamDialer) cancel(ctx context.Context, req *pgproto3.CancelRequest) error {
	c, err := d.dial(ctx, false)
	if err != nil {
		return err
	}
	defer c.Close()
	buf, err := req.Encode(nil)
	if err != nil {
		return err
	}
	c.SetDeadline(time.Now().Add(d.timeout))
	if _, err := c.Write(buf); err != nil {
		return err
	}
	// The server closes the connection once it has processed the request;
	// waiting for that keeps the cancel ahead of whatever the client sends
	// next.
	_, _ = io.Copy(io.Discard, c)
	return nil
}
