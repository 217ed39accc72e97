package proxy

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgmoat/pgmoat/metrics"
)

// finalWriteGrace bounds the last message (a FATAL error) written to a
// client whose session is ending, and unblocks a copier stuck writing to a
// peer that stopped reading.
const finalWriteGrace = time.Second

// ClientSession is one client connection and, once the client has sent its
// StartupMessage, its upstream connection: the session as the wire sees it
// (rules.Session is the same session as the analysis sees it).
// Interceptors read its state through the exported methods.
type ClientSession struct {
	// What the relay touches for every message comes first, so that with
	// hundreds of sessions a turn costs a few cache lines of this struct
	// rather than one for every field it reads.
	srv   *Server
	cliR  *msgReader
	cliW  *msgWriter
	cliMu sync.Mutex // serialises writes to the client (relay, SendToClient, final errors)
	srvR  *msgReader
	srvW  *msgWriter

	tx               atomic.Uint32
	inFlight         atomic.Int64 // Query, Sync and FunctionCall messages sent minus ReadyForQuery received
	clientTerminated atomic.Bool
	clientDirty      atomic.Bool // a message to the client was cut short: no final error can follow

	icpt     Interceptor
	fast     TryInterceptor // icpt, when it can decide without blocking; nil otherwise
	hookData any            // the interceptor's state of this session (SetHookData)
	// shard is the metrics shard the session writes to: its event loop's
	// while it is in one (enterLoop), one by its number until then.
	shard   int
	replies *replyQueue // nil without an interceptor

	id    uint64
	log   *slog.Logger
	start time.Time
	from  string // client address

	ctx       context.Context
	cancel    context.CancelCauseFunc
	stopWatch func() bool

	connMu   sync.Mutex // guards client, server and stopped
	client   net.Conn   // the tls.Conn once TLS is up
	server   net.Conn
	stopped  bool
	deadline time.Time // end of the startup phase
	loop     *loopConn // the session's place in the event loop while it runs there

	clientTLS    bool
	upstreamTLS  bool
	upstreamCert []byte // DER of the upstream's leaf certificate
	protocol     uint32
	params       map[string]string // StartupMessage parameters; read-only after startup

	pid    uint32
	secret []byte // the server's cancel secret; never logged
	key    cancelKey
	keyed  bool // key registered with the server
	psMu   sync.Mutex
	status map[string]string // ParameterStatus values

	serverFatal atomic.Pointer[pgproto3.ErrorResponse]
	cancelHook  atomic.Pointer[func() bool]

	hooked bool // SessionHooks.SessionStarted accepted the session
	dec    frontendDecoder

	// relayDone is closed when the server→client copier stops: an
	// Exchange waiting for replies gives up then.
	relayDone     chan struct{}
	relayDoneOnce sync.Once
}

// endRelay marks the server→client side stopped.
func (s *ClientSession) endRelay() { s.relayDoneOnce.Do(func() { close(s.relayDone) }) }

func newSession(srv *Server, c net.Conn) *ClientSession {
	s := &ClientSession{
		srv:    srv,
		id:     srv.nextID.Add(1),
		start:  time.Now(),
		from:   c.RemoteAddr().String(),
		client: c,
		status: make(map[string]string),
		icpt:   srv.icpt,
	}
	s.fast, _ = srv.icpt.(TryInterceptor)
	s.log = srv.log.With("session", s.id, "client", s.from)
	s.ctx, s.cancel = context.WithCancelCause(context.Background())
	s.stopWatch = context.AfterFunc(s.ctx, s.stopIO)
	s.cliR = newMsgReader(c)
	s.shard = int(s.id % metrics.Shards)
	s.cliW = newMsgWriter(c, srv.met.BytesRelayed.Cell(s.shard, metrics.ServerToClient))
	if s.icpt != nil {
		s.replies = &replyQueue{}
	}
	s.relayDone = make(chan struct{})
	s.tx.Store('I')
	return s
}

// ID is the session's number, unique in this process.
func (s *ClientSession) ID() uint64 { return s.id }

// SetHookData keeps v, the interceptor's own state of this session, with
// the session: HookData returns it on every message without a look-up in
// a map of sessions. Call it from SessionHooks.SessionStarted, before the
// session relays anything; it is read without synchronisation after that.
func (s *ClientSession) SetHookData(v any) { s.hookData = v }

// MetricShard returns the metrics shard (metrics.Shards) the session's
// messages are counted in: an interceptor that counts every statement
// counts it there, so that event loops on different processors do not
// write the same memory.
func (s *ClientSession) MetricShard() int { return s.shard }

// HookData returns what SetHookData kept, or nil.
func (s *ClientSession) HookData() any { return s.hookData }

// ClientAddr is the client's address.
func (s *ClientSession) ClientAddr() string { return s.from }

// Context is cancelled when the session ends.
func (s *ClientSession) Context() context.Context { return s.ctx }

// StartupParameter returns a parameter of the client's StartupMessage
// ("user", "database", "application_name", "options", ...).
func (s *ClientSession) StartupParameter(name string) string { return s.params[name] }

// User is the role the client logs in as.
func (s *ClientSession) User() string { return s.params["user"] }

// Database is the database the client connects to (the user name when the
// client names none, as PostgreSQL does).
func (s *ClientSession) Database() string {
	if db := s.params["database"]; db != "" {
		return db
	}
	return s.params["user"]
}

// ApplicationName is the application_name the client sent at startup.
func (s *ClientSession) ApplicationName() string { return s.params["application_name"] }

// BackendPID is the server process serving the session (0 before
// BackendKeyData).
func (s *ClientSession) BackendPID() uint32 { return s.pid }

// TxStatus is the transaction status of the last ReadyForQuery: 'I' idle,
// 'T' in a transaction block, 'E' in a failed transaction block.
func (s *ClientSession) TxStatus() byte { return byte(s.tx.Load()) }

// ParameterStatus returns the last value the server reported for a
// run-time parameter (server_version, client_encoding, ...).
func (s *ClientSession) ParameterStatus(name string) string {
	s.psMu.Lock()
	defer s.psMu.Unlock()
	return s.status[name]
}

// ParameterStatuses returns a copy of all reported run-time parameters.
func (s *ClientSession) ParameterStatuses() map[string]string {
	s.psMu.Lock()
	defer s.psMu.Unlock()
	return maps.Clone(s.status)
}

// SetCancelHook installs f to run when a CancelRequest for this session
// arrives; if f returns true the request is considered handled and is not
// forwarded to the server (a held statement is withdrawn instead of
// cancelling whatever the server runs). nil removes the hook.
func (s *ClientSession) SetCancelHook(f func() bool) {
	if f == nil {
		s.cancelHook.Store(nil)
		return
	}
	s.cancelHook.Store(&f)
}

// WatchClient watches the client connection while the Interceptor blocks
// (a held statement): onGone runs if the client disconnects or sends
// Terminate (a client that said goodbye must not have its statement run
// later, whatever arrives afterwards). Bytes the
// client sends meanwhile are kept for the relay, up to bufSize; past that
// the client is not read (TCP pushes back) and a disconnect is noticed only
// when the hold ends. It first sends the server what earlier messages left
// buffered. Call it only from Intercept, and call stop before Intercept
// returns.
func (s *ClientSession) WatchClient(onGone func()) (stop func()) {
	s.flushServer()
	s.connMu.Lock()
	c := s.client
	s.connMu.Unlock()
	var (
		extra []byte
		done  = make(chan struct{})
		quit  = make(chan struct{})
	)
	// The messages the client pipelined behind the held one: what the
	// reader had buffered (and what an earlier watch during the same
	// Intercept read), then what arrives. The copier that owns the reader
	// is blocked in Intercept, so reading its buffer is safe.
	pending := append(append([]byte(nil), s.cliR.buf[s.cliR.r:s.cliR.w]...), s.cliR.pre...)
	scanned := 0
	terminated := func(b []byte) bool {
		for len(b)-scanned >= 5 {
			if b[scanned] == 'X' {
				return true
			}
			n := int(binary.BigEndian.Uint32(b[scanned+1:]))
			if n < 4 {
				return false // malformed: the relay will say so
			}
			scanned += 1 + n
		}
		return false
	}
	go func() {
		defer close(done)
		if terminated(pending) {
			onGone()
			<-quit
			return
		}
		buf := make([]byte, 4096)
		for len(extra) < bufSize {
			n, err := c.Read(buf[:min(len(buf), bufSize-len(extra))])
			extra = append(extra, buf[:n]...)
			pending = append(pending, buf[:n]...)
			if terminated(pending) {
				onGone()
				<-quit
				return
			}
			if err != nil {
				select {
				case <-quit: // woken by stop's deadline
				default:
					onGone()
				}
				return
			}
		}
		<-quit
	}()
	return func() {
		close(quit)
		s.connMu.Lock()
		if !s.stopped {
			c.SetReadDeadline(time.Unix(1, 0))
		}
		s.connMu.Unlock()
		<-done
		s.connMu.Lock()
		if !s.stopped {
			c.SetReadDeadline(time.Time{})
		}
		s.connMu.Unlock()
		if len(extra) > 0 {
			s.cliR.pre = append(s.cliR.pre, extra...)
		}
	}
}

// StartupQuery runs sql, a simple query, on the session's upstream
// connection on pgmoat's own account and returns its rows (NULL as ""). The
// client never sees it. It may only be called from
// SessionHooks.SessionStarted, while the client waits for its first
// ReadyForQuery.
func (s *ClientSession) StartupQuery(sql string) ([][]string, error) {
	buf, err := (&pgproto3.Query{String: sql}).Encode(nil)
	if err != nil {
		return nil, err
	}
	if _, err := s.srvW.Write(buf); err != nil {
		return nil, err
	}
	if err := s.srvW.Flush(); err != nil {
		return nil, err
	}
	var (
		rows   [][]string
		qerr   error
		dr     pgproto3.DataRow
		errMsg pgproto3.ErrorResponse
	)
	for {
		typ, n, err := s.srvR.next()
		if err != nil {
			return nil, err
		}
		msg, err := s.srvR.message(n)
		if err != nil {
			return nil, err
		}
		switch typ {
		case 'D':
			if err := dr.Decode(msg[5:]); err != nil {
				return nil, err
			}
			row := make([]string, len(dr.Values))
			for i, v := range dr.Values {
				row[i] = string(v)
			}
			rows = append(rows, row)
		case 'E':
			if err := errMsg.Decode(msg[5:]); err != nil {
				return nil, err
			}
			qerr = fmt.Errorf("%s %s: %s", errMsg.Severity, errMsg.Code, errMsg.Message)
		case 'S':
			s.recordParameterStatus(msg[5:])
		case 'Z':
			s.tx.Store(uint32(msg[5]))
			return rows, qerr
		}
	}
}

// SendToClient writes messages to the client at once, between two relayed
// server messages.
func (s *ClientSession) SendToClient(msgs ...pgproto3.BackendMessage) error {
	var buf []byte
	for _, m := range msgs {
		var err error
		if buf, err = m.Encode(buf); err != nil {
			return err
		}
	}
	s.cliMu.Lock()
	defer s.cliMu.Unlock()
	if _, err := s.cliW.Write(buf); err != nil {
		return err
	}
	return s.cliW.Flush()
}

// kill ends the session from outside (Shutdown): both copiers unblock and
// the client is told why.
func (s *ClientSession) kill(cause error) { s.cancel(cause) }

// stopIO unblocks every read on both connections, and any write after
// finalWriteGrace, without closing them, so that the goroutine that owns
// the session can still tell the client why it ends.
func (s *ClientSession) stopIO() {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	s.stopped = true
	if s.loop != nil {
		// The event loop owns the sockets: it hands the session back,
		// and leaveLoop sets these deadlines on the restored connections.
		s.loop.kick()
		return
	}
	for _, c := range []net.Conn{s.client, s.server} {
		if c != nil {
			c.SetReadDeadline(time.Unix(1, 0))
			c.SetWriteDeadline(time.Now().Add(finalWriteGrace))
		}
	}
}

// setClient replaces the client connection (by its TLS wrapper).
func (s *ClientSession) setClient(c net.Conn) {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	s.client = c
	s.cliR.rd = c
	s.cliW.w = c
}

// setServer attaches the upstream connection, honouring a kill that came
// first.
func (s *ClientSession) setServer(c net.Conn) {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	s.server = c
	c.SetDeadline(s.deadline)
	if s.stopped {
		c.SetReadDeadline(time.Unix(1, 0))
	}
}

// endStartup lifts the startup deadline from both connections.
func (s *ClientSession) endStartup() {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	if s.stopped {
		return
	}
	s.client.SetDeadline(time.Time{})
	s.server.SetDeadline(time.Time{})
}

// ending is how a connection ends: the reason logged and counted, the
// error behind it, and the FATAL error the client is sent, if any.
type ending struct {
	reason   EndReason
	err      error
	final    *pgproto3.ErrorResponse
	rejected string // ClientConnectionsRejected reason, if the connection never became a session
}

// serve runs the connection from accept to close.
func (s *ClientSession) serve() {
	defer s.srv.wg.Done()
	var admitted bool
	e := s.run(&admitted)
	if s.shutdownKilled() && e.reason != EndShutdown {
		switch e.reason {
		case EndClientTerminate, EndServerFatal, EndAuthFailed, EndCancelRequest:
		default:
			e = shutdownEnding()
			if !admitted {
				e.rejected = "draining"
			}
		}
	}
	s.stopWatch()
	s.cancel(nil)
	if e.rejected != "" {
		s.srv.met.ClientConnectionsRejected.WithLabelValues(e.rejected).Inc()
	}
	if e.final != nil && !s.clientDirty.Load() {
		s.writeFinal(e.final)
		if e.reason == EndProtocolViolation {
			s.lingerClient()
		}
	}
	s.closeConns()
	s.srv.forget(s, admitted)
	if s.hooked {
		s.icpt.(SessionHooks).SessionEnded(s, string(e.reason), e.err)
	}

	attrs := []any{"reason", e.reason, "duration", time.Since(s.start).Round(time.Millisecond)}
	if s.params != nil {
		attrs = append(attrs, "application_name", s.ApplicationName()) // user and database are on s.log
	}
	if s.pid != 0 {
		attrs = append(attrs, "backend_pid", s.pid)
	}
	if s.srvW != nil {
		attrs = append(attrs, "bytes_from_client", s.srvW.count, "bytes_to_client", s.cliW.count)
	}
	if e.err != nil {
		attrs = append(attrs, "err", e.err.Error())
	}
	if e.final != nil {
		attrs = append(attrs, "sqlstate", e.final.Code)
	}
	if admitted {
		s.log.Info("session ended", attrs...)
	} else {
		s.log.Info("connection ended", attrs...)
	}
}

// shutdownKilled reports whether Shutdown closed the session.
func (s *ClientSession) shutdownKilled() bool { return errors.Is(context.Cause(s.ctx), errShutdown) }

func shutdownEnding() *ending {
	return &ending{reason: EndShutdown, err: errShutdown,
		final: fatal(codeAdminShutdown, "terminating connection because pgmoat is shutting down")}
}

// run goes through startup, authentication and the relay, and returns how
// the connection ended.
func (s *ClientSession) run(admitted *bool) *ending {
	s.deadline = s.start.Add(s.srv.cfg.Limits.StartupTimeout.Std())
	s.client.SetDeadline(s.deadline)

	startup, e := s.handshake()
	if e != nil {
		return e
	}
	s.protocol = startup.ProtocolVersion
	s.params = maps.Clone(startup.Parameters)
	s.log = s.log.With("user", s.User(), "database", s.Database())

	if e := refuseReplication(startup.Parameters); e != nil {
		return e
	}
	ok, reason := s.srv.admit()
	if !ok {
		if reason == EndDraining {
			return &ending{reason: reason, rejected: "draining", final: fatal(codeAdminShutdown, "pgmoat is shutting down")}
		}
		return &ending{reason: reason, rejected: "max_connections", final: fatal(codeTooManyConnections, "sorry, too many clients already")}
	}
	*admitted = true

	if e := s.connectUpstream(startup); e != nil {
		return e
	}
	if e := s.authenticate(); e != nil {
		return e
	}
	s.endStartup()
	return s.relay()
}

// writeFinal sends the last message of a session to the client.
func (s *ClientSession) writeFinal(msg *pgproto3.ErrorResponse) {
	s.cliMu.Lock()
	defer s.cliMu.Unlock()
	s.connMu.Lock()
	c := s.client
	s.connMu.Unlock()
	c.SetWriteDeadline(time.Now().Add(finalWriteGrace))
	buf, err := msg.Encode(nil)
	if err != nil {
		return
	}
	if _, err := s.cliW.Write(buf); err == nil {
		s.cliW.Flush()
	}
}

// lingerTime and lingerBytes bound how long and how much of a refused
// client's unread input lingerClient drains.
const (
	lingerTime  = 500 * time.Millisecond
	lingerBytes = 1 << 20
)

// lingerClient ends the client's side of a session refused for a protocol
// violation the way a lingering close does: pgmoat stops writing (FIN),
// then reads and drops what the client still sends, for a short while.
// The client has usually sent more than pgmoat read (the rest of an
// oversized message); closing a socket with unread input makes the kernel
// reset the connection, and a client still writing would then lose the
// FATAL error that says why.
func (s *ClientSession) lingerClient() {
	s.connMu.Lock()
	c := s.client
	s.connMu.Unlock()
	cw, ok := c.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		return
	}
	c.SetReadDeadline(time.Now().Add(lingerTime))
	buf := make([]byte, 32<<10)
	for n := 0; n < lingerBytes; {
		k, err := c.Read(buf)
		n += k
		if err != nil {
			return
		}
	}
}

func (s *ClientSession) closeConns() {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	s.stopped = true
	if s.client != nil {
		s.client.Close()
	}
	if s.server != nil {
		s.server.Close()
	}
}
