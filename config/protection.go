package config

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/pgmoat/pgmoat/rules"
)

// Protection is the part of a configuration that decides what pgmoat
// protects and who may let a destructive statement through: the policy, the
// hold settings and the admin tokens (names and roles, never secrets). It
// is what a reload must not lower by accident (CheckReload), what
// /metrics fingerprints (Hash) and what GET /api/v1/policy returns, so
// that `pgmoat config check --against` runs the same rule as the running
// instance.
type Protection struct {
	Policy rules.PolicyConfig `json:"policy"`
	Holds  HoldsPolicy        `json:"holds"`
	Tokens []TokenRole        `json:"tokens"`
	// Stated lists the guarded sections (GuardedSections) the file gives
	// a value, sorted. It is not part of the hash: it says how the file is
	// written, not what is enforced.
	Stated []string `json:"stated"`
}

// HoldsPolicy is the holds section without what is not protection (the
// webhook URL, which may carry a secret, and the public URL).
type HoldsPolicy struct {
	Timeout              string `json:"timeout"`
	ApprovalsRequired    int    `json:"approvals_required"`
	InTransaction        string `json:"in_transaction"`
	InTransactionTimeout string `json:"in_transaction_timeout"`
}

// TokenRole is an admin token as far as protection goes: who, with which
// role.
type TokenRole struct {
	Name string `json:"name"`
	Role string `json:"role"`
}

// GuardedSections are the sections a reload may not drop: when the running
// configuration's file states one and the new file does not, the new file
// is taken for a truncated one and refused. Removing one takes an explicit
// empty value (EmptyForm). policy.rules is not among them: without rules
// the defaults block every destructive statement on a protected table, so
// losing them never lowers protection (and removing them is how a policy
// is tightened).
var GuardedSections = []string{"policy", "policy.protect", "admin.tokens", "holds"}

// EmptyForm is how the file states a guarded section empty on purpose.
var EmptyForm = map[string]string{
	"policy":         "policy: {protect: []}",
	"policy.protect": "protect: [] under policy",
	"admin.tokens":   "tokens: [] under admin",
	"holds":          "holds: {}",
}

// Protection returns what c protects, in its effective form: defaults
// filled in, absent lists empty.
func (c *Config) Protection() Protection {
	p := Protection{
		Policy: rules.PolicyConfig{
			Protect: slices.Clone(c.Policy.Protect),
			Rules:   slices.Clone(c.Policy.Rules),
		},
		Holds: HoldsPolicy{
			Timeout:              c.Holds.Timeout.String(),
			ApprovalsRequired:    c.Holds.ApprovalsRequired,
			InTransaction:        c.Holds.InTransaction,
			InTransactionTimeout: c.Holds.InTransactionTimeout.String(),
		},
		Tokens: []TokenRole{},
		Stated: []string{},
	}
	if p.Policy.Protect == nil {
		p.Policy.Protect = []string{}
	}
	if p.Policy.Rules == nil {
		p.Policy.Rules = []rules.RuleConfig{}
	}
	for _, t := range c.Admin.Tokens {
		p.Tokens = append(p.Tokens, TokenRole{Name: t.Name, Role: t.Role})
	}
	sort.Slice(p.Tokens, func(i, j int) bool { return p.Tokens[i].Name < p.Tokens[j].Name })
	for _, k := range GuardedSections {
		if c.stated[k] {
			p.Stated = append(p.Stated, k)
		}
	}
	return p
}

// Hash is a short fingerprint of what p enforces: the first 16 hex digits
// of the SHA-256 of its JSON form without Stated. Two configurations with
// the same hash protect the same way, however their files are written.
func (p Protection) Hash() string {
	p.Stated = nil
	b, err := json.Marshal(p)
	if err != nil {
		panic(err) // strings, ints and slices of them always marshal
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// RulesByAction counts the policy's rules by action.
func (p Protection) RulesByAction() map[string]int {
	n := map[string]int{"allow": 0, "log": 0, "hold": 0, "block": 0}
	for _, r := range p.Policy.Rules {
		n[r.Action]++
	}
	return n
}

// TokensByRole counts the admin tokens by role.
func (p Protection) TokensByRole() map[string]int {
	n := map[string]int{RoleApprover: 0, RoleViewer: 0}
	for _, t := range p.Tokens {
		n[t.Role]++
	}
	return n
}

// Summary is a one-line description of p, for logs and `config check`.
func (p Protection) Summary() string {
	var b strings.Builder
	if len(p.Policy.Protect) == 0 {
		b.WriteString("protects nothing (every statement is allowed)")
	} else {
		fmt.Fprintf(&b, "protects %s", strings.Join(p.Policy.Protect, ", "))
	}
	by := p.RulesByAction()
	var rs []string
	for _, a := range []string{"block", "hold", "log", "allow"} {
		if by[a] > 0 {
			rs = append(rs, fmt.Sprintf("%d %s", by[a], a))
		}
	}
	switch len(p.Policy.Rules) {
	case 0:
		b.WriteString("; no rules")
	case 1:
		fmt.Fprintf(&b, "; 1 rule (%s)", rs[0])
	default:
		fmt.Fprintf(&b, "; %d rules (%s)", len(p.Policy.Rules), strings.Join(rs, ", "))
	}
	if len(p.Tokens) == 1 {
		b.WriteString("; 1 admin token")
	} else {
		fmt.Fprintf(&b, "; %d admin tokens", len(p.Tokens))
	}
	return b.String()
}

// Change is one difference in protection between two configurations.
type Change struct {
	// Text says what changed, e.g. "protection removed: billing.*" or
	// "rule migrations-need-approval: hold → allow".
	Text string `json:"change"`
	// Lowers is set when the change may let through, or let more people
	// release, a statement the old configuration stopped.
	Lowers bool `json:"lowers_protection"`
}

func (c Change) String() string {
	if c.Lowers {
		return c.Text + " (lowers protection)"
	}
	return c.Text
}

// TruncatedError refuses a reload whose file lacks a guarded section that
// the running configuration's file states.
type TruncatedError struct {
	Key string // the missing section, e.g. "policy" or "admin.tokens"
}

func (e *TruncatedError) Error() string {
	return fmt.Sprintf("the file does not state %s, which the running configuration has: it looks truncated, so it is refused and the running configuration stays in force (to remove the section on purpose, write %s)",
		e.Key, EmptyForm[e.Key])
}

// CheckReload is the reload rule, shared by SIGHUP, POST /api/v1/reload and
// `pgmoat config check`: next may replace running unless it lacks a
// guarded section running states (a *TruncatedError; the caller wraps it
// in an *Error naming the file). It returns how protection changes.
func CheckReload(running, next Protection) ([]Change, error) {
	for _, k := range GuardedSections {
		if slices.Contains(running.Stated, k) && !slices.Contains(next.Stated, k) {
			return nil, &TruncatedError{Key: k}
		}
	}
	return Diff(running, next), nil
}

// Lowers reports whether any of changes lowers protection.
func Lowers(changes []Change) bool {
	return slices.ContainsFunc(changes, func(c Change) bool { return c.Lowers })
}

// Diff lists how protection changes from old to next: protect patterns,
// rules (by name), hold settings and admin tokens. Lowers errs on the side
// of caution: a rule weaker than block that is new, moved up, widened or
// weakened, or that a removed stronger rule used to shadow, counts as
// lowering protection.
func Diff(old, next Protection) []Change {
	var out []Change
	add := func(lowers bool, format string, args ...any) {
		out = append(out, Change{Text: fmt.Sprintf(format, args...), Lowers: lowers})
	}
	for _, p := range old.Policy.Protect {
		if !slices.Contains(next.Policy.Protect, p) {
			add(true, "protection removed: %s", p)
		}
	}
	for _, p := range next.Policy.Protect {
		if !slices.Contains(old.Policy.Protect, p) {
			add(false, "protection added: %s", p)
		}
	}
	out = append(out, diffRules(old.Policy.Rules, next.Policy.Rules)...)

	oh, nh := old.Holds, next.Holds
	if oh.ApprovalsRequired != nh.ApprovalsRequired {
		add(nh.ApprovalsRequired < oh.ApprovalsRequired, "holds.approvals_required: %d → %d", oh.ApprovalsRequired, nh.ApprovalsRequired)
	}
	if oh.InTransaction != nh.InTransaction {
		add(nh.InTransaction == "hold", "holds.in_transaction: %s → %s", oh.InTransaction, nh.InTransaction)
	}
	if oh.Timeout != nh.Timeout {
		add(false, "holds.timeout: %s → %s", oh.Timeout, nh.Timeout)
	}
	if oh.InTransactionTimeout != nh.InTransactionTimeout {
		add(false, "holds.in_transaction_timeout: %s → %s", oh.InTransactionTimeout, nh.InTransactionTimeout)
	}

	roles := func(ts []TokenRole) map[string]string {
		m := make(map[string]string, len(ts))
		for _, t := range ts {
			m[t.Name] = t.Role
		}
		return m
	}
	or, nr := roles(old.Tokens), roles(next.Tokens)
	for _, t := range old.Tokens {
		switch role, ok := nr[t.Name]; {
		case !ok:
			add(false, "admin token %s (%s) removed", t.Name, t.Role)
		case role != t.Role:
			add(role == RoleApprover, "admin token %s: %s → %s", t.Name, t.Role, role)
		}
	}
	for _, t := range next.Tokens {
		if _, ok := or[t.Name]; !ok {
			add(t.Role == RoleApprover, "admin token %s (%s) added", t.Name, t.Role)
		}
	}
	return out
}

// strength orders actions as rules.Action does: allow < log < hold < block.
func strength(action string) int {
	a, err := rules.ParseAction(action)
	if err != nil {
		return int(rules.Block)
	}
	return int(a)
}

func diffRules(old, next []rules.RuleConfig) []Change {
	var out []Change
	add := func(lowers bool, format string, args ...any) {
		out = append(out, Change{Text: fmt.Sprintf(format, args...), Lowers: lowers})
	}
	index := func(rs []rules.RuleConfig) map[string]int {
		m := make(map[string]int, len(rs))
		for i, r := range rs {
			m[r.Name] = i
		}
		return m
	}
	oi, ni := index(old), index(next)
	block := strength("block")

	for i, r := range old {
		if _, kept := ni[r.Name]; kept {
			continue
		}
		// A removed rule unshadows the weaker rules after it.
		shadowed := false
		for _, later := range old[i+1:] {
			if _, kept := ni[later.Name]; kept && strength(later.Action) < strength(r.Action) {
				shadowed = true
			}
		}
		add(shadowed, "rule %s removed (was: %s)", r.Name, describeRule(r))
	}
	// Rules kept in both, in the new order: did any move ahead of a rule
	// it used to follow?
	var keptOld []int
	for _, r := range next {
		if j, ok := oi[r.Name]; ok {
			keptOld = append(keptOld, j)
		}
	}
	for _, r := range next {
		j, existed := oi[r.Name]
		weak := strength(r.Action) < block
		if !existed {
			add(weak, "rule %s added: %s", r.Name, describeRule(r))
			continue
		}
		o := old[j]
		if o.Action != r.Action {
			add(strength(r.Action) < strength(o.Action), "rule %s: %s → %s", r.Name, o.Action, r.Action)
		}
		if !slices.Equal(o.Operations, r.Operations) {
			add(weak, "rule %s: operations [%s] → [%s]", r.Name, strings.Join(o.Operations, ", "), strings.Join(r.Operations, ", "))
		}
		if m, n := describeMatch(o.Match), describeMatch(r.Match); m != n {
			add(weak, "rule %s: match %s → %s", r.Name, m, n)
		}
		// Moved ahead of a rule that used to come first?
		pos := slices.Index(keptOld, j)
		for _, k := range keptOld[pos+1:] {
			if k < j {
				add(weak, "rule %s moved ahead of rule %s", r.Name, old[k].Name)
				break
			}
		}
	}
	return out
}

// describeRule says what a rule does, e.g. "hold destructive for
// applications [goose, migrate]".
func describeRule(r rules.RuleConfig) string {
	return fmt.Sprintf("%s %s for %s", r.Action, strings.Join(r.Operations, ", "), describeMatch(r.Match))
}

func describeMatch(m rules.MatchConfig) string {
	var parts []string
	for _, f := range []struct {
		name string
		list []string
	}{{"users", m.Users}, {"databases", m.Databases}, {"applications", m.Applications}, {"clients", m.Clients}} {
		if len(f.list) > 0 {
			parts = append(parts, fmt.Sprintf("%s [%s]", f.name, strings.Join(f.list, ", ")))
		}
	}
	if len(parts) == 0 {
		return "every session"
	}
	return strings.Join(parts, " and ")
}
