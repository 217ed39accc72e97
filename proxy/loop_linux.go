package proxy

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/pgmoat/pgmoat/config"
	"github.com/pgmoat/pgmoat/internal/cpulimit"
	"github.com/pgmoat/pgmoat/metrics"
)

// The event loop relays sessions the way PgBouncer does: a few threads,
// each waiting in epoll for any of its sessions' sockets to be readable,
// then reading once, relaying every whole message that arrived and
// writing once (for all the sessions of a turn, in passes: see run). The
// goroutine-per-direction relay (relay.go) pays for every turn of a
// conversation with a read that finds nothing (EAGAIN) and a park and
// wake-up of a goroutine, in each direction; under
// pgbench that was a third of pgmoat's CPU (bench/README.md). In the loop
// a level-triggered epoll says when to read, so every read finds data,
// and one epoll_wait serves all the sessions that became ready together.
//
// The loop only does what cannot block: messages that are whole in the
// buffer, the Interceptor's TryIntercept, writes the peer's socket buffer
// takes at once. Anything else (a message larger than the buffer, a
// statement to hold or block, a peer that stopped reading, the end of the
// session) hands the session back to the goroutine relay, which carries on
// from exactly where the loop stopped: the same readers, writers and
// copier state. A session never returns to the loop; the blocking path is
// the rare one.
//
// While a session is in the loop its sockets are duplicates the Go
// runtime does not know (its net.Conns are closed, which takes them out of
// the runtime's own epoll, so no wake-up is spent on them twice); leaving
// the loop makes net.Conns of them again.

// eventLoops are a Server's event loops: limits.event_loops of them (auto:
// one per two CPUs pgmoat may use, see config.EventLoopsAuto), started
// with the first session that can use one, so that a Server that relays
// nothing runs no thread for it, and stopped when the Server has shut
// down.
type eventLoops struct {
	n        int  // threads to start; 0: the loop is off
	linger   bool // the loops wait in the kernel while busy (see eventLoop.wait)
	log      *slog.Logger
	cpus     cpulimit.Limits
	once     sync.Once
	all      []*eventLoop
	next     atomic.Uint64
	stopOnce sync.Once
}

func newEventLoops(n config.EventLoops, log *slog.Logger) *eventLoops {
	cpus := cpulimit.Read()
	threads := n.Threads(cpus.CPUs())
	// A loop that waits in the kernel keeps its Go processor meanwhile:
	// only while the loops leave the rest of pgmoat one at least.
	linger := threads < runtime.GOMAXPROCS(0)
	return &eventLoops{n: threads, linger: linger, log: log, cpus: cpus}
}

// pick returns an event loop for a new session, round robin, or nil when
// the loop is off or could not be started.
func (ls *eventLoops) pick() *eventLoop {
	ls.once.Do(func() {
		for i := 0; i < ls.n; i++ {
			l, err := newEventLoop(ls.linger, i)
			if err != nil {
				ls.log.Warn("event loop unavailable; sessions use goroutines", "err", err)
				break // the goroutine relay serves the sessions the loops cannot
			}
			ls.all = append(ls.all, l)
			go l.run()
		}
		if len(ls.all) > 0 {
			ls.log.Info("event loops started", "threads", len(ls.all), "cpus", ls.cpus.CPUs(),
				"cpu_affinity", ls.cpus.Affinity, "cpu_quota", ls.cpus.Quota, "gomaxprocs", runtime.GOMAXPROCS(0),
				"wait_in_kernel", ls.linger)
		}
	})
	if len(ls.all) == 0 {
		return nil
	}
	return ls.all[(ls.next.Add(1)-1)%uint64(len(ls.all))]
}

// stop ends the loops' goroutines and closes their descriptors. No session
// may be in a loop any more (Shutdown calls it once every session has
// ended), and none enters one after.
func (ls *eventLoops) stop() {
	ls.stopOnce.Do(func() {
		ls.once.Do(func() {}) // loops not started yet never start
		for _, l := range ls.all {
			l.stop()
		}
	})
}

// eventLoop is one epoll instance and the goroutine that waits on it.
type eventLoop struct {
	epfd   int
	wakefd int  // eventfd: sessions to add or kick are waiting
	linger bool // wait in the kernel while busy (wait)
	shard  int  // the metrics shard of its sessions (ClientSession.MetricShard)
	// handedBack is set when a session left the loop in this turn
	// (loop goroutine only): see wait.
	handedBack bool

	mu       sync.Mutex
	adds     []*loopConn
	kicks    []*loopConn
	woken    bool
	stopping bool

	// Only the loop's goroutine touches these.
	// conns holds both sockets of each session, indexed by descriptor.
	// Descriptors are small and dense (the kernel hands out the lowest
	// free one), so a slice finds a socket's session with one load, where
	// a map needed a hash and a probe of a group that, with hundreds of
	// sessions, was rarely in the cache (bench/README.md).
	conns  []*loopConn
	events []unix.EpollEvent
	// readErrs holds, by event, what a turn's read of that socket
	// returned when it failed (io.EOF or the error), until the turn's
	// last pass hands it on.
	readErrs []error
	warmed   int // what warm read, so that the compiler keeps the reads

	done chan struct{} // closed when run has returned, after stop
}

func newEventLoop(linger bool, shard int) (*eventLoop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wakefd)}); err != nil {
		unix.Close(epfd)
		unix.Close(wakefd)
		return nil, fmt.Errorf("epoll_ctl: %w", err)
	}
	// Non-blocking, so that the Go runtime's poller can wait on it (park).
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		unix.Close(wakefd)
		return nil, fmt.Errorf("epoll: %w", err)
	}
	const batch = 256 // events one epoll_wait returns at most
	return &eventLoop{epfd: epfd, wakefd: wakefd, linger: linger, shard: shard,
		events: make([]unix.EpollEvent, batch), readErrs: make([]error, batch), done: make(chan struct{})}, nil
}

// stop makes the loop's goroutine close the loop and return.
func (l *eventLoop) stop() {
	l.mu.Lock()
	l.stopping = true
	l.wakeLocked()
	l.mu.Unlock()
}

// wakeLocked makes the loop look at its adds, kicks and stop request.
func (l *eventLoop) wakeLocked() {
	if l.woken {
		return
	}
	l.woken = true
	one := [8]byte{1}
	for {
		_, err := unix.Write(l.wakefd, one[:])
		if err != unix.EINTR {
			return // EAGAIN: the counter is already non-zero
		}
	}
}

// run is the loop's goroutine: wait for sockets with something to read,
// relay what arrived, and again.
func (l *eventLoop) run() {
	if l.linger {
		// One thread for the loop, so that waking it is waking that
		// thread, not handing the goroutine to whichever thread the
		// runtime has free.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
	}
	for {
		n := l.wait()
		if n > 1 {
			l.warm(n)
		}
		// A turn in passes: read every socket that is ready; relay what
		// the servers sent, then what the clients sent; write. Each
		// system call runs a good part of the kernel's network code,
		// which evicts the relay's code from the processor's
		// instruction cache; in passes, each part of the relay's code
		// runs for all the turn's sessions in a row and is fetched once
		// per turn, not once per session (bench/README.md, "A turn in
		// passes"). The order of the sessions' two directions within a
		// turn is free (each direction's messages keep theirs); replies
		// go first because they only ever bring what the enforcer knows
		// of a session up to date. A socket the first pass found
		// nothing on, or whose session left the loop, is skipped by the
		// others (its event's Fd is -1, or conn finds no session).
		for i := 0; i < n; i++ {
			ev := &l.events[i]
			if ev.Fd == int32(l.wakefd) {
				ev.Fd = -1
				if l.takeRequests() {
					unix.Close(l.epfd)
					unix.Close(l.wakefd)
					close(l.done)
					return
				}
				continue
			}
			lc := l.conn(ev.Fd)
			if lc == nil {
				ev.Fd = -1 // left the loop earlier in this turn
				continue
			}
			r := lc.s.srvR
			if int(ev.Fd) == lc.cliOut.fd {
				r = lc.s.cliR
			}
			again, err := readInto(int(ev.Fd), r)
			switch {
			case again:
				ev.Fd = -1
			case err != nil:
				l.readErrs[i] = err
			}
		}
		for i := 0; i < n; i++ {
			if lc := l.conn(l.events[i].Fd); lc != nil && int(l.events[i].Fd) == lc.srvOut.fd {
				lc.relayServer()
			}
		}
		for i := 0; i < n; i++ {
			if lc := l.conn(l.events[i].Fd); lc != nil && int(l.events[i].Fd) == lc.cliOut.fd {
				lc.relayClient()
			}
		}
		for i := 0; i < n; i++ {
			rerr := l.readErrs[i]
			if rerr != nil {
				l.readErrs[i] = nil
			}
			lc := l.conn(l.events[i].Fd)
			if lc == nil {
				continue
			}
			if int(l.events[i].Fd) == lc.cliOut.fd {
				lc.finishClient(rerr)
			} else {
				lc.finishServer(rerr)
			}
		}
	}
}

// warm reads the state the events in l.events[:n] will start from: each
// session's loopConn, the session, its readers and writers, its relay
// halves and reply queue. With hundreds of sessions that state has left
// the processor's caches by the session's next turn, and an event begins
// with a chain of misses, each load waiting for the one before (the
// loopConn for the session, the session for its reader, ...). Read
// first, for the whole batch, the misses of different sessions overlap
// instead of following one another (bench/README.md, "Misses in a
// chain"). It reads only what the loop's goroutine owns while a session
// is in the loop, or what does not change after the session starts.
func (l *eventLoop) warm(n int) {
	sum := 0
	for i := 0; i < n; i++ {
		lc := l.conn(l.events[i].Fd)
		if lc == nil {
			continue
		}
		s := lc.s
		sum += lc.cliOut.fd + s.cliR.w + s.srvR.w
		if s.cliW.total == nil || s.srvW.total == nil || lc.c2s.discarding || lc.s2c.held {
			sum++
		}
		if s.replies != nil && s.replies.shared {
			sum++
		}
	}
	l.warmed = sum
}

// lingerMillis is how long a loop waits for its next events in the
// kernel before it parks in the Go runtime's poller. It is long on
// purpose: each epoll_wait arms a timer for its timeout, and a short one
// that expires between the turns of a slow client makes the kernel
// reprogram the timer device again and again, while a loop that parks
// pays for a duplicate descriptor and the runtime poller's wake-up. An
// idle loop is interrupted by the runtime's preemption every 10 ms or so
// meanwhile, a few wake-ups before it parks (bench/README.md, "The loop's
// idle/wake cycle").
const lingerMillis = 50

// wait returns the number of events in l.events, waiting for at least
// one.
//
// While its sessions keep it busy, the loop waits for them in the kernel,
// the way PgBouncer does: one epoll_wait per wake-up, its own thread woken
// directly by the socket that became readable. It does so without telling
// the Go scheduler (a raw system call), because a thread the scheduler
// sees blocked in a system call has its processor taken away by the
// runtime's monitor and must get one back at every wake-up. The loop
// therefore holds its processor while it waits, which is why it does so
// only when the loops leave the rest of pgmoat a processor (linger), and
// why a signal interrupts the wait: the runtime preempts a goroutine that
// has run for 10 ms, or stops the world for the garbage collector, and the
// loop lets it at the next function call.
//
// After lingerMillis with nothing to do, the loop parks in the Go
// runtime's poller instead, where an idle loop costs nothing: it waits on
// a duplicate of the epoll descriptor registered with the runtime only for
// as long as it is parked. A descriptor registered for good would wake the
// runtime's own poller thread whenever a socket of a busy loop became
// readable, for nothing.
//
// A session that leaves the loop wakes the goroutine waiting for it
// (leaveLoop) on the loop's own processor, which a loop waiting in the
// kernel would keep until the runtime preempted it: so after a turn in
// which a session left, the loop yields its processor first.
func (l *eventLoop) wait() int {
	if l.linger && l.handedBack {
		l.handedBack = false
		runtime.Gosched()
	}
	if l.linger {
		var since time.Time // first interruption of this wait
		for {
			n, err := epollWait(l.epfd, l.events, lingerMillis)
			if n > 0 {
				return n
			}
			if err != unix.EINTR {
				break // idle for lingerMillis
			}
			// Interrupted, by the runtime's preemption or a profiling
			// signal: an idle loop is interrupted every 10 ms or so, so
			// count the time rather than the timeouts.
			if since.IsZero() {
				since = time.Now()
			} else if time.Since(since) >= lingerMillis*time.Millisecond {
				break
			}
		}
	}
	for {
		n, err := l.park()
		if err == nil {
			return n
		}
		// The runtime cannot poll the descriptor (it always can on
		// Linux): wait in the kernel, telling the scheduler.
		n, err = unix.EpollWait(l.epfd, l.events, 100)
		if err == nil && n > 0 {
			return n
		}
	}
}

// park waits in the Go runtime's poller until the loop's epoll has events,
// and returns them.
func (l *eventLoop) park() (int, error) {
	fd, err := unix.FcntlInt(uintptr(l.epfd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	f := os.NewFile(uintptr(fd), "epoll")
	defer f.Close() // takes the duplicate out of the runtime's poller
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n int
	// Read calls the function first, then each time the runtime's poller
	// says the descriptor is readable, until it returns true: what
	// arrived before the descriptor was registered is not missed.
	err = rc.Read(func(uintptr) bool {
		for {
			var perr error
			n, perr = epollWait(l.epfd, l.events, 0)
			if perr != unix.EINTR {
				return n > 0
			}
		}
	})
	return n, err
}

// takeRequests adds the sessions that entered the loop and hands back the
// ones whose session is being stopped. It reports whether the loop itself
// is to stop.
func (l *eventLoop) takeRequests() (stop bool) {
	var buf [8]byte
	unix.Read(l.wakefd, buf[:])
	l.mu.Lock()
	adds, kicks, stop := l.adds, l.kicks, l.stopping
	l.adds, l.kicks = nil, nil
	l.woken = false
	l.mu.Unlock()
	for _, lc := range adds {
		l.add(lc)
	}
	for _, lc := range kicks {
		if !lc.left {
			lc.exit(&copyEnd{fromClient: true, err: os.ErrDeadlineExceeded})
		}
	}
	return stop
}

func (l *eventLoop) add(lc *loopConn) {
	for _, fd := range []int{lc.cliOut.fd, lc.srvOut.fd} {
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(fd)}
		if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
			l.remove(lc)
			lc.handoff("epoll")
			return
		}
		if fd >= len(l.conns) {
			l.conns = append(l.conns, make([]*loopConn, fd+1-len(l.conns))...)
		}
		l.conns[fd] = lc
	}
	// What arrived before the session entered the loop is already in
	// its buffers, and epoll will not announce it again.
	lc.fromServer()
	lc.fromClient()
}

// conn returns the session whose socket fd is, or nil.
func (l *eventLoop) conn(fd int32) *loopConn {
	if fd < 0 || int(fd) >= len(l.conns) {
		return nil
	}
	return l.conns[fd]
}

func (l *eventLoop) remove(lc *loopConn) {
	for _, fd := range []int{lc.cliOut.fd, lc.srvOut.fd} {
		if l.conn(int32(fd)) == lc {
			l.conns[fd] = nil
			unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, fd, nil)
		}
	}
}

// loopConn is a session while it runs in an event loop. What a turn reads
// comes first, on one cache line: the struct is padded to 128 bytes, a
// size class whose objects start on a cache line.
type loopConn struct {
	s      *ClientSession
	c2s    *clientToServer
	s2c    *serverToClient
	cliOut fdWriter // under s.cliW while in the loop; its fd is the client socket's duplicate
	srvOut fdWriter // under s.srvW while in the loop; its fd is the server socket's duplicate
	left   bool     // handed back (loop goroutine only)

	l    *eventLoop
	done chan *copyEnd
	_    [48]byte
}

// enterLoop moves a session whose sockets are plain TCP or Unix sockets
// into an event loop, or returns nil when it stays with the goroutine
// relay (TLS, no loop available, the session already stopping).
func (s *ClientSession) enterLoop(c2s *clientToServer, s2c *serverToClient) *loopConn {
	if s.icpt != nil && s.fast == nil || len(s.cliR.pre) > 0 {
		return nil
	}
	s.connMu.Lock()
	defer s.connMu.Unlock()
	if s.stopped || !loopable(s.client) || !loopable(s.server) {
		return nil
	}
	l := s.srv.loops.pick()
	if l == nil {
		return nil
	}
	cfd, err := dupConn(s.client)
	if err != nil {
		return nil
	}
	sfd, err := dupConn(s.server)
	if err != nil {
		unix.Close(cfd)
		return nil
	}
	// Closing the net.Conns takes the sockets out of the Go runtime's
	// epoll; the duplicates keep the connections open.
	s.client.Close()
	s.server.Close()
	lc := &loopConn{l: l, s: s, c2s: c2s, s2c: s2c, cliOut: fdWriter{fd: cfd}, srvOut: fdWriter{fd: sfd}, done: make(chan *copyEnd, 1)}
	s.cliW.w, s.srvW.w = &lc.cliOut, &lc.srvOut
	s.shard = l.shard
	s.cliW.total = s.srv.met.BytesRelayed.Cell(s.shard, metrics.ServerToClient)
	s.srvW.total = s.srv.met.BytesRelayed.Cell(s.shard, metrics.ClientToServer)
	s.cliR.rd, s.srvR.rd = inLoop{}, inLoop{}
	s.loop = lc
	s.srv.met.RelaySessions.WithLabelValues("event_loop").Inc()
	l.mu.Lock()
	l.adds = append(l.adds, lc)
	l.wakeLocked()
	l.mu.Unlock()
	return lc
}

// kick asks the loop to hand the session back because it is stopping.
func (lc *loopConn) kick() {
	lc.l.mu.Lock()
	lc.l.kicks = append(lc.l.kicks, lc)
	lc.l.wakeLocked()
	lc.l.mu.Unlock()
}

// inLoop stands in for the connections under the readers while the
// session is in the event loop, which never lets a reader read.
type inLoop struct{}

func (inLoop) Read([]byte) (int, error) {
	return 0, errors.New("proxy: read from a session in the event loop")
}

func loopable(c net.Conn) bool {
	switch c.(type) {
	case *net.TCPConn, *net.UnixConn:
		return true
	}
	return false
}

// dupConn duplicates a connection's socket (close-on-exec, and
// non-blocking like the original: the flag belongs to the shared open
// file).
func dupConn(c net.Conn) (int, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return -1, errors.New("not a syscall.Conn")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	nfd := -1
	var derr error
	if err := rc.Control(func(fd uintptr) {
		nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return -1, err
	}
	return nfd, derr
}

// fdConn makes a net.Conn of a socket descriptor and closes the
// descriptor (the net.Conn has its own).
func fdConn(fd int) (net.Conn, error) {
	f := os.NewFile(uintptr(fd), "")
	defer f.Close()
	return net.FileConn(f)
}

// fromClient relays every whole message already in the client's buffer
// and writes it to the server.
func (lc *loopConn) fromClient() {
	lc.relayClient()
	lc.finishClient(nil)
}

// relayClient relays every whole message in the client's buffer to the
// server's writer.
func (lc *loopConn) relayClient() {
	if lc.left {
		return
	}
	r := lc.s.cliR
	for r.buffered() >= 5 {
		typ, n, err := r.header()
		if err != nil {
			lc.exit(&copyEnd{fromClient: true, err: &protocolError{msg: err.Error()}})
			return
		}
		if 5+n > len(r.buf) {
			lc.handoff("large_message") // streamed, or refused, by the goroutine relay
			return
		}
		if r.buffered() < 5+n {
			break
		}
		if err := lc.c2s.step(typ, n, true); err != nil {
			if err == errHandoff {
				lc.handoff("interceptor")
			} else {
				lc.exit(&copyEnd{fromClient: true, err: err})
			}
			return
		}
	}
}

// finishClient writes what relayClient relayed to the server, then ends
// the session or hands it back if the client's read failed (rerr) or the
// server is not reading.
func (lc *loopConn) finishClient(rerr error) {
	if lc.left {
		return
	}
	s := lc.s
	if err := s.flushServer(); err != nil {
		lc.exit(&copyEnd{fromClient: true, err: err})
		return
	}
	switch {
	case rerr != nil:
		if errors.Is(rerr, io.EOF) && s.cliR.buffered() > 0 {
			rerr = io.ErrUnexpectedEOF
		}
		lc.exit(&copyEnd{fromClient: true, err: rerr})
	case len(lc.srvOut.backlog()) > 0:
		lc.handoff("backpressure") // the server is not reading: wait for it on a goroutine
	}
}

// fromServer relays every whole message already in the server's buffer
// and writes it to the client.
func (lc *loopConn) fromServer() {
	lc.relayServer()
	lc.finishServer(nil)
}

// relayServer relays every whole message in the server's buffer to the
// client's writer. The buffer then holds whole messages only, so a
// SendToClient before finishServer writes cannot land inside one.
func (lc *loopConn) relayServer() {
	if lc.left {
		return
	}
	s := lc.s
	r := s.srvR
	s.cliMu.Lock()
	for r.buffered() >= 5 {
		typ, n, err := r.header()
		if err != nil {
			s.cliMu.Unlock()
			lc.exit(&copyEnd{fromClient: false, err: &protocolError{msg: err.Error()}})
			return
		}
		if 5+n > len(r.buf) {
			s.cliMu.Unlock()
			lc.handoff("large_message")
			return
		}
		if r.buffered() < 5+n {
			break
		}
		if err := lc.s2c.step(typ, n, true); err != nil {
			s.cliMu.Unlock()
			lc.exit(&copyEnd{fromClient: false, err: err})
			return
		}
	}
	s.cliMu.Unlock()
}

// finishServer writes what relayServer relayed to the client, then ends
// the session or hands it back if the server's read failed (rerr) or the
// client is not reading.
func (lc *loopConn) finishServer(rerr error) {
	if lc.left {
		return
	}
	s := lc.s
	var werr error
	s.cliMu.Lock()
	if s.cliW.Buffered() > 0 {
		werr = s.cliW.Flush()
	}
	s.cliMu.Unlock()
	switch {
	case werr != nil:
		lc.exit(&copyEnd{fromClient: false, err: &writeError{werr}})
	case rerr != nil:
		if errors.Is(rerr, io.EOF) && s.srvR.buffered() > 0 {
			rerr = io.ErrUnexpectedEOF
		}
		lc.exit(&copyEnd{fromClient: false, err: rerr})
	case len(lc.cliOut.backlog()) > 0:
		lc.handoff("backpressure") // the client is not reading
	}
}

// readInto reads once from fd into r. again reports a spurious wake-up
// (nothing to read); err is io.EOF or the read's error.
func readInto(fd int, r *msgReader) (again bool, err error) {
	r.compact()
	for {
		k, err := rawRead(fd, r.buf[r.w:])
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return true, nil
		case err != nil:
			return false, os.NewSyscallError("read", err)
		case k == 0:
			return false, io.EOF
		}
		r.w += k
		return false, nil
	}
}

// handoff gives the session back to the goroutine relay, which continues
// from where the loop stopped.
func (lc *loopConn) handoff(reason string) {
	if !lc.left {
		lc.s.srv.met.EventLoopHandoffs.WithLabelValues(reason).Inc()
	}
	lc.exit(nil)
}

// exit takes the session out of the loop; first, when not nil, is how the
// relay ended.
func (lc *loopConn) exit(first *copyEnd) {
	if lc.left {
		return
	}
	lc.left = true
	lc.l.remove(lc)
	lc.l.handedBack = true
	s := lc.s
	// Everything relayed so far goes to the fdWriters (and what the
	// sockets do not take now, to their pending bytes, which leaveLoop
	// writes in blocking mode).
	s.srvW.Flush()
	s.cliMu.Lock()
	s.cliW.Flush()
	s.cliMu.Unlock()
	lc.done <- first
}

// leaveLoop waits until the loop hands the session back, then restores
// its net.Conns, writes what the loop could not and returns how the relay
// ended (nil: it goes on in goroutines).
func (s *ClientSession) leaveLoop(lc *loopConn) *copyEnd {
	first := <-lc.done
	s.srv.met.RelaySessions.WithLabelValues("event_loop").Dec()
	if first != nil && errors.Is(first.err, errClientTerminated) &&
		len(lc.srvOut.backlog()) == 0 && len(lc.cliOut.backlog()) == 0 {
		// The commonest end: the client said goodbye, its Terminate
		// went to the server with everything before it, and nothing
		// is left to write to either. The sockets are closed here
		// rather than made net.Conns again only to be closed, which
		// cost each ending session two descriptors, two registrations
		// with the runtime's poller and their removal (bench/README.md,
		// "Where a run ends").
		unix.Close(lc.cliOut.fd)
		unix.Close(lc.srvOut.fd)
		lc.srvOut, lc.cliOut = fdWriter{}, fdWriter{}
		s.connMu.Lock()
		s.client, s.server, s.loop = closedConn{}, closedConn{}, nil
		s.cliR.rd, s.cliW.w = closedConn{}, closedConn{}
		s.srvR.rd, s.srvW.w = closedConn{}, closedConn{}
		s.connMu.Unlock()
		return first
	}
	cc, cerr := fdConn(lc.cliOut.fd)
	sc, serr := fdConn(lc.srvOut.fd)
	if cerr != nil || serr != nil {
		// Out of descriptors, most likely. The sockets are closed now
		// (fdConn closed them); end the session.
		if cc != nil {
			cc.Close()
		}
		if sc != nil {
			sc.Close()
		}
		err := cerr
		if err == nil {
			err = serr
		}
		s.connMu.Lock()
		s.loop = nil
		s.connMu.Unlock()
		return &copyEnd{fromClient: true, err: &interceptorError{fmt.Errorf("leaving the event loop: %w", err)}}
	}
	s.connMu.Lock()
	s.client, s.server, s.loop = cc, sc, nil
	s.cliR.rd, s.cliW.w = cc, cc
	s.srvR.rd, s.srvW.w = sc, sc
	stopped := s.stopped
	if stopped {
		for _, c := range []net.Conn{cc, sc} {
			c.SetReadDeadline(time.Unix(1, 0))
			c.SetWriteDeadline(time.Now().Add(finalWriteGrace))
		}
	}
	s.connMu.Unlock()
	srvP, cliP := lc.srvOut.backlog(), lc.cliOut.backlog()
	lc.srvOut, lc.cliOut = fdWriter{}, fdWriter{}
	if first == nil {
		// Each copier sends its direction's leftovers first, so that a
		// peer that is not reading cannot stop the other direction.
		lc.c2s.pending, lc.s2c.pending = srvP, cliP
		return nil
	}
	// The session ends: send what was relayed before the end, within the
	// grace a final message gets.
	for _, w := range []struct {
		c net.Conn
		p []byte
	}{{sc, srvP}, {cc, cliP}} {
		if len(w.p) > 0 {
			w.c.SetWriteDeadline(time.Now().Add(finalWriteGrace))
			w.c.Write(w.p)
			if !stopped {
				w.c.SetWriteDeadline(time.Time{})
			}
		}
	}
	return first
}

// closedConn stands for a session's connection once leaveLoop has closed
// its socket: what the end of the session still does with it (deadlines,
// Close) does nothing, and a read or write fails as on a closed net.Conn.
type closedConn struct{}

func (closedConn) Read([]byte) (int, error)         { return 0, net.ErrClosed }
func (closedConn) Write([]byte) (int, error)        { return 0, net.ErrClosed }
func (closedConn) Close() error                     { return nil }
func (closedConn) LocalAddr() net.Addr              { return closedAddr{} }
func (closedConn) RemoteAddr() net.Addr             { return closedAddr{} }
func (closedConn) SetDeadline(time.Time) error      { return nil }
func (closedConn) SetReadDeadline(time.Time) error  { return nil }
func (closedConn) SetWriteDeadline(time.Time) error { return nil }

type closedAddr struct{}

func (closedAddr) Network() string { return "closed" }
func (closedAddr) String() string  { return "closed" }

// fdWriter writes to a non-blocking socket without waiting: what the
// socket does not take at once is kept, in order, for leaveLoop.
type fdWriter struct {
	fd   int
	slow *fdBacklog // nil while every write went through whole
}

// fdBacklog is what a socket did not take, and why it stopped taking.
type fdBacklog struct {
	pending []byte
	err     error
}

// backlog returns the bytes kept for leaveLoop.
func (w *fdWriter) backlog() []byte {
	if w.slow == nil {
		return nil
	}
	return w.slow.pending
}

func (w *fdWriter) Write(p []byte) (int, error) {
	n := len(p)
	if b := w.slow; b != nil {
		if b.err != nil {
			return 0, b.err
		}
		if len(b.pending) > 0 {
			b.pending = append(b.pending, p...)
			return n, nil
		}
	}
	for len(p) > 0 {
		k, err := rawWrite(w.fd, p)
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			break
		}
		if err != nil {
			b := w.backlogged()
			b.err = os.NewSyscallError("write", err)
			return n - len(p), b.err
		}
		p = p[k:]
	}
	if len(p) > 0 {
		b := w.backlogged()
		b.pending = append(b.pending, p...)
	}
	return n, nil
}

func (w *fdWriter) backlogged() *fdBacklog {
	if w.slow == nil {
		w.slow = &fdBacklog{}
	}
	return w.slow
}

// The loop's system calls never block for long (its sockets are
// non-blocking, and it waits in epoll for at most lingerMillis), so it makes
// them without telling the Go scheduler (RawSyscall). The scheduler would otherwise hand the loop's
// processor to another thread whenever a call took longer than 20 µs of
// wall time, which is what happens to every write on a busy machine, where
// the reader it wakes preempts the writer: a thread wake-up and a
// processor handoff per write, measured at a third of pgmoat's CPU.

// They use recvfrom and sendto rather than read and write: on a socket
// those skip the VFS layer's bookkeeping (and MSG_NOSIGNAL keeps a closed
// peer from raising SIGPIPE); PgBouncer makes the same calls.

func rawRead(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func rawWrite(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), unix.MSG_NOSIGNAL, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// epollWait waits up to msec for events of epfd (0: returns at once).
func epollWait(epfd int, events []unix.EpollEvent, msec int) (int, error) {
	n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), uintptr(msec), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}
