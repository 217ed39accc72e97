package proxy

import (
	"errors"

	"github.com/jackc/pgx/v5/pgproto3"
)

// SQLSTATE codes pgmoat itself sends.
const (
	codeConnectionFailure    = "08006" // connection_failure
	codeProtocolViolation    = "08P01" // protocol_violation
	codeInvalidAuthorization = "28000" // invalid_authorization_specification
	codeTooManyConnections   = "53300" // too_many_connections
	codeAdminShutdown        = "57P01" // admin_shutdown
	codeInternalError        = "XX000" // internal_error
)

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("proxy: server closed")

// errShutdown is the cause of a session context cancelled by Shutdown once
// the drain timeout has expired.
var errShutdown = errors.New("pgmoat is shutting down")

// protocolError is a client (or server) that broke the wire protocol: an
// oversized or malformed message, an unknown message type, data where none
// may be. The client gets a FATAL 08P01 with msg.
type protocolError struct {
	msg string
	err error // underlying decode error, if any
}

func (e *protocolError) Error() string {
	if e.err != nil {
		return e.msg + ": " + e.err.Error()
	}
	return e.msg
}

func (e *protocolError) Unwrap() error { return e.err }

// fatal returns a FATAL ErrorResponse as PostgreSQL would send it.
func fatal(code, msg string) *pgproto3.ErrorResponse {
	return &pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: code, Message: msg}
}

// EndReason says why a client connection ended. Every connection pgmoat
// accepts ends with exactly one reason, logged at info level.
type EndReason string

// The ways a connection ends. doc.go describes each.
const (
	EndClientTerminate   EndReason = "client_terminate"   // client sent Terminate
	EndClientDisconnect  EndReason = "client_disconnect"  // client closed or broke the connection
	EndServerFatal       EndReason = "server_fatal"       // server sent a FATAL error and closed
	EndUpstreamLost      EndReason = "upstream_lost"      // upstream connection closed or failed without a FATAL
	EndProtocolViolation EndReason = "protocol_violation" // client sent an oversized or malformed message
	EndUpstreamProtocol  EndReason = "upstream_protocol"  // server sent something pgmoat cannot frame
	EndShutdown          EndReason = "shutdown"           // drain timeout expired during Shutdown
	EndInterceptorError  EndReason = "interceptor_error"  // the Interceptor failed
	EndRefused           EndReason = "refused"            // the Interceptor refused the session (Refuse)

	EndStartupTimeout      EndReason = "startup_timeout" // startup or authentication took longer than limits.startup_timeout
	EndTLSError            EndReason = "tls_error"       // client TLS handshake failed
	EndTooManyConnections  EndReason = "too_many_connections"
	EndDraining            EndReason = "draining"             // client arrived while shutting down
	EndUpstreamUnreachable EndReason = "upstream_unreachable" // dial or TLS to the upstream failed
	EndAuthFailed          EndReason = "auth_failed"          // server refused the session (bad password, no such database, ...)
	EndAuthUnsupported     EndReason = "auth_unsupported"     // authentication pgmoat cannot relay (GSSAPI, channel binding)
	EndCancelRequest       EndReason = "cancel_request"       // the connection carried a CancelRequest
	EndReplication         EndReason = "replication"          // a replication connection, which pgmoat does not relay
)
