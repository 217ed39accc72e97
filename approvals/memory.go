package approvals

import (
	"fmt"
	"slices"
	"sync"
	"time"
)

// memory is the default Backend: the records live in this process and die
// with it. Each record has its own lock, taken for the whole of an update
// (including the audit write its fn makes), so that thousands of pending
// holds and concurrent decisions on different holds never wait for each
// other; the tables' lock is never held while fn runs.
type memory struct {
	keepEnded int
	watch     func(Change)

	mu    sync.Mutex
	holds map[string]*memHold
	ended []endedHold // oldest first

	pmu  sync.RWMutex
	pre  map[string]*memPre
	byFP map[string][]*memPre
}

type memHold struct {
	mu   sync.Mutex
	info HoldInfo
}

type memPre struct {
	mu   sync.Mutex
	info PreApproval
}

type endedHold struct {
	id string
	at time.Time
}

func newMemory(keepEnded int) *memory {
	return &memory{
		keepEnded: keepEnded,
		watch:     func(Change) {},
		holds:     make(map[string]*memHold),
		pre:       make(map[string]*memPre),
		byFP:      make(map[string][]*memPre),
	}
}

func (m *memory) Watch(f func(Change)) { m.watch = f }

func (m *memory) Close() error { return nil }

func (m *memory) CreateHold(h HoldInfo, record func() error) error {
	if err := record(); err != nil {
		return err
	}
	h = cloneHold(h)
	m.mu.Lock()
	if _, dup := m.holds[h.ID]; dup {
		// 64 random bits: unreachable in practice, but never merge two holds.
		m.mu.Unlock()
		return fmt.Errorf("hold id %s collides with an existing hold", h.ID)
	}
	m.holds[h.ID] = &memHold{info: h}
	m.mu.Unlock()
	c := cloneHold(h)
	m.watch(Change{Kind: ChangeHold, ID: h.ID, Hold: &c})
	return nil
}

func (m *memory) hold(id string) (*memHold, error) {
	m.mu.Lock()
	r := m.holds[id]
	m.mu.Unlock()
	if r == nil {
		return nil, fmt.Errorf("hold %s: %w", id, ErrNotFound)
	}
	return r, nil
}

func (m *memory) UpdateHold(id string, fn func(*HoldInfo) (bool, error)) (HoldInfo, error) {
	r, err := m.hold(id)
	if err != nil {
		return HoldInfo{}, err
	}
	r.mu.Lock()
	next := cloneHold(r.info)
	changed, ferr := fn(&next)
	if !changed {
		cur := cloneHold(r.info)
		r.mu.Unlock()
		return cur, ferr
	}
	wasPending := r.info.Status == StatusPending
	r.info = next
	r.mu.Unlock()
	if wasPending && next.Status != StatusPending {
		m.mu.Lock()
		m.ended = append(m.ended, endedHold{id: id, at: next.ResolvedAt})
		m.trimLocked(time.Time{})
		m.mu.Unlock()
	}
	c := cloneHold(next)
	m.watch(Change{Kind: ChangeHold, ID: id, Hold: &c})
	return cloneHold(next), ferr
}

// trimLocked forgets ended holds beyond keepEnded or that ended before
// cutoff.
func (m *memory) trimLocked(cutoff time.Time) {
	n := 0
	for n < len(m.ended) && (len(m.ended)-n > m.keepEnded || !m.ended[n].at.After(cutoff)) {
		delete(m.holds, m.ended[n].id)
		n++
	}
	if n > 0 {
		clear(m.ended[:n])
		m.ended = m.ended[n:]
	}
}

func (m *memory) GetHold(id string) (HoldInfo, error) {
	r, err := m.hold(id)
	if err != nil {
		return HoldInfo{}, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return cloneHold(r.info), nil
}

func (m *memory) GetHolds(ids []string) ([]HoldInfo, error) {
	out := make([]HoldInfo, 0, len(ids))
	for _, id := range ids {
		if h, err := m.GetHold(id); err == nil {
			out = append(out, h)
		}
	}
	return out, nil
}

func (m *memory) ListHolds(endedSince time.Time, maxEnded int) ([]HoldInfo, error) {
	m.mu.Lock()
	m.trimLocked(endedSince)
	rs := make([]*memHold, 0, len(m.holds))
	for _, r := range m.holds {
		rs = append(rs, r)
	}
	keep := map[string]bool{}
	for _, e := range m.ended[max(0, len(m.ended)-maxEnded):] {
		keep[e.id] = true
	}
	m.mu.Unlock()
	out := make([]HoldInfo, 0, len(rs))
	for _, r := range rs {
		r.mu.Lock()
		if r.info.Status == StatusPending || keep[r.info.ID] {
			out = append(out, cloneHold(r.info))
		}
		r.mu.Unlock()
	}
	return out, nil
}

func (m *memory) CreatePreApproval(p PreApproval, record func() error) error {
	if err := record(); err != nil {
		return err
	}
	r := &memPre{info: clonePre(p)}
	m.pmu.Lock()
	if _, dup := m.pre[p.ID]; dup {
		m.pmu.Unlock()
		return fmt.Errorf("pre-approval id %s collides with an existing one", p.ID)
	}
	m.pre[p.ID] = r
	for _, fp := range p.Fingerprints {
		m.byFP[fp] = append(m.byFP[fp], r)
	}
	m.pmu.Unlock()
	m.watch(Change{Kind: ChangePreApproval, ID: p.ID})
	return nil
}

func (m *memory) pre1(id string) (*memPre, error) {
	m.pmu.RLock()
	r := m.pre[id]
	m.pmu.RUnlock()
	if r == nil {
		return nil, fmt.Errorf("pre-approval %s: %w", id, ErrNotFound)
	}
	return r, nil
}

func (m *memory) UpdatePreApproval(id string, fn func(*PreApproval) (bool, error)) (PreApproval, error) {
	r, err := m.pre1(id)
	if err != nil {
		return PreApproval{}, err
	}
	r.mu.Lock()
	next := clonePre(r.info)
	changed, ferr := fn(&next)
	if changed {
		r.info = next
	}
	cur := clonePre(r.info)
	r.mu.Unlock()
	if changed {
		m.watch(Change{Kind: ChangePreApproval, ID: id})
	}
	return cur, ferr
}

func (m *memory) MatchPreApproval(fingerprint, user, database string, now time.Time) (PreApproval, bool, error) {
	m.pmu.RLock()
	defer m.pmu.RUnlock()
	var best *PreApproval
	for _, r := range m.byFP[fingerprint] {
		r.mu.Lock()
		p := r.info
		if p.admits(user, database) && p.activeAt(now) && (best == nil || p.ExpiresAt.After(best.ExpiresAt)) {
			c := clonePre(p)
			best = &c
		}
		r.mu.Unlock()
	}
	if best == nil {
		return PreApproval{}, false, nil
	}
	return *best, true, nil
}

func (m *memory) GetPreApproval(id string) (PreApproval, error) {
	r, err := m.pre1(id)
	if err != nil {
		return PreApproval{}, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return clonePre(r.info), nil
}

func (m *memory) ListPreApprovals(endedSince time.Time) ([]PreApproval, error) {
	m.pmu.Lock()
	m.purgeLocked(endedSince)
	out := make([]PreApproval, 0, len(m.pre))
	for _, r := range m.pre {
		r.mu.Lock()
		out = append(out, clonePre(r.info))
		r.mu.Unlock()
	}
	m.pmu.Unlock()
	return out, nil
}

// purgeLocked forgets pre-approvals that ended before cutoff.
func (m *memory) purgeLocked(cutoff time.Time) {
	for id, r := range m.pre {
		r.mu.Lock()
		end := r.info.endedAt()
		r.mu.Unlock()
		if end.IsZero() || end.After(cutoff) {
			continue
		}
		delete(m.pre, id)
		for _, fp := range r.info.Fingerprints {
			rest := slices.DeleteFunc(m.byFP[fp], func(q *memPre) bool { return q == r })
			if len(rest) == 0 {
				delete(m.byFP, fp)
			} else {
				m.byFP[fp] = rest
			}
		}
	}
}

func cloneHold(h HoldInfo) HoldInfo {
	h.Fingerprints = nonNil(slices.Clone(h.Fingerprints))
	h.Approvals = nonNil(slices.Clone(h.Approvals))
	return h
}

func clonePre(p PreApproval) PreApproval {
	p.Fingerprints = slices.Clone(p.Fingerprints)
	return p
}
