package proxy

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"

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
func (s *Session) handshake() (*pgproto3.StartupMessage, *ending) {
	var sslDone, gssDone bool
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
			tc := tls.Server(s.client, s.srv.clientTLS)
			if err := tc.HandshakeContext(s.ctx); err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					return nil, &ending{reason: EndStartupTimeout, rejected: "startup_timeout", err: err}
				}
				return nil, &ending{reason: EndTLSError, rejected: "tls", err: err}
			}
			s.setClient(tc)
			s.clientTLS = true

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
func (s *Session) startupReadEnding(err error) *ending {
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
