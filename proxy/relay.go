package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"

	"github.com/jackc/pgx/v5/pgproto3"
)

// errClientTerminated ends the client→server copier after it forwarded the
// client's Terminate.
var errClientTerminated = errors.New("client sent Terminate")

// errHandoff is a step's way of saying that the message needs the
// blocking path; nothing of it was consumed.
var errHandoff = errors.New("proxy: message needs the goroutine relay")

// interceptorError is an Interceptor failure other than a malformed
// message; the session ends with FATAL XX000.
type interceptorError struct{ err error }

func (e *interceptorError) Error() string { return "interceptor: " + e.err.Error() }
func (e *interceptorError) Unwrap() error { return e.err }

// copyEnd is what a copier reports when it stops: which one, and why.
type copyEnd struct {
	fromClient bool // the client→server copier
	err        error
}

func (e *copyEnd) Error() string { return e.err.Error() }
func (e *copyEnd) Unwrap() error { return e.err }

// relay runs the steady state: one copier per direction. The first to stop
// ends the session: the other is unblocked (deadlines, not Close, so the
// client can still be told why), and once both have stopped, the client
// gets its final error and the server its Terminate as the reason calls
// for.
func (s *ClientSession) relay() *ending {
	errc := make(chan error, 2)
	c2s := &clientToServer{s: s}
	s2c := &serverToClient{s: s}
	s2c.obs, _ = s.icpt.(ReplyObserver)
	var first *copyEnd
	if lc := s.enterLoop(c2s, s2c); lc != nil {
		first = s.leaveLoop(lc)
	}
	if first == nil {
		if s.replies != nil {
			s.replies.share() // before the copiers start, so they see it
		}
		g := s.srv.met.RelaySessions.WithLabelValues("goroutines")
		g.Inc()
		defer g.Dec()
		go c2s.run(errc)
		go s2c.run(errc)
		first = (<-errc).(*copyEnd)
		s.stopIO()
		<-errc
	} else {
		s.stopIO()
	}

	if s2c.midMessage {
		s.clientDirty.Store(true)
	}
	e := s.relayEnding(first)
	switch e.reason {
	case EndShutdown:
		if s.inFlight.Load() > 0 && s.pid != 0 {
			// pgmoat is the one ending the session: stop the work it
			// started too, as a server shutdown would, rather than
			// leave it running for a client that is gone.
			ctx, cancel := context.WithTimeout(context.Background(), s.srv.cfg.Limits.ConnectTimeout.Std())
			err := s.srv.upstream.cancel(ctx, &pgproto3.CancelRequest{ProcessID: s.pid, SecretKey: s.secret})
			cancel()
			if err != nil {
				s.log.Warn("cancelling the running query at shutdown failed", "err", err)
			}
		}
		fallthrough
	case EndClientDisconnect, EndProtocolViolation, EndInterceptorError, EndRefused:
		if !c2s.midMessage {
			// Tell the server, so its backend ends now rather than
			// when TCP notices. (The message that broke the rules was
			// not forwarded.)
			s.srvW.Write([]byte{'X', 0, 0, 0, 4})
			s.srvW.Flush()
		}
	}
	return e
}

// relayEnding classifies the end of the steady state from the first
// copier to stop.
func (s *ClientSession) relayEnding(first *copyEnd) *ending {
	err := first.err
	if s.shutdownKilled() {
		return shutdownEnding()
	}
	if er := s.serverFatal.Load(); er != nil {
		// The server said why it closed (pg_terminate_backend,
		// idle_session_timeout, ...) and the client has seen it.
		return &ending{reason: EndServerFatal, err: fmt.Errorf("server: %s %s: %s", er.Severity, er.Code, er.Message)}
	}
	var (
		pe *protocolError
		re *refusedError
		ie *interceptorError
		we *writeError
	)
	switch {
	case errors.Is(err, errClientTerminated):
		return &ending{reason: EndClientTerminate}
	case errors.As(err, &pe):
		if !first.fromClient {
			return upstreamProtocolEnding(err)
		}
		return &ending{reason: EndProtocolViolation, err: err, final: fatal(codeProtocolViolation, pe.msg)}
	case errors.As(err, &re):
		return &ending{reason: EndRefused, err: err, final: re.resp}
	case errors.As(err, &ie):
		return &ending{reason: EndInterceptorError, err: err,
			final: fatal(codeInternalError, "pgmoat could not check a message and closed the session")}
	case first.fromClient == errors.As(err, &we):
		// Either the client→server copier failed to write, or the
		// server→client copier failed to read: the upstream is gone.
		if s.clientTerminated.Load() {
			return &ending{reason: EndClientTerminate}
		}
		if errors.Is(err, errShortMessage) {
			return upstreamProtocolEnding(err)
		}
		return &ending{reason: EndUpstreamLost, err: upstreamCause(err),
			final: fatal(codeConnectionFailure, "terminating connection: upstream connection lost")}
	}
	return &ending{reason: EndClientDisconnect, err: clientCause(err)}
}

func upstreamCause(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errors.New("upstream closed the connection")
	}
	return err
}

func clientCause(err error) error {
	switch {
	case errors.Is(err, io.EOF):
		return nil // a clean close without Terminate
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errors.New("client closed the connection inside a message")
	case errors.Is(err, net.ErrClosed), errors.Is(err, os.ErrDeadlineExceeded):
		return nil
	}
	return err
}

// clientToServer is the copier from the client to the server. It frames
// every message, enforces limits.max_message_size, and either relays the
// bytes as they are (no interceptor, or CopyData) or hands each message to
// the interceptor.
type clientToServer struct {
	// What every message reads or writes comes first, on one cache
	// line: the struct is padded to 128 bytes, a size class whose
	// objects start on one.
	s          *ClientSession
	discarding bool // dropping messages until Sync (MessageVerdict.DiscardUntilSync)
	midMessage bool // a message to the server was cut short
	// msg is the message the Interceptor is asked about: a field rather
	// than a local, which would escape through the interface call and
	// cost an allocation per message.
	msg ClientMessage

	pending []byte // bytes for the server the event loop could not write; sent first
	scratch []byte
	_       [16]byte
}

func (c *clientToServer) run(errc chan<- error) { errc <- &copyEnd{fromClient: true, err: c.copy()} }

func (c *clientToServer) copy() error {
	r := c.s.cliR
	if p := c.pending; len(p) > 0 {
		c.pending = nil
		if _, err := c.s.srvW.w.Write(p); err != nil {
			return &writeError{err}
		}
	}
	for {
		typ, n, err := r.next()
		if err != nil {
			if errors.Is(err, errShortMessage) {
				return &protocolError{msg: err.Error()}
			}
			return err
		}
		if err := c.step(typ, n, false); err != nil {
			return err
		}
	}
}

// step handles one message whose header next (or the event loop) has
// read. In the event loop (inLoop) the whole message is in the buffer and
// nothing may block: the Interceptor is asked through TryIntercept, and
// errHandoff, with the message not consumed, says it needs the blocking
// path.
func (c *clientToServer) step(typ byte, n int, inLoop bool) error {
	s := c.s
	r := s.cliR
	if !steadyStateTypes[typ] {
		return &protocolError{msg: fmt.Sprintf("invalid frontend message type %q", typ)}
	}
	if limit := int(s.srv.cfg.Limits.MaxMessageSize); n > limit {
		return &protocolError{msg: fmt.Sprintf("message of %d bytes exceeds pgmoat's limit of %d bytes (limits.max_message_size)", n+4, limit)}
	}
	switch {
	case typ == 'X':
		s.clientTerminated.Store(true)
		if err := r.relay(s.srvW, n); err != nil {
			return err
		}
		if err := s.flushServer(); err != nil {
			return err
		}
		return errClientTerminated
	case c.discarding && typ != 'S':
		return r.discard(n)
	case s.icpt == nil || typ == 'd':
		if typ == 'Q' || typ == 'S' || typ == 'F' {
			s.inFlight.Add(1)
		}
		if s.replies != nil {
			s.replies.push(pendingReply{replyHead: replyHead{kind: replyKindOf(typ)}})
		}
		if inLoop {
			return r.relayInPlace(s.srvW, n)
		}
		c.midMessage = true
		if err := r.relay(s.srvW, n); err != nil {
			return err
		}
		c.midMessage = false
		return nil
	}
	// The Sync that ends a discarded run goes to the Interceptor too: it
	// may have a transaction of its own to end there.
	c.discarding = false
	if inLoop {
		return c.tryIntercept(typ, n)
	}
	return c.intercept(typ, n)
}

// tryIntercept is intercept in the event loop: the message is whole in the
// buffer, and it is consumed only when the Interceptor decided without
// blocking.
func (c *clientToServer) tryIntercept(typ byte, n int) error {
	s := c.s
	r := s.cliR
	raw := r.buf[r.r : r.r+5+n : r.r+5+n]
	c.msg = ClientMessage{Type: typ, Raw: raw, dec: &s.dec}
	v, ok := s.fast.TryIntercept(s, &c.msg)
	if !ok {
		return errHandoff
	}
	at := r.r
	r.r += 5 + n
	return c.carryOut(typ, raw, at, v)
}

// intercept passes one whole message through the interceptor and carries
// out its verdict.
func (c *clientToServer) intercept(typ byte, n int) error {
	s := c.s
	if size := int64(5 + n); size > int64(len(s.cliR.small)) {
		// A buffer of its own, counted against limits.message_memory
		// until the verdict is carried out (a hold keeps it meanwhile).
		if err := s.srv.budget.acquire(s.ctx, size); err != nil {
			return err
		}
		defer s.srv.budget.release(size)
	}
	raw, owned, err := s.cliR.messageOwned(n)
	if err != nil {
		return err
	}
	c.msg = ClientMessage{Type: typ, Raw: raw, dec: &s.dec, owned: owned}
	v, err := s.icpt.Intercept(s.ctx, s, &c.msg)
	// A message in a buffer of its own (up to limits.max_message_size)
	// must not stay reachable from the session once it is relayed.
	c.msg = ClientMessage{}
	if err != nil {
		var (
			pe *protocolError
			re *refusedError
		)
		switch {
		case errors.As(err, &pe):
			return pe
		case errors.As(err, &re):
			return re
		}
		return &interceptorError{err}
	}
	return c.carryOut(typ, raw, -1, v)
}

// carryOut does what the Interceptor's verdict on a message says. at >= 0
// says that raw is still in the read buffer, at that offset, and stays
// there until the server's writer is flushed (the event loop): forwarded,
// it is queued in place.
func (c *clientToServer) carryOut(typ byte, raw []byte, at int, v MessageVerdict) error {
	s := c.s
	switch v.Action {
	case Forward:
		s.pushReplyTag(typ, false, v.Tag)
		var err error
		if at >= 0 {
			err = s.srvW.writeRef(s.cliR, at, at+len(raw))
		} else {
			_, err = s.srvW.Write(raw)
		}
		if err != nil {
			return &writeError{err}
		}
	case Drop:
	case Replace:
		var replacement []Injected
		if v.Rewrite != nil {
			replacement = v.Rewrite.Replacement
		}
		for _, inj := range replacement {
			var err error
			c.scratch, err = inj.Msg.Encode(c.scratch[:0])
			if err != nil {
				return &interceptorError{err}
			}
			s.pushReply(pendingReply{replyHead: replyHead{kind: replyKindOf(c.scratch[0]), hide: inj.HideReply, own: inj.OwnError}}, c.scratch[0])
			if _, err := s.srvW.Write(c.scratch); err != nil {
				return &writeError{err}
			}
		}
		if cap(c.scratch) > bufSize {
			c.scratch = nil
		}
	default:
		return &interceptorError{fmt.Errorf("unknown action %d", v.Action)}
	}
	if v.DiscardsUntilSync() {
		c.discarding = true
	}
	return nil
}

// pushReply records a message sent to the server whose reply the
// server→client copier will attribute.
func (s *ClientSession) pushReply(e pendingReply, typ byte) {
	if typ == 'Q' || typ == 'S' || typ == 'F' {
		s.inFlight.Add(1)
	}
	if e.kind != replyNone {
		s.replies.push(e)
	}
}

func (s *ClientSession) pushReplyTag(typ byte, hide bool, tag any) {
	s.pushReply(pendingReply{replyHead: replyHead{kind: replyKindOf(typ), hide: hide}, tag: tag}, typ)
}

// serverToClient is the copier from the server to the client. It relays
// the raw bytes of every message and decodes only what the session tracks:
// ReadyForQuery (transaction status), ParameterStatus, and ErrorResponse
// (to know a FATAL from a lost connection). It holds the client write lock
// while it has unflushed output, and releases it, after flushing, whenever
// it is about to wait for the server between two messages, so
// SendToClient never lands inside a relayed message.
type serverToClient struct {
	// What every message reads comes first, on one cache line: the
	// struct is padded to 128 bytes, a size class whose objects start
	// on one.
	s          *ClientSession
	obs        ReplyObserver // the Interceptor, when it observes replies
	err        error         // an observer error raised while routing
	held       bool          // holds s.cliMu
	inMessage  bool          // between reading a header and finishing its message
	midMessage bool          // a large message to the client was cut short

	pending []byte // bytes for the client the event loop could not write; sent first
	_       [56]byte
}

func (c *serverToClient) run(errc chan<- error) {
	defer c.s.endRelay()
	err := c.copy()
	if c.held {
		c.s.cliMu.Unlock()
		c.held = false
	}
	errc <- &copyEnd{fromClient: false, err: err}
}

func (c *serverToClient) onBlock() error {
	if !c.held {
		return nil
	}
	var err error
	if c.s.cliW.Buffered() > 0 {
		err = c.s.cliW.Flush()
	}
	if !c.inMessage {
		c.s.cliMu.Unlock()
		c.held = false
	}
	if err != nil {
		return &writeError{err}
	}
	return nil
}

func (c *serverToClient) copy() error {
	s := c.s
	r := s.srvR
	r.onBlock = c.onBlock
	if p := c.pending; len(p) > 0 {
		c.pending = nil
		s.cliMu.Lock()
		_, err := s.cliW.w.Write(p)
		s.cliMu.Unlock()
		if err != nil {
			return &writeError{err}
		}
	}
	for {
		c.inMessage = false
		typ, n, err := r.next()
		if err != nil {
			return err
		}
		c.inMessage = true
		if !c.held {
			s.cliMu.Lock()
			c.held = true
		}
		if err := c.step(typ, n, false); err != nil {
			return err
		}
	}
}

// step relays one server message whose header next (or the event loop)
// has read, tracking what the session follows. The caller holds s.cliMu.
func (c *serverToClient) step(typ byte, n int, inLoop bool) error {
	s := c.s
	r := s.srvR
	hide, own := false, false
	var tag any
	if s.replies != nil {
		e, ends := s.replies.routeReply(typ, c.skippedReply)
		if c.err != nil {
			return c.err
		}
		if e.ex != nil {
			return c.exchangeStep(e.ex, ends, typ, n)
		}
		hide, tag, own = e.hide, e.tag, e.own
	}
	kind := typ
	if typ == 'C' && tag == nil {
		kind = 0 // an untagged CommandComplete streams like any other message
	}
	if tag != nil && (typ == '1' || typ == '2' || typ == '3') {
		// ParseComplete, BindComplete, CloseComplete: bodiless, relayed
		// as below.
		if err := c.observe(tag, typ, nil); err != nil {
			return err
		}
	}
	switch kind {
	case 'Z':
		msg, err := r.message(n)
		if err != nil {
			return err
		}
		if n != 1 {
			return &protocolError{msg: "malformed ReadyForQuery from server"}
		}
		s.tx.Store(uint32(msg[5]))
		s.inFlight.Add(-1)
		if err := c.observe(tag, typ, msg[5:]); err != nil {
			return err
		}
		if !hide {
			if err := c.send(msg, inLoop); err != nil {
				return err
			}
		}
	case 'E', 'S':
		msg, err := r.message(n)
		if err != nil {
			return err
		}
		if typ == 'S' {
			s.recordParameterStatus(msg[5:])
			tag = nil
		} else {
			c.noteError(msg[5:])
			if own {
				msg = ownErrorResponse(msg)
				inLoop = false // not in the read buffer
			}
		}
		if typ == 'S' || tag != nil {
			if err := c.observe(tag, typ, msg[5:]); err != nil {
				return err
			}
		}
		if !hide {
			if err := c.send(msg, inLoop); err != nil {
				return err
			}
		}
	case 'C':
		// Only a tagged request's CommandComplete is assembled for
		// the observer; the rest stream as below.
		msg, err := r.message(n)
		if err != nil {
			return err
		}
		if err := c.observe(tag, typ, msg[5:]); err != nil {
			return err
		}
		if !hide {
			if err := c.send(msg, inLoop); err != nil {
				return err
			}
		}
	default:
		if hide {
			return r.discard(n)
		}
		if inLoop {
			return r.relayInPlace(s.cliW, n)
		}
		c.midMessage = 5+n > bufSize
		if err := r.relay(s.cliW, n); err != nil {
			return err
		}
		c.midMessage = false
	}
	return nil
}

// send writes msg, the message just consumed from the server's read
// buffer (or a changed copy of it), to the client. inPlace, in the event
// loop, queues it where it is.
func (c *serverToClient) send(msg []byte, inPlace bool) error {
	s := c.s
	var err error
	if inPlace {
		r := s.srvR
		err = s.cliW.writeRef(r, r.r-len(msg), r.r)
	} else {
		_, err = s.cliW.Write(msg)
	}
	if err != nil {
		return &writeError{err}
	}
	return nil
}

// observe passes a server message to the ReplyObserver.
func (c *serverToClient) observe(tag any, typ byte, body []byte) error {
	if c.obs == nil {
		return nil
	}
	if err := c.obs.ServerMessage(c.s, tag, typ, body); err != nil {
		var re *refusedError
		if errors.As(err, &re) {
			return re
		}
		return &interceptorError{err}
	}
	return nil
}

// skippedReply handles a request the server skipped after an error.
func (c *serverToClient) skippedReply(e pendingReply) {
	skippedExchange(e)
	if e.tag != nil {
		c.skipped(e.tag)
	}
}

// skipped reports a tagged request the server skipped after an error.
func (c *serverToClient) skipped(tag any) {
	if err := c.observe(tag, 0, nil); err != nil && c.err == nil {
		c.err = err
	}
}

// noteError remembers a FATAL or PANIC error from the server: the server
// closes the connection after it, and the session then ends with the
// server's reason instead of "upstream connection lost".
func (c *serverToClient) noteError(body []byte) {
	var er pgproto3.ErrorResponse
	if er.Decode(body) != nil {
		return
	}
	sev := er.SeverityUnlocalized
	if sev == "" {
		sev = er.Severity
	}
	if sev == "FATAL" || sev == "PANIC" {
		c.s.serverFatal.Store(&er)
	}
}
