package proxy

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"

	"github.com/jackc/pgx/v5/pgproto3"
)

// Startup-phase request codes (the first int32 after the length).
const (
	codeSSLRequest    = 80877103
	codeGSSENCRequest = 80877104
	codeCancelRequest = 80877102
)

// handshake runs the client's side of the startup phase: SSLRequest and
// GSSENCRequest negotiation (in either order, each at most once, as
// PostgreSQL allows), then either a CancelRequest (handled here; the
// connection ends) or the StartupMessage, which it returns.
func (s *ClientSession) handshake() (*pgproto3.StartupMessage, *ending) {
	var sslDone, gssDone bool
	if e := s.directTLS(); e != nil {
		return nil, e
	}
	if s.clientTLS {
		sslDone, gssDone = true, true
	}
	for {
		body, err := s.cliR.startupPacket()
		if err != nil {
			return nil, s.startupReadEnding(err)
		}
		code := binary.BigEndian.Uint32(body)
		switch {
		case code == codeSSLRequest && !sslDone:
			if s.cliR.buffered() > 0 {
				// Bytes sent ahead of the handshake would be
				// processed as if they had come over TLS
				// (CVE-2021-23214).
				return nil, protocolEnding("received unencrypted data after SSL request")
			}
			sslDone = true
			if s.srv.clientTLS == nil {
				if _, err := s.client.Write([]byte{'N'}); err != nil {
					return nil, &ending{reason: EndClientDisconnect, err: err}
				}
				continue
			}
			gssDone = true // no GSSAPI encryption inside TLS
			if _, err := s.client.Write([]byte{'S'}); err != nil {
				return nil, &ending{reason: EndClientDisconnect, err: err}
			}
			if e := s.startTLS(s.client, false); e != nil {
				return nil, e
			}

		case code == codeGSSENCRequest && !gssDone:
			// pgmoat has no GSSAPI: refuse, and the client goes on
			// with SSL or in the clear on the same connection.
			if s.cliR.buffered() > 0 {
				return nil, protocolEnding("received unencrypted data after GSSAPI encryption request")
			}
			gssDone = true
			if _, err := s.client.Write([]byte{'N'}); err != nil {
				return nil, &ending{reason: EndClientDisconnect, err: err}
			}

		case code == codeCancelRequest:
			var req pgproto3.CancelRequest
			if err := req.Decode(body); err != nil {
				return nil, &ending{reason: EndCancelRequest, rejected: "protocol_error", err: err}
			}
			s.srv.handleCancel(&req, s.from)
			return nil, &ending{reason: EndCancelRequest}

		case code == pgproto3.ProtocolVersion30 || code == pgproto3.ProtocolVersion32:
			var msg pgproto3.StartupMessage
			if err := msg.Decode(body); err != nil {
				return nil, protocolEnding("invalid startup packet layout")
			}
			return &msg, nil

		default:
			return nil, protocolEnding(fmt.Sprintf("unsupported frontend protocol %d.%d: pgmoat supports 3.0 and 3.2", code>>16, code&0xffff))
		}
	}
}

// tlsRecordHandshake is the first byte of a TLS ClientHello.
const tlsRecordHandshake = 0x16

// directTLS accepts a client that starts TLS at once instead of sending an
// SSLRequest (libpq's sslnegotiation=direct, PostgreSQL 17). No startup
// packet can begin with 0x16: its length would exceed the maximum.
func (s *ClientSession) directTLS() *ending {
	if s.srv.clientTLS == nil {
		return nil
	}
	if err := s.cliR.ensure(1); err != nil {
		return s.startupReadEnding(err)
	}
	if s.cliR.buf[s.cliR.r] != tlsRecordHandshake {
		return nil
	}
	// The TLS server must see the bytes already buffered.
	pre := append([]byte(nil), s.cliR.buf[s.cliR.r:s.cliR.w]...)
	s.cliR.r, s.cliR.w = 0, 0
	return s.startTLS(&prefixConn{Conn: s.client, pre: pre}, true)
}

// startTLS runs the server side of the client's TLS handshake on c.
func (s *ClientSession) startTLS(c net.Conn, direct bool) *ending {
	tc := tls.Server(c, s.srv.clientTLS)
	if err := tc.HandshakeContext(s.ctx); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return &ending{reason: EndStartupTimeout, rejected: "startup_timeout", err: err}
		}
		return &ending{reason: EndTLSError, rejected: "tls", err: err}
	}
	if direct && tc.ConnectionState().NegotiatedProtocol != alpnPostgres {
		// As PostgreSQL: direct TLS without ALPN could be a
		// cross-protocol attack.
		s.setClient(tc)
		return &ending{reason: EndTLSError, rejected: "tls", err: errors.New("direct TLS without ALPN \"postgresql\""),
			final: fatal(codeProtocolViolation, "received direct SSL connection request without ALPN protocol negotiation extension")}
	}
	s.setClient(tc)
	s.clientTLS = true
	return nil
}

// alpnPostgres is the ALPN protocol name of PostgreSQL over TLS.
const alpnPostgres = "postgresql"

// prefixConn is a connection whose first bytes were already read.
type prefixConn struct {
	net.Conn
	pre []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.pre) > 0 {
		n := copy(p, c.pre)
		c.pre = c.pre[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// protocolEnding ends a connection whose client broke the protocol during
// startup.
func protocolEnding(msg string) *ending {
	return &ending{
		reason:   EndProtocolViolation,
		rejected: "protocol_error",
		err:      &protocolError{msg: msg},
		final:    fatal(codeProtocolViolation, msg),
	}
}

// startupReadEnding classifies a failed read from the client before the
// StartupMessage.
func (s *ClientSession) startupReadEnding(err error) *ending {
	var pe *protocolError
	switch {
	case errors.As(err, &pe):
		return protocolEnding(pe.msg)
	case errors.Is(err, os.ErrDeadlineExceeded):
		return &ending{reason: EndStartupTimeout, rejected: "startup_timeout", err: err}
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		return &ending{reason: EndClientDisconnect, err: err}
	}
	return &ending{reason: EndClientDisconnect, err: err}
}

// refuseReplication ends a session whose startup packet asks for a
// replication connection (pg_basebackup, pg_receivewal, a logical
// replication subscriber): its commands (IDENTIFY_SYSTEM,
// START_REPLICATION, ...) are no SQL pgmoat can judge, and its streams
// would pass unjudged. Refusing at once, with a FATAL that says so, beats
// a client that hangs or fails on its first command. replication=false
// (or off, no, 0) is an ordinary session.
func refuseReplication(params map[string]string) *ending {
	v, ok := params["replication"]
	if !ok {
		return nil
	}
	switch strings.ToLower(v) {
	case "false", "off", "no", "0":
		return nil
	}
	return &ending{reason: EndReplication, rejected: "replication", final: &pgproto3.ErrorResponse{
		Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: "0A000",
		Message: "pgmoat does not relay replication connections (replication=" + v + ")",
		Hint:    "Connect replication clients (pg_basebackup, pg_receivewal, logical replication subscribers) to PostgreSQL directly; pgmoat judges SQL sessions only.",
	}}
}
