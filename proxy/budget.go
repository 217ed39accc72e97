package proxy

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/prometheus/client_golang/prometheus"
)

// Large client messages and memory.
//
// A message that fits in a session's read buffer (bufSize) costs nothing
// more. A larger one that the Interceptor must see (a Query or Parse whose
// text it judges) is read whole into a buffer of its own: that buffer is
// the only copy (the enforcer reads the text in place, see
// ClientMessage.Text), so a message costs its size once. All sessions
// together may hold at most limits.message_memory of such buffers: a
// session whose message would pass it waits, without reading the message
// (TCP pushes back on the client), until others release theirs, for at
// most budgetWait; then it ends with FATAL 53200 (out_of_memory), never
// with pgmoat's memory exhausted. When the buffers of large messages are
// released, pgmoat returns the memory to the operating system
// (debug.FreeOSMemory, at most every freeOSEvery), so that one 60 MB query
// does not leave 60 MB of RSS behind.
const (
	budgetWait = 30 * time.Second
	// freeOSAfter is how much must have been released since the last
	// return of memory to the operating system to do it again.
	freeOSAfter = 8 << 20
	freeOSEvery = time.Second
	// freeOSDelay lets releases that come together (several sessions, or
	// the garbage of the same message) be returned at once.
	freeOSDelay = 100 * time.Millisecond
)

// messageBudget is limits.message_memory: a weighted semaphore, first
// come first served, so that a large message is not starved by smaller
// ones.
type messageBudget struct {
	limit  int64
	wait   time.Duration // budgetWait; tests shorten it
	gauge  prometheus.Gauge
	waited prometheus.Counter
	refuse prometheus.Counter

	mu      sync.Mutex
	used    int64
	waiters []*budgetWaiter
	freed   int64     // released since memory was last returned
	freeing bool      // a return is scheduled
	lastOS  time.Time // when memory was last returned
}

type budgetWaiter struct {
	n     int64
	ready chan struct{} // closed when granted
}

func newMessageBudget(limit int64, gauge prometheus.Gauge, waits *prometheus.CounterVec) *messageBudget {
	return &messageBudget{limit: limit, wait: budgetWait, gauge: gauge,
		waited: waits.WithLabelValues("granted"), refuse: waits.WithLabelValues("refused")}
}

// budgetError ends a session whose message could not be buffered.
func budgetError(n, limit int64, why string) *refusedError {
	return &refusedError{&pgproto3.ErrorResponse{
		Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: "53200",
		Message: fmt.Sprintf("pgmoat cannot buffer this %d-byte message: %s", n, why),
		Hint:    fmt.Sprintf("limits.message_memory (%d bytes) bounds the large messages all sessions hold at once; retry later, send smaller messages, or raise it", limit),
	}}
}

// acquire reserves n bytes, waiting while others hold the budget, until
// ctx ends or budgetWait passes. Its error is a *refusedError.
func (b *messageBudget) acquire(ctx context.Context, n int64) error {
	b.mu.Lock()
	if n > b.limit {
		b.mu.Unlock()
		b.refuse.Inc()
		return budgetError(n, b.limit, "it is larger than limits.message_memory")
	}
	if len(b.waiters) == 0 && b.used+n <= b.limit {
		b.used += n
		b.gauge.Set(float64(b.used))
		b.mu.Unlock()
		b.reuse()
		return nil
	}
	w := &budgetWaiter{n: n, ready: make(chan struct{})}
	b.waiters = append(b.waiters, w)
	b.mu.Unlock()

	t := time.NewTimer(b.wait)
	defer t.Stop()
	var why string
	select {
	case <-w.ready:
		b.waited.Inc()
		b.reuse()
		return nil
	case <-t.C:
		why = fmt.Sprintf("other sessions' messages held the memory for %s", b.wait)
	case <-ctx.Done():
		why = "the session ended while it waited for memory"
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	select {
	case <-w.ready: // granted meanwhile: give it back
		b.releaseLocked(n)
	default:
		for i, x := range b.waiters {
			if x == w {
				b.waiters = append(b.waiters[:i], b.waiters[i+1:]...)
				break
			}
		}
		b.grantLocked() // the head may have changed
	}
	b.refuse.Inc()
	return budgetError(n, b.limit, why)
}

// release gives back n bytes acquired before, once the message's buffer
// is no longer the proxy's.
func (b *messageBudget) release(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.releaseLocked(n)
	b.freed += n
	if b.freed >= freeOSAfter && !b.freeing {
		b.freeing = true
		delay := max(freeOSDelay, freeOSEvery-time.Since(b.lastOS))
		time.AfterFunc(delay, b.returnMemory)
	}
}

func (b *messageBudget) releaseLocked(n int64) {
	b.used -= n
	b.grantLocked()
	b.gauge.Set(float64(b.used))
}

// grantLocked grants waiters in order while the first one fits.
func (b *messageBudget) grantLocked() {
	for len(b.waiters) > 0 && b.used+b.waiters[0].n <= b.limit {
		w := b.waiters[0]
		b.waiters = b.waiters[1:]
		b.used += w.n
		close(w.ready)
	}
	b.gauge.Set(float64(b.used))
}

// reuse runs a garbage collection when large buffers were released and
// not yet collected, before a new one is allocated: the new buffer then
// reuses their memory instead of adding to it, and RSS stays within the
// budget (plus what the rest of pgmoat uses) even while messages follow
// each other faster than returnMemory runs.
func (b *messageBudget) reuse() {
	b.mu.Lock()
	pending := b.freed > 0
	b.mu.Unlock()
	if pending {
		runtime.GC()
	}
}

// returnMemory collects the released buffers and gives their memory back
// to the operating system. It costs a garbage collection, which is why it
// runs only after large messages, and at most every freeOSEvery.
func (b *messageBudget) returnMemory() {
	debug.FreeOSMemory()
	b.mu.Lock()
	b.freed, b.freeing, b.lastOS = 0, false, time.Now()
	b.mu.Unlock()
}
