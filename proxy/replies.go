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
//
// It is three fields in four words, the small ones in a struct of their
// own: the compiler keeps a struct of at most four fields and four words
// in registers, and writes a larger one to memory and copies it at every
// call that passes or returns it; every message of a session with an
// Interceptor passes one (bench/README.md, "Optimisations").
type pendingReply struct {
	replyHead
	tag any            // MessageVerdict.Tag of the message, for the ReplyObserver
	ex  *ExchangeReply // sent by an Exchange, which decides where its reply goes
}

// replyHead is a pendingReply's word of small fields.
type replyHead struct {
	kind replyKind
	hide bool // the client did not send it: keep its reply (errors aside) from the client
	own  bool // its errors are pgmoat's own (Injected.OwnError)
}

// replyQueue is the FIFO of outstanding replies that lets pgmoat send the
// server messages of its own (the DO blocks that raise a refusal in place
// of a refused statement) and keep their replies from the client. The
// client→server side pushes one entry per message it forwards or injects;
// the server→client side attributes each server message to the oldest
// entry with route. It is only used when the session has an Interceptor: a
// plain relay never pays for it.
//
// Attribution follows the protocol: ParseComplete, BindComplete,
// CloseComplete, NoData, a Describe's RowDescription and an Execute's
// CommandComplete, EmptyQueryResponse or PortalSuspended end their entry;
// ReadyForQuery ends a Sync, Query or FunctionCall entry; an ErrorResponse
// ends an extended-protocol entry, and since the server then skips
// everything up to Sync, the skipped entries are dropped when that Sync's
// ReadyForQuery arrives. NoticeResponse, NotificationResponse and
// ParameterStatus belong to no entry.
//
// Both sides touch the queue for every message, in every session, so it
// is laid out to fit one cache line: an entry is one byte in a small ring
// (its kind and flags), and what few entries carry more (a tag, an
// exchange) keep that in the rarely used slow part, as do entries beyond
// the ring when a client pipelines deeper than it.
type replyQueue struct {
	// mu guards the ring and slow once shared is set: the relay runs
	// in two goroutines, one pushing and one popping. Until then one
	// goroutine at a time has the session (its own, then the event
	// loop's, handed over through the loop's channels), and an
	// uncontended lock would still cost two atomic instructions for
	// every message in each direction.
	mu         sync.Mutex
	shared     bool
	head, tail uint8 // positions in ring, free-running: tail-head entries
	ring       [replyRing]replyBits

	// cur is the entry the server is answering; only the server→client
	// goroutine touches it, so most messages cost no lock.
	hasCur bool
	cur    pendingReply

	slow *replySlow
}

// replyRing is how many entries the ring holds; 256 must be a multiple of
// it (head and tail wrap at 256).
const replyRing = 8

// replyBits is one queued entry in the ring.
type replyBits uint8

const (
	replyKindMask replyBits = 0x0f
	replyHidden   replyBits = 0x10 // pendingReply.hide
	replyOwn      replyBits = 0x20 // pendingReply.own
	replyCarries  replyBits = 0x40 // its tag and exchange are next in slow.extras
)

// replySlow is the part of the queue that plain requests do not use.
type replySlow struct {
	// extras are the tags and exchanges of the ring's entries marked
	// replyCarries, oldest first, from extraHead.
	extras    []replyExtra
	extraHead int
	// more are the entries pushed while the ring was full, or while
	// more was not empty: all younger than the ring's. From moreHead.
	more     []pendingReply
	moreHead int
}

type replyExtra struct {
	tag any
	ex  *ExchangeReply
}

func (q *replyQueue) slowPart() *replySlow {
	if q.slow == nil {
		q.slow = &replySlow{}
	}
	return q.slow
}

// share makes the queue take its lock from now on; the caller calls it
// before a second goroutine can reach the queue.
func (q *replyQueue) share() { q.shared = true }

func (q *replyQueue) lock() {
	if q.shared {
		q.mu.Lock()
	}
}

func (q *replyQueue) unlock() {
	if q.shared {
		q.mu.Unlock()
	}
}

func (q *replyQueue) push(e pendingReply) {
	q.lock()
	if q.tail-q.head == replyRing || q.slow != nil && q.slow.moreHead < len(q.slow.more) {
		sl := q.slowPart()
		sl.more = append(sl.more, e)
		q.unlock()
		return
	}
	b := replyBits(e.kind)
	if e.hide {
		b |= replyHidden
	}
	if e.own {
		b |= replyOwn
	}
	if e.tag != nil || e.ex != nil {
		b |= replyCarries
		sl := q.slowPart()
		sl.extras = append(sl.extras, replyExtra{e.tag, e.ex})
	}
	q.ring[q.tail%replyRing] = b
	q.tail++
	q.unlock()
}

func (q *replyQueue) pop() (pendingReply, bool) {
	q.lock()
	if q.head != q.tail {
		b := q.ring[q.head%replyRing]
		q.head++
		e := pendingReply{replyHead: replyHead{kind: replyKind(b & replyKindMask), hide: b&replyHidden != 0, own: b&replyOwn != 0}}
		if b&replyCarries != 0 {
			sl := q.slow
			x := sl.extras[sl.extraHead]
			sl.extras[sl.extraHead] = replyExtra{} // keep no tag or exchange alive
			if sl.extraHead++; sl.extraHead == len(sl.extras) {
				sl.extras, sl.extraHead = sl.extras[:0], 0
			}
			e.tag, e.ex = x.tag, x.ex
		}
		q.unlock()
		return e, true
	}
	if sl := q.slow; sl != nil && sl.moreHead < len(sl.more) {
		e := sl.more[sl.moreHead]
		sl.more[sl.moreHead] = pendingReply{}
		if sl.moreHead++; sl.moreHead == len(sl.more) {
			sl.more, sl.moreHead = sl.more[:0], 0
		}
		q.unlock()
		return e, true
	}
	q.unlock()
	return pendingReply{}, false
}

// each calls f with the queued entries, oldest first, until f returns
// false; the caller holds the queue's lock.
func (q *replyQueue) eachLocked(f func(pendingReply) bool) {
	x := 0
	for i := q.head; i != q.tail; i++ {
		b := q.ring[i%replyRing]
		e := pendingReply{replyHead: replyHead{kind: replyKind(b & replyKindMask), hide: b&replyHidden != 0, own: b&replyOwn != 0}}
		if b&replyCarries != 0 {
			ex := q.slow.extras[q.slow.extraHead+x]
			x++
			e.tag, e.ex = ex.tag, ex.ex
		}
		if !f(e) {
			return
		}
	}
	if q.slow != nil {
		for _, e := range q.slow.more[q.slow.moreHead:] {
			if !f(e) {
				return
			}
		}
	}
}

// route attributes one server message (by type) to its request and reports
// whether the client must not see it and the request's tag. skipped, when
// not nil, is called with the tag of every tagged request the server
// skipped after an error.
func (q *replyQueue) route(typ byte, skipped func(tag any)) (hide bool, tag any) {
	e, _ := q.routeReply(typ, func(e pendingReply) {
		if e.tag != nil && skipped != nil {
			skipped(e.tag)
		}
	})
	return e.hide, e.tag
}

// routeReply attributes one server message (by type) to its request, e
// (zero when none); ends reports that the message is the last of that
// request's reply.
// skipped, when not nil, is called with every request the server skipped
// after an error. NoticeResponse belongs to the request being answered
// only when that is an exchange's (an exchange decides where its notices
// go); otherwise, like NotificationResponse and ParameterStatus, to none.
func (q *replyQueue) routeReply(typ byte, skipped func(pendingReply)) (e pendingReply, ends bool) {
	switch typ {
	case 'A', 'S':
		return pendingReply{}, false
	case 'N':
		if !q.hasCur {
			q.cur, q.hasCur = q.pop()
		}
		if q.hasCur && q.cur.ex != nil {
			return q.cur, false
		}
		return pendingReply{}, false
	}
	if !q.hasCur {
		if q.cur, q.hasCur = q.pop(); !q.hasCur {
			return pendingReply{}, false // nothing outstanding: not ours to judge
		}
	}
	e = q.cur
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
		return e, true
	case 'E':
		e.hide = false // an error reaches the client, whoever sent the request
		switch e.kind {
		case replyParse, replyBind, replyClose, replyDescribe, replyExecute:
			q.hasCur = false
			q.skipExchanged()
			return e, true
		}
		return e, false
	case '1', '2', '3', 'n':
		q.hasCur = false
		return e, true
	case 'T':
		if e.kind == replyDescribe {
			q.hasCur = false
			return e, true
		}
	case 'C', 'I', 's':
		if e.kind == replyExecute {
			q.hasCur = false
			return e, true
		}
	}
	return e, false
}

// skipExchanged marks the exchanged requests the server will skip after
// an error in the extended protocol (those up to the next Sync) as
// skipped at once: an Exchange waiting for them must not wait for a Sync
// that only the client will send. They stay queued, so that the Sync's
// ReadyForQuery still finds them.
func (q *replyQueue) skipExchanged() {
	q.lock()
	defer q.unlock()
	q.eachLocked(func(e pendingReply) bool {
		if e.kind == replySync || e.kind == replyQuery || e.kind == replyFunctionCall {
			return false
		}
		skippedExchange(e)
		return true
	})
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
