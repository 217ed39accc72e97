package proxy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgmoat/pgmoat/metrics"
)

// connectUpstream dials the upstream and sends it the client's
// StartupMessage with every parameter the client gave.
func (s *ClientSession) connectUpstream(startup *pgproto3.StartupMessage) *ending {
	pkt, err := startup.Encode(nil)
	if err != nil {
		return protocolEnding("invalid startup packet: " + err.Error())
	}
	for attempt := 0; ; attempt++ {
		up, err := s.srv.upstream.dial(s.ctx, attempt > 0)
		if err != nil {
			s.srv.met.UpstreamConnectErrors.Inc()
			return &ending{reason: EndUpstreamUnreachable, err: err,
				final: fatal(codeConnectionFailure, "pgmoat: "+err.Error())}
		}
		s.attachUpstream(up)
		_, err = s.srvW.Write(pkt)
		if err == nil {
			err = s.srvW.Flush()
		}
		if err != nil {
			return s.authServerEnding(err)
		}
		if s.srv.upstream.mode != "allow" || up.tls || attempt > 0 {
			return nil
		}
		// sslmode=allow: a server that refuses the plaintext session
		// (hostssl-only pg_hba, say) gets a second attempt over TLS,
		// as libpq does.
		typ, _, err := s.srvR.next()
		if err != nil || typ != 'E' {
			return nil
		}
		s.connMu.Lock()
		s.server.Close()
		s.connMu.Unlock()
	}
}

// attachUpstream makes up the session's server connection.
func (s *ClientSession) attachUpstream(up *upstreamConn) {
	s.setServer(up.Conn)
	s.upstreamTLS = up.tls
	s.upstreamCert = up.cert
	s.srvR = newMsgReader(up.Conn)
	s.srvW = newMsgWriter(up.Conn, s.srv.met.BytesRelayed.Cell(s.shard, metrics.ClientToServer))
	s.cliR.onBlock = s.flushServer
}

func (s *ClientSession) flushServer() error {
	if s.srvW.Buffered() == 0 {
		return nil
	}
	if err := s.srvW.Flush(); err != nil {
		return &writeError{err}
	}
	return nil
}

// authenticate relays the authentication exchange and the session's
// start (ParameterStatus, BackendKeyData) up to the first ReadyForQuery.
// pgmoat never sees a password in the clear unless the server asks the
// client for one in the clear, and never logs what it relays.
func (s *ClientSession) authenticate() *ending {
	for {
		typ, n, err := s.srvR.next()
		if err != nil {
			return s.authServerEnding(err)
		}
		switch typ {
		case 'R':
			msg, err := s.srvR.message(n)
			if err != nil {
				return s.authServerEnding(err)
			}
			if n < 4 {
				return upstreamProtocolEnding(errors.New("authentication request too short"))
			}
			switch authType := binary.BigEndian.Uint32(msg[5:]); authType {
			case pgproto3.AuthTypeOk, pgproto3.AuthTypeSASLFinal:
				if e := s.toClient(msg, false); e != nil {
					return e
				}
			case pgproto3.AuthTypeCleartextPassword, pgproto3.AuthTypeMD5Password, pgproto3.AuthTypeSASLContinue:
				if e := s.toClient(msg, true); e != nil {
					return e
				}
				if e := s.relayAuthResponse(false); e != nil {
					return e
				}
			case pgproto3.AuthTypeSASL:
				var sasl pgproto3.AuthenticationSASL
				if err := sasl.Decode(msg[5:]); err != nil {
					return upstreamProtocolEnding(err)
				}
				mechs, stripped := s.relayableMechanisms(sasl.AuthMechanisms)
				if len(mechs) == 0 {
					return &ending{reason: EndAuthUnsupported,
						err: fmt.Errorf("server offers only %s", strings.Join(sasl.AuthMechanisms, ", ")),
						final: &pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: codeInvalidAuthorization,
							Message: "the server requires SCRAM channel binding, which cannot pass through pgmoat's TLS termination",
							Hint:    channelBindingHint}}
				}
				if stripped {
					sasl.AuthMechanisms = mechs
					if msg, err = sasl.Encode(nil); err != nil {
						return upstreamProtocolEnding(err)
					}
				}
				if e := s.toClient(msg, true); e != nil {
					return e
				}
				if e := s.relayAuthResponse(stripped); e != nil {
					return e
				}
			default:
				return &ending{reason: EndAuthUnsupported, err: fmt.Errorf("authentication type %d", authType),
					final: fatal(codeInvalidAuthorization, "pgmoat cannot relay this authentication method (GSSAPI, SSPI or Kerberos); use password, md5 or scram-sha-256")}
			}
		case 'E':
			msg, err := s.srvR.message(n)
			if err != nil {
				return s.authServerEnding(err)
			}
			var er pgproto3.ErrorResponse
			if err := er.Decode(msg[5:]); err != nil {
				return upstreamProtocolEnding(err)
			}
			if e := s.toClient(msg, true); e != nil {
				return e
			}
			return &ending{reason: EndAuthFailed, err: fmt.Errorf("server: %s %s: %s", er.Severity, er.Code, er.Message)}
		case 'K':
			msg, err := s.srvR.message(n)
			if err != nil {
				return s.authServerEnding(err)
			}
			var kd pgproto3.BackendKeyData
			if err := kd.Decode(msg[5:]); err != nil {
				return upstreamProtocolEnding(err)
			}
			s.pid, s.secret = kd.ProcessID, kd.SecretKey
			s.srv.register(s, makeCancelKey(kd.ProcessID, kd.SecretKey))
			if e := s.toClient(msg, false); e != nil {
				return e
			}
		case 'S':
			msg, err := s.srvR.message(n)
			if err != nil {
				return s.authServerEnding(err)
			}
			s.recordParameterStatus(msg[5:])
			if e := s.toClient(msg, false); e != nil {
				return e
			}
		case 'Z':
			msg, err := s.srvR.message(n)
			if err != nil {
				return s.authServerEnding(err)
			}
			if n != 1 {
				return upstreamProtocolEnding(errors.New("malformed ReadyForQuery"))
			}
			s.tx.Store(uint32(msg[5]))
			if h, ok := s.icpt.(SessionHooks); ok {
				// The hook may read from the server (StartupQuery),
				// which reuses the buffer msg points into.
				msg = append([]byte(nil), msg...)
				if err := h.SessionStarted(s); err != nil {
					var re *refusedError
					if errors.As(err, &re) {
						return &ending{reason: EndRefused, err: err, final: re.resp}
					}
					return &ending{reason: EndInterceptorError, err: err,
						final: fatal(codeInternalError, "pgmoat could not start checking this session")}
				}
				s.hooked = true
			}
			return s.toClient(msg, true)
		case 'v', 'N':
			if err := s.srvR.relay(s.cliW, n); err != nil {
				return s.authRelayEnding(err)
			}
		default:
			return upstreamProtocolEnding(fmt.Errorf("unexpected message type %q during authentication", typ))
		}
	}
}

const channelBindingHint = "Connect with channel_binding=disable, or give pgmoat (tls.cert, tls.key) the upstream server's own certificate and key: channel binding then passes through."

// relayableMechanisms returns the SASL mechanisms the client may choose.
// Channel binding (the -PLUS mechanisms) binds the exchange to the TLS
// certificate the client sees; pgmoat terminates TLS, so that only works
// when pgmoat presents the very certificate the upstream presented to it.
// Otherwise the -PLUS mechanisms are removed: a client that prefers
// channel binding falls back, one that requires it fails with its own
// error.
func (s *ClientSession) relayableMechanisms(mechs []string) (out []string, stripped bool) {
	if s.clientTLS && s.upstreamTLS && bytes.Equal(s.srv.ownCert, s.upstreamCert) {
		return mechs, false
	}
	for _, m := range mechs {
		if strings.HasSuffix(m, "-PLUS") {
			stripped = true
			continue
		}
		out = append(out, m)
	}
	return out, stripped
}

// maxAuthResponse bounds an authentication response: PostgreSQL reads a
// password in at most 1,000 bytes and a SASL token in at most 65,535
// (PG_MAX_AUTH_TOKEN_LENGTH). A client that has not logged in yet must not
// make pgmoat buffer more; limits.message_memory counts only the messages
// of sessions that have.
const maxAuthResponse = 65535 + 1024

// relayAuthResponse relays the client's answer to an authentication
// request. After pgmoat removed SCRAM-SHA-256-PLUS from an upstream over
// TLS, a client on TLS that supports channel binding says so ("y" in its
// GS2 header), and the server, which does support it, must then refuse it
// as a downgrade attack; pgmoat refuses it first, with an error that says
// what to do.
func (s *ClientSession) relayAuthResponse(checkGS2 bool) *ending {
	typ, n, err := s.cliR.next()
	if err != nil {
		return s.authClientEnding(err)
	}
	switch {
	case typ == 'X':
		return &ending{reason: EndClientDisconnect, err: errors.New("client gave up during authentication")}
	case typ != 'p':
		return protocolEnding(fmt.Sprintf("expected an authentication response, got message type %q", typ))
	case n > maxAuthResponse:
		return protocolEnding(fmt.Sprintf("authentication response of %d bytes is longer than any PostgreSQL accepts (%d)", n, maxAuthResponse))
	case n > int(s.srv.cfg.Limits.MaxMessageSize):
		return protocolEnding(fmt.Sprintf("authentication response of %d bytes exceeds limits.max_message_size", n))
	}
	msg, err := s.cliR.message(n)
	if err != nil {
		return s.authClientEnding(err)
	}
	if checkGS2 {
		var init pgproto3.SASLInitialResponse
		if err := init.Decode(msg[5:]); err != nil {
			return protocolEnding("malformed SASLInitialResponse")
		}
		if len(init.Data) > 0 && init.Data[0] == 'y' {
			return &ending{reason: EndAuthUnsupported, err: errors.New("client supports SCRAM channel binding; the server would refuse the downgrade"),
				final: &pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: codeInvalidAuthorization,
					Message: "SCRAM channel binding cannot pass through pgmoat's TLS termination",
					Detail:  "The client connected to pgmoat with TLS and supports channel binding; the upstream server supports it too and would reject the session.",
					Hint:    channelBindingHint}}
		}
	}
	_, err = s.srvW.Write(msg)
	if err == nil {
		err = s.srvW.Flush()
	}
	if err != nil {
		return s.authServerEnding(err)
	}
	return nil
}

// toClient writes a message to the client during authentication, flushing
// when the client is expected to act on it.
func (s *ClientSession) toClient(msg []byte, flush bool) *ending {
	_, err := s.cliW.Write(msg)
	if err == nil && flush {
		err = s.cliW.Flush()
	}
	if err != nil {
		return s.authClientEnding(err)
	}
	return nil
}

func (s *ClientSession) recordParameterStatus(body []byte) {
	name, value, err := DecodeParameterStatus(body)
	if err != nil {
		return // relayed anyway; the client will judge it
	}
	s.psMu.Lock()
	s.status[name] = value
	s.psMu.Unlock()
}

func (s *ClientSession) authRelayEnding(err error) *ending {
	var we *writeError
	if errors.As(err, &we) {
		return s.authClientEnding(err)
	}
	return s.authServerEnding(err)
}

// authClientEnding classifies a failed read from or write to the client
// during authentication.
func (s *ClientSession) authClientEnding(err error) *ending {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return &ending{reason: EndStartupTimeout, rejected: "startup_timeout", err: fmt.Errorf("client: %w", err)}
	}
	return &ending{reason: EndClientDisconnect, err: err}
}

// authServerEnding classifies a failed read from or write to the server
// during authentication.
func (s *ClientSession) authServerEnding(err error) *ending {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return &ending{reason: EndStartupTimeout, rejected: "startup_timeout", err: fmt.Errorf("upstream: %w", err),
			final: fatal(codeConnectionFailure, "pgmoat: timed out waiting for the upstream server during authentication")}
	}
	if errors.Is(err, errShortMessage) {
		return upstreamProtocolEnding(err)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		err = errors.New("upstream closed the connection")
	}
	return &ending{reason: EndUpstreamLost, err: err,
		final: fatal(codeConnectionFailure, "pgmoat: upstream connection lost during authentication")}
}

func upstreamProtocolEnding(err error) *ending {
	return &ending{reason: EndUpstreamProtocol, err: err,
		final: fatal(codeProtocolViolation, "pgmoat: invalid message from the upstream server")}
}
