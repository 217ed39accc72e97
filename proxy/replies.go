package proxy

import (
	"bytes"
	"encoding/binary"
	"sync"
)

// replyKind is a frontend message that the server answers.
type replyKind uint8

const (
	replyNone replyKind = iota
	replyParse
	replyBind
	replyClose
	replyDescribe
	replyExecute
	replySync
	replyQuery
	replyFunctionCall
)

// replyKindOf returns the kind of reply a frontend message type causes, or
// replyNone (Flush, CopyData, CopyDone, CopyFail, Terminate).
func replyKindOf(typ byte) replyKind {
	switch typ {
	case 'P':
		return replyParse
	case 'B':
		return replyBind
	case 'C':
		return replyClose
	case 'D':
		return replyDescribe
	case 'E':
		return replyExecute
	case 'S':
		return replySync
	case 'Q':
		return replyQuery
	case 'F':
		return replyFunctionCall
	}
	return replyNone
}

// pendingReply is one message sent to the server whose reply has not
// finished arriving.
type pendingReply struct {
	kind replyKind
	hide bool           // the client did not send it: keep its reply (errors aside) from the client
	own  bool           // its errors are pgmoat's own (Injected.OwnError)
	tag  any            // MessageVerdict.Tag of the message, for the ReplyObserver
	ex   *ExchangeReply // sent by an Exchange, which decides where its reply goes
}

// replyQueue is the FIFO of outstanding replies that lets pgmoat send the
// server messages of its own (the DO blocks that raise a refusal in place
// of a refused statement) and keep their replies from the client. The client→server side pushes one entry per
// message it forwards or injects; the server→client side attributes each
// server message to the oldest entry with route. It is only used when the
// session has an Interceptor: a plain relay never pays for it.
//
// Attribution follows the protocol: ParseComplete, BindComplete,
// CloseComplete, NoData, a Describe's RowDescription and an Execute's
// CommandComplete, EmptyQueryResponse or PortalSuspended end their entry;
// ReadyForQuery ends a Sync, Query or FunctionCall entry; an ErrorResponse
// ends an extended-protocol entry, and since the server then skips
// everything up to Sync, the skipped entries are dropped when that Sync's
// ReadyForQuery arrives. NoticeResponse, NotificationResponse and
// ParameterStatus belong to no entry.
type replyQueue struct {
	mu   sync.Mutex
	q    []pendingReply
	head int

	// cur is the entry the server is answering; only the server→client
	// goroutine touches it, so most messages cost no lock.
	cur    pendingReply
	hasCur bool
}

func (q *replyQueue) push(e pendingReply) {
	q.mu.Lock()
	if q.head > 64 && q.head*2 > len(q.q) {
		n := copy(q.q, q.q[q.head:])
		q.q = q.q[:n]
		q.head = 0
	}
	q.q = append(q.q, e)
	q.mu.Unlock()
}

func (q *replyQueue) pop() (pendingReply, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.head == len(q.q) {
		q.q, q.head = q.q[:0], 0
		return pendingReply{}, false
	}
	e := q.q[q.head]
	if e.tag != nil || e.ex != nil {
		q.q[q.head] = pendingReply{} // keep no tag or exchange alive
	}
	q.head++
	if q.head == len(q.q) {
		// Empty: the next requests go to the front again, on the cache
		// lines this session's requests used last time, instead of
		// marching through the array until the compaction in push.
		q.q, q.head = q.q[:0], 0
	}
	return e, true
}

// route attributes one server message (by type) to its request and reports
// whether the client must not see it and the request's tag. skipped, when
// not nil, is called with the tag of every tagged request the server
// skipped after an error.
func (q *replyQueue) route(typ byte, skipped func(tag any)) (hide bool, tag any) {
	r := q.routeReply(typ, func(e pendingReply) {
		if e.tag != nil && skipped != nil {
			skipped(e.tag)
		}
	})
	return r.hide, r.tag
}

// routed is where one server message belongs.
type routed struct {
	pendingReply      // the request it answers (zero when none)
	ends         bool // it is the last message of that request's reply
}

// routeReply attributes one server message (by type) to its request.
// skipped, when not nil, is called with every request the server skipped
// after an error. NoticeResponse belongs to the request being answered
// only when that is an exchange's (an exchange decides where its notices
// go); otherwise, like NotificationResponse and ParameterStatus, to none.
func (q *replyQueue) routeReply(typ byte, skipped func(pendingReply)) routed {
	switch typ {
	case 'A', 'S':
		return routed{}
	case 'N':
		if !q.hasCur {
			q.cur, q.hasCur = q.pop()
		}
		if q.hasCur && q.cur.ex != nil {
			return routed{pendingReply: q.cur}
		}
		return routed{}
	}
	if !q.hasCur {
		if q.cur, q.hasCur = q.pop(); !q.hasCur {
			return routed{} // nothing outstanding: not ours to judge
		}
	}
	e := q.cur
	switch typ {
	case 'Z':
		for e.kind != replySync && e.kind != replyQuery && e.kind != replyFunctionCall {
			if skipped != nil {
				skipped(e)
			}
			next, ok := q.pop() // skipped by the server after an error
			if !ok {
				break
			}
			e = next
		}
		q.hasCur = false
		return routed{pendingReply: e, ends: true}
	case 'E':
		switch e.kind {
		case replyParse, replyBind, replyClose, replyDescribe, replyExecute:
			q.hasCur = false
			q.skipExchanged()
			return routed{pendingReply: pendingReply{kind: e.kind, own: e.own, tag: e.tag, ex: e.ex}, ends: true}
		}
		return routed{pendingReply: pendingReply{kind: e.kind, own: e.own, tag: e.tag, ex: e.ex}}
	case '1', '2', '3', 'n':
		q.hasCur = false
		return routed{pendingReply: e, ends: true}
	case 'T':
		if e.kind == replyDescribe {
			q.hasCur = false
			return routed{pendingReply: e, ends: true}
		}
	case 'C', 'I', 's':
		if e.kind == replyExecute {
			q.hasCur = false
			return routed{pendingReply: e, ends: true}
		}
	}
	return routed{pendingReply: e}
}

// skipExchanged marks the exchanged requests the server will skip after
// an error in the extended protocol (those up to the next Sync) as
// skipped at once: an Exchange waiting for them must not wait for a Sync
// that only the client will send. They stay queued, so that the Sync's
// ReadyForQuery still finds them.
func (q *replyQueue) skipExchanged() {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, e := range q.q[q.head:] {
		if e.kind == replySync || e.kind == replyQuery || e.kind == replyFunctionCall {
			return
		}
		skippedExchange(e)
	}
}

// serverOnlyFields are the ErrorResponse fields that describe where in the
// server an error was raised rather than the error: for a refusal pgmoat
// raises through a DO block, PL/pgSQL's context line, pl_exec.c and its
// line and routine, and an internal query and position.
var serverOnlyFields = [256]bool{'W': true, 'F': true, 'L': true, 'R': true, 'q': true, 'p': true}

// ownErrorResponse returns the ErrorResponse message msg (type byte and
// length included) without serverOnlyFields. A message it cannot read is
// returned unchanged.
func ownErrorResponse(msg []byte) []byte {
	if len(msg) < 6 || msg[0] != 'E' {
		return msg
	}
	out := make([]byte, 5, len(msg))
	out[0] = 'E'
	body := msg[5:]
	for len(body) > 0 && body[0] != 0 {
		end := bytes.IndexByte(body[1:], 0)
		if end < 0 {
			return msg
		}
		field := body[:end+2]
		if !serverOnlyFields[field[0]] {
			out = append(out, field...)
		}
		body = body[end+2:]
	}
	out = append(out, 0)
	binary.BigEndian.PutUint32(out[1:5], uint32(len(out)-1))
	return out
}
