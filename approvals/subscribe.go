package approvals

import "sync"

// maxQueued bounds the distinct changes a Subscription keeps between two
// reads; past it they collapse into one ChangeResync.
const maxQueued = 1000

// Subscription delivers the Store's changes (holds and pre-approvals
// created, decided or ended, on any instance) to one reader, such as a
// console's event stream. It never slows the Store: changes queue up,
// repeated changes of one record are merged, and a reader that falls far
// behind gets a single ChangeResync instead.
type Subscription struct {
	s *Store
	// C receives a value when changes are waiting; read them with Next.
	// It is closed when the Store closes.
	C <-chan struct{}
	c chan struct{}

	mu     sync.Mutex
	queue  []Change
	seen   map[Change]bool
	closed bool
}

// Subscribe starts a Subscription; Close it when done.
func (s *Store) Subscribe() *Subscription {
	c := make(chan struct{}, 1)
	sub := &Subscription{s: s, C: c, c: c, seen: map[Change]bool{}}
	s.subMu.Lock()
	defer s.subMu.Unlock()
	if s.subsClosed {
		sub.closeLocked()
		return sub
	}
	s.subs[sub] = struct{}{}
	return sub
}

// Next returns the changes waiting, oldest first, and clears them. Each
// names a record (Kind and ID; Hold is not set), or is a ChangeResync.
func (sub *Subscription) Next() []Change {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	q := sub.queue
	sub.queue = nil
	clear(sub.seen)
	return q
}

// Close stops the Subscription.
func (sub *Subscription) Close() {
	sub.s.subMu.Lock()
	delete(sub.s.subs, sub)
	sub.closeLocked()
	sub.s.subMu.Unlock()
}

// closeLocked closes C once; the Store's subMu is held.
func (sub *Subscription) closeLocked() {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	if !sub.closed {
		sub.closed = true
		close(sub.c)
	}
}

func (sub *Subscription) add(c Change) {
	sub.mu.Lock()
	if sub.closed {
		sub.mu.Unlock()
		return
	}
	switch {
	case len(sub.queue) == 1 && sub.queue[0].Kind == ChangeResync:
		// Everything is read again anyway.
	case c.Kind == ChangeResync || len(sub.queue) >= maxQueued:
		sub.queue = append(sub.queue[:0], Change{Kind: ChangeResync})
		clear(sub.seen)
	case !sub.seen[c]:
		sub.seen[c] = true
		sub.queue = append(sub.queue, c)
	}
	sub.mu.Unlock()
	select {
	case sub.c <- struct{}{}:
	default:
	}
}

// publish hands c to every subscriber.
func (s *Store) publish(c Change) {
	switch c.Kind {
	case ChangeHold, ChangePreApproval, ChangeResync:
	default:
		return
	}
	c = Change{Kind: c.Kind, ID: c.ID}
	s.subMu.Lock()
	defer s.subMu.Unlock()
	for sub := range s.subs {
		sub.add(c)
	}
}
