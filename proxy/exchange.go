package proxy

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgproto3"
)

// An Exchange is a run of requests that pgmoat sends to the server on the
// session's upstream connection while the client waits: the Interceptor's
// way to run statements of its own next to the client's (a snapshot
// before and after a guarded statement, a savepoint, a COMMIT) and to
// choose, request by request, what the client sees of the replies.
//
// It may only be used from Intercept, on the session's client→server
// goroutine: nothing else is sent to the server meanwhile, so the replies
// come in order after those of whatever the client sent before. The
// server→client goroutine routes each reply as its request's ReplyMode
// says. No ReadyForQuery of an exchanged request reaches the client: the
// Interceptor sends the one the client expects (SendToClient) once it
// knows the outcome.
type Exchange struct {
	s    *ClientSession
	reqs []*ExchangeReply
	msgs []pgproto3.FrontendMessage
}

// ReplyMode says what happens to the server's reply to an exchanged
// request.
type ReplyMode uint8

const (
	// ReplyHide drops the reply; errors, command tags and the transaction
	// status are still recorded in the ExchangeReply.
	ReplyHide ReplyMode = iota
	// ReplyCollect keeps the reply's rows for the Interceptor (Rows); the
	// client sees nothing.
	ReplyCollect
	// ReplyBuffer holds the reply (rows, notices, command tags, errors) for
	// the client until Release or Discard. Past the buffer limit what is
	// held is written to the client and the rest streams to it as it comes
	// (Streamed), so a large result never costs more than the limit.
	ReplyBuffer
	// ReplyPass writes the reply to the client as it comes.
	ReplyPass
)

// ExchangeReply is what the server answered to one exchanged request. Its
// fields may be read once Run has returned.
type ExchangeReply struct {
	Mode ReplyMode
	// Err is the first ErrorResponse of the reply, copied.
	Err *pgproto3.ErrorResponse
	// Tags are the CommandComplete tags, one per statement that completed.
	Tags []string
	// Notices are the SQLSTATEs of the reply's NoticeResponses (the
	// warning 25001 of a BEGIN inside a transaction block, say).
	Notices []string
	// Rows are the DataRows' values (ReplyCollect), copied; NULL is nil.
	Rows [][][]byte
	// TxStatus is the status byte of the reply's ReadyForQuery (Query,
	// Sync), 0 for other requests.
	TxStatus byte
	// Skipped says the server skipped the request after an earlier error
	// (extended protocol).
	Skipped bool
	// Streamed says a ReplyBuffer reply outgrew the buffer and went to the
	// client as it came.
	Streamed bool
	// OwnError, set before Run, says the reply's errors are pgmoat's own
	// (a refusal it makes the server raise): the client gets them without
	// the fields that describe where in the server they were raised.
	OwnError bool

	buf      []byte
	limit    int
	done     chan struct{}
	finished bool // done is closed (only the server→client goroutine closes it)
	released bool
}

// finish marks the reply complete.
func (r *ExchangeReply) finish() {
	if !r.finished {
		r.finished = true
		close(r.done)
	}
}

// exchangeBufferLimit bounds what a ReplyBuffer request holds back.
const exchangeBufferLimit = 1 << 20

// FlushServer sends the server what the session has forwarded and still
// holds in its buffer (the relay writes a read's messages at once, after
// the last). An Interceptor that waits for the server's answer to a
// message it let through calls it first: the answer may depend on
// messages still in the buffer. Like an Exchange, it is for Intercept's
// goroutine.
func (s *ClientSession) FlushServer() error { return s.flushServer() }

// NewExchange starts an exchange on the session's upstream connection.
func (s *ClientSession) NewExchange() *Exchange { return &Exchange{s: s} }

// Add queues msg with mode for what the client sees of its reply. Flush
// (which the server does not answer) may be added to make the server send
// what it buffered; its ExchangeReply is complete at once.
func (x *Exchange) Add(msg pgproto3.FrontendMessage, mode ReplyMode) *ExchangeReply {
	r := &ExchangeReply{Mode: mode, limit: exchangeBufferLimit, done: make(chan struct{})}
	x.reqs = append(x.reqs, r)
	x.msgs = append(x.msgs, msg)
	return r
}

// errExchangeEnded is Run's error when the session's relay stopped before
// the server answered.
var errExchangeEnded = errors.New("proxy: the session ended during an exchange")

// Run sends the queued requests in one write and waits until the server
// has answered every one (or skipped it), the session ends, or ctx is
// done. After an error the session cannot be trusted to be in step with
// the server: the Interceptor should end it.
func (x *Exchange) Run(ctx context.Context) error {
	s := x.s
	if s.replies == nil {
		return errors.New("proxy: exchanges need an interceptor")
	}
	var buf []byte
	for i, m := range x.msgs {
		var err error
		start := len(buf)
		if buf, err = m.Encode(buf); err != nil {
			return err
		}
		typ := buf[start]
		if k := replyKindOf(typ); k != replyNone {
			if typ == 'Q' || typ == 'S' || typ == 'F' {
				s.inFlight.Add(1)
			}
			s.replies.push(pendingReply{replyHead: replyHead{kind: k, hide: true}, ex: x.reqs[i]})
		} else {
			x.reqs[i].finish()
		}
	}
	x.msgs = nil
	if _, err := s.srvW.Write(buf); err != nil {
		return &writeError{err}
	}
	if err := s.flushServer(); err != nil {
		return err
	}
	for _, r := range x.reqs {
		select {
		case <-r.done:
		case <-s.relayDone:
			return errExchangeEnded
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
	return nil
}

// Release writes what a ReplyBuffer request held back to the client.
func (x *Exchange) Release(r *ExchangeReply) error {
	if r.released || len(r.buf) == 0 {
		r.released = true
		return nil
	}
	r.released = true
	s := x.s
	s.cliMu.Lock()
	defer s.cliMu.Unlock()
	_, err := s.cliW.Write(r.buf)
	r.buf = nil
	if err == nil {
		err = s.cliW.Flush()
	}
	return err
}

// Discard drops what a ReplyBuffer request held back.
func (x *Exchange) Discard(r *ExchangeReply) { r.buf, r.released = nil, true }

// exchangeStep handles one server message that answers an exchanged
// request: it records what the ExchangeReply keeps and sends the client
// what the mode lets through. The caller holds s.cliMu.
// ends reports that the message is the last of the request's reply.
func (c *serverToClient) exchangeStep(r *ExchangeReply, ends bool, typ byte, n int) error {
	s := c.s
	pass := r.Mode == ReplyPass || r.Mode == ReplyBuffer && r.Streamed
	decode := typ == 'Z' || typ == 'E' || typ == 'C' || typ == 'N' || typ == 'D' && r.Mode == ReplyCollect
	switch {
	case decode:
		msg, err := s.srvR.message(n)
		if err != nil {
			return err
		}
		body := msg[5:]
		switch typ {
		case 'Z':
			if n != 1 {
				return &protocolError{msg: "malformed ReadyForQuery from server"}
			}
			s.tx.Store(uint32(body[0]))
			s.inFlight.Add(-1)
			r.TxStatus = body[0]
			msg = nil // never the client's
		case 'E':
			c.noteError(body)
			if r.OwnError {
				msg = ownErrorResponse(msg)
			}
			if r.Err == nil {
				var er pgproto3.ErrorResponse
				if err := er.Decode(body); err != nil {
					return &protocolError{msg: "malformed ErrorResponse from server"}
				}
				r.Err = &er // Decode copies the strings
			}
		case 'C':
			var cc pgproto3.CommandComplete
			if err := cc.Decode(body); err == nil {
				r.Tags = append(r.Tags, string(cc.CommandTag))
			}
		case 'N':
			var nr pgproto3.NoticeResponse
			if err := nr.Decode(body); err == nil {
				r.Notices = append(r.Notices, nr.Code)
			}
		case 'D':
			if r.Mode == ReplyCollect {
				var dr pgproto3.DataRow
				if err := dr.Decode(body); err != nil {
					return &protocolError{msg: "malformed DataRow from server"}
				}
				row := make([][]byte, len(dr.Values))
				for i, v := range dr.Values {
					if v != nil {
						row[i] = append([]byte{}, v...)
					}
				}
				r.Rows = append(r.Rows, row)
			}
		}
		if msg != nil {
			if err := c.exchangeOut(r, msg, pass); err != nil {
				return err
			}
		}
	default:
		switch {
		case pass:
			if err := s.srvR.relay(s.cliW, n); err != nil {
				return err
			}
		case r.Mode == ReplyBuffer && 5+n <= bufSize:
			msg, err := s.srvR.message(n)
			if err != nil {
				return err
			}
			if err := c.exchangeOut(r, msg, false); err != nil {
				return err
			}
		case r.Mode == ReplyBuffer:
			// Too large to hold: what was held goes first, then this.
			if err := c.spill(r); err != nil {
				return err
			}
			if err := s.srvR.relay(s.cliW, n); err != nil {
				return err
			}
		default:
			if err := s.srvR.discard(n); err != nil {
				return err
			}
		}
	}
	if ends {
		r.finish()
	}
	return nil
}

// exchangeOut sends msg to the client (pass) or holds it (ReplyBuffer);
// other modes drop it.
func (c *serverToClient) exchangeOut(r *ExchangeReply, msg []byte, pass bool) error {
	switch {
	case pass:
		if _, err := c.s.cliW.Write(msg); err != nil {
			return &writeError{err}
		}
	case r.Mode == ReplyBuffer:
		if len(r.buf)+len(msg) > r.limit {
			if err := c.spill(r); err != nil {
				return err
			}
			if _, err := c.s.cliW.Write(msg); err != nil {
				return &writeError{err}
			}
			return nil
		}
		r.buf = append(r.buf, msg...)
	}
	return nil
}

// spill writes what a ReplyBuffer request held to the client and makes the
// rest of its reply stream.
func (c *serverToClient) spill(r *ExchangeReply) error {
	r.Streamed = true
	if len(r.buf) > 0 {
		if _, err := c.s.cliW.Write(r.buf); err != nil {
			return &writeError{err}
		}
		r.buf = nil
	}
	return nil
}

// skippedExchange completes an exchanged request the server skipped.
func skippedExchange(e pendingReply) {
	if e.ex != nil && !e.ex.finished {
		e.ex.Skipped = true
		e.ex.finish()
	}
}

// String describes a reply for logs and errors.
func (r *ExchangeReply) String() string {
	if r.Err != nil {
		return fmt.Sprintf("%s %s: %s", r.Err.Severity, r.Err.Code, r.Err.Message)
	}
	return fmt.Sprintf("%v", r.Tags)
}
