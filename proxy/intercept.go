package proxy

import (
	"context"

	"github.com/jackc/pgx/v5/pgproto3"
)

// Interceptor sees client messages before they are forwarded: it is where
// enforcement plugs into the wire, which itself knows nothing of policy.
//
// Intercept is called on the session's client→server goroutine, once per
// message, in order, for every message of the steady state except CopyData
// (which is streamed, never assembled). While it runs, nothing else is read
// from the client or sent to the server, so a hold is simply an Intercept
// that waits; ctx is cancelled when the session ends (client gone,
// shutdown). It may talk to the client with ClientSession.SendToClient (a
// NoticeResponse announcing a hold, say) and may install a cancel hook with
// ClientSession.SetCancelHook.
//
// An error ends the session: a Decode failure gives the client FATAL 08P01,
// any other error FATAL XX000 (the message is not forwarded either way). To
// refuse one statement and keep the session, return a MessageVerdict instead.
type Interceptor interface {
	Intercept(ctx context.Context, s *ClientSession, m *ClientMessage) (MessageVerdict, error)
}

// TryInterceptor is an Interceptor that can often decide without
// blocking. Sessions whose Interceptor implements it run in pgmoat's event
// loop (plain TCP or Unix sockets on both sides), where one thread relays
// many sessions and a blocking call would stall them all: TryIntercept is
// asked first, on the loop, and must not block (no I/O, no waiting on
// other sessions, no durable writes). It returns ok=false, having changed
// nothing that calling Intercept for the same message would change again
// (metrics included), when the message needs Intercept; the session then
// leaves the loop for good and Intercept is called on its own goroutine as
// described above.
type TryInterceptor interface {
	Interceptor
	TryIntercept(s *ClientSession, m *ClientMessage) (v MessageVerdict, ok bool)
}

// MessageAction is what the session does with an intercepted message.
type MessageAction int

const (
	// Forward sends the message on unchanged (the zero MessageVerdict).
	Forward MessageAction = iota
	// Drop discards the message: the server never sees it.
	Drop
	// Replace sends MessageVerdict.Rewrite.Replacement instead of the
	// message.
	Replace
)

// MessageVerdict is an Interceptor's decision about one message.
//
// It is four words, the most the compiler keeps in registers: a verdict
// is returned through several calls for every client message, and a
// larger one is written to memory and copied at each (bench/README.md,
// "Optimisations"). What only a refusal needs is behind Rewrite.
type MessageVerdict struct {
	Action MessageAction
	// Tag, when not nil, follows a forwarded message (Action Forward): the
	// Interceptor's ReplyObserver sees the server's answers to it with
	// this tag.
	Tag any
	// Rewrite, when not nil, holds what Action Replace sends instead of
	// the message and whether the client's following messages are
	// dropped (with Replace or Drop).
	Rewrite *Rewrite
}

// Rewrite is the part of a MessageVerdict that replaces a message or
// skips the client's next ones.
type Rewrite struct {
	// Replacement is sent instead of the message when Action is Replace.
	Replacement []Injected
	// DiscardUntilSync makes the session drop the client's following
	// messages up to, not including, its next Sync (Terminate still ends
	// the session), exactly as PostgreSQL skips them after an error in the
	// extended protocol. Combined with a Replacement that makes the server
	// raise the error (Parse/Bind/Execute of a DO block that raises
	// 42501), the client sees what PostgreSQL itself would have done.
	DiscardUntilSync bool
}

// DiscardsUntilSync reports whether v drops the client's following
// messages up to its next Sync.
func (v MessageVerdict) DiscardsUntilSync() bool {
	return v.Rewrite != nil && v.Rewrite.DiscardUntilSync
}

// ReplyObserver is implemented by an Interceptor that follows what the
// server answered, to track session state from what really ran.
//
// ServerMessage is called on the session's server→client goroutine before
// the message is relayed: for every ReadyForQuery ('Z') and ParameterStatus
// ('S'), and for CommandComplete ('C'), ErrorResponse ('E'), ParseComplete
// ('1'), BindComplete ('2') and CloseComplete ('3') when the message
// answers a tagged request. typ 0 (with a nil body) reports a
// tagged request the server skipped after an earlier error. The body of a
// ReadyForQuery is its one transaction status byte ('I', 'T' or 'E');
// DecodeParameterStatus decodes a ParameterStatus. tag is the tag
// of the request the message answers (nil if none). body is valid only
// during the call. An error ends the session; use Refuse to choose the
// FATAL error the client gets.
type ReplyObserver interface {
	ServerMessage(s *ClientSession, tag any, typ byte, body []byte) error
}

// SessionHooks is implemented by an Interceptor that keeps per-session
// state. SessionStarted is called once authentication has succeeded, before
// the client sees its first ReadyForQuery; an error refuses the session
// (use Refuse to choose the FATAL error). SessionEnded is called once for
// every session SessionStarted accepted, after it has ended.
type SessionHooks interface {
	SessionStarted(s *ClientSession) error
	SessionEnded(s *ClientSession, reason string, err error)
}

// refusedError ends a session with a FATAL error chosen by the Interceptor.
type refusedError struct{ resp *pgproto3.ErrorResponse }

func (e *refusedError) Error() string { return e.resp.Code + ": " + e.resp.Message }

// Refuse returns an error that, returned by a hook or an Interceptor, ends
// the session with a FATAL ErrorResponse carrying code, msg and hint.
func Refuse(code, msg, hint string) error {
	return &refusedError{&pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: code, Message: msg, Hint: hint}}
}

// Malformed returns the error for a client message that breaks the
// protocol: the session ends with FATAL 08P01.
func Malformed(msg string) error { return &protocolError{msg: msg} }

// Injected is one message pgmoat sends to the server on its own account.
type Injected struct {
	Msg pgproto3.FrontendMessage
	// HideReply keeps the server's reply to Msg (ParseComplete,
	// BindComplete, CloseComplete, the rows and CommandComplete of an
	// Execute, ...) from the client, which never sent Msg. Errors are
	// always passed on: they are the point of injecting.
	HideReply bool
	// OwnError marks a message whose error is pgmoat's own (a DO block
	// that raises a refusal): the client gets the ErrorResponse without
	// the fields that describe the server's code rather than the error
	// (Where's "PL/pgSQL function inline_code_block ...", File, Line,
	// Routine, the internal query), so it reads as pgmoat's alone while
	// its transaction effects stay the server's.
	OwnError bool
}
