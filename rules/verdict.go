package rules

import (
	"sync"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// Verdict is the decision on one statement of a message. Verdicts handed
// out by an Engine may be shared with other sessions through the cache:
// treat them as read-only.
type Verdict struct {
	Text      string // the statement as written, trimmed of surrounding space
	Offset    int    // byte offset of Text in the message
	Line, Col int    // 1-based line and column (in bytes) of Text in the message
	Effects   []Effect
	Action    Action
	Rule      string // the policy rule, or a default-* rule; "" when nothing protected is touched
	Sentence  string // for people: what, why, which rule
	Changes   []StateChange
	// CopyIn says the statement is COPY ... FROM STDIN: it reads data
	// from the client while it runs.
	CopyIn bool
	// DDL says the statement defines or changes database objects (what
	// event triggers fire on).
	DDL bool

	fpOnce sync.Once
	fp     string
	fpErr  error
}

// Fingerprint returns the statement's pg_query fingerprint, computed on
// first use (the same value rules.Fingerprints returns for it). A text
// longer than DefaultLimits.MaxBytes has none: libpg_query would parse it
// whole, at many times its size (it is unparseable anyway, and nothing can
// be pre-approved for it).
func (v *Verdict) Fingerprint() (string, error) {
	v.fpOnce.Do(func() {
		if len(v.Text) > DefaultLimits.MaxBytes {
			v.fpErr = &BoundsError{Bytes: len(v.Text), Limits: DefaultLimits}
			return
		}
		v.fp, v.fpErr = pg_query.Fingerprint(v.Text)
	})
	return v.fp, v.fpErr
}

// Path says how a Result was reached, for metrics.
type Path uint8

// Decision paths.
const (
	PathFull  Path = iota // parsed and analysed
	PathCache             // exact text seen before in the same state
	PathFast              // same statement with other literals seen before
)

func (p Path) String() string {
	return [...]string{"full", "cache", "fast"}[p]
}

// Result is the decision on a whole message (a simple Query, a Parse, a
// script). Action is the strongest of the statements' actions and Decider
// the index of the first statement with that action (-1 when there are no
// statements). Results may be shared: treat them as read-only.
type Result struct {
	Statements []*Verdict
	Action     Action
	Decider    int
	Path       Path

	mem *fastResult // the allocation r is part of, when Session.Recycle may reuse it
}

// Keep makes r, a Result of Engine.JudgeBorrowed, refer to text, a copy
// of the text it was judged from that the caller keeps, rather than to the
// borrowed one. Only the fast path's verdicts are cut from the message's
// text; a cached Result's texts are the cache's own, and are left alone.
func (r *Result) Keep(text string) {
	if !r.Borrows() {
		return
	}
	for _, v := range r.Statements {
		v.Text = text[v.Offset : v.Offset+len(v.Text)]
		for i := range v.Changes {
			if v.Changes[i].Kind == ChangePrepare {
				v.Changes[i].Text = v.Text
			}
		}
	}
}

// Borrows reports whether r, a Result of Engine.JudgeBorrowed, refers to
// the borrowed text: only the fast path's does, and only its needs Keep
// before it outlives that text.
func (r *Result) Borrows() bool { return r.Path == PathFast }

// Decision returns the deciding verdict, or nil.
func (r *Result) Decision() *Verdict {
	if r.Decider < 0 {
		return nil
	}
	return r.Statements[r.Decider]
}

func (r *Result) finish() {
	r.Action, r.Decider = Allow, -1
	for i, v := range r.Statements {
		if r.Decider < 0 || v.Action > r.Action {
			r.Action, r.Decider = v.Action, i
		}
	}
}

// PreparesTransaction reports whether the statement is PREPARE
// TRANSACTION.
func (v *Verdict) PreparesTransaction() bool {
	for _, c := range v.Changes {
		if c.Kind == ChangeCommit && c.Text == "PREPARE TRANSACTION" {
			return true
		}
	}
	return false
}

// Decisive returns the effects that decided the verdict: all of them when
// it is Verify, else the certain ones (a statement blocked for what it
// says is not also "possibly" anything).
func (v *Verdict) Decisive() []Effect {
	if v.Action == Verify {
		return v.Effects
	}
	var out []Effect
	for _, ef := range v.Effects {
		if !ef.Possible() {
			out = append(out, ef)
		}
	}
	return out
}

// DecisiveOp returns the most severe operation among the Decisive effects
// (OpNone when there are none), without building their slice: the
// metrics count every statement under it.
func (v *Verdict) DecisiveOp() Operation {
	op := OpNone
	for i := range v.Effects {
		ef := &v.Effects[i]
		if ef.Op > op && (v.Action == Verify || !ef.Possible()) {
			op = ef.Op
		}
	}
	return op
}
