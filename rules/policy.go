package rules

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync/atomic"
)

// Action is what pgmoat does with a statement.
type Action uint8

// Actions, weakest first: a message's action is the strongest of its
// statements' actions.
const (
	Allow Action = iota
	Log
	// Verify runs the statement under guard and decides from what it
	// really did: the policy would hold or block an effect the statement
	// may have (Effect.Possible), and only running it tells. It is never
	// written in a policy.
	Verify
	Hold
	Block
)

func (a Action) String() string {
	switch a {
	case Allow:
		return "allow"
	case Log:
		return "log"
	case Verify:
		return "verify"
	case Hold:
		return "hold"
	case Block:
		return "block"
	}
	return fmt.Sprintf("Action(%d)", uint8(a))
}

// ParseAction parses allow, log, hold or block.
func ParseAction(s string) (Action, error) {
	switch s {
	case "allow":
		return Allow, nil
	case "log":
		return Log, nil
	case "hold":
		return Hold, nil
	case "block":
		return Block, nil
	}
	return 0, fmt.Errorf("unknown action %q (want allow, log, block or hold)", s)
}

// Names of the rules that decide when no policy rule matches.
const (
	RuleDefaultDestructive  = "default-destructive"
	RuleDefaultOpaque       = "default-opaque"
	RuleDefaultClusterAdmin = "default-cluster-admin"
)

// PolicyError is a policy validation error; Key is the dotted path of the
// offending key, e.g. "policy.rules[2].operations[0]".
type PolicyError struct {
	Key string
	Err error
}

func (e *PolicyError) Error() string { return e.Key + ": " + e.Err.Error() }
func (e *PolicyError) Unwrap() error { return e.Err }

// Policy is a compiled, immutable policy. It is safe for concurrent use.
type Policy struct {
	protect []pattern
	rules   []rule
	version uint64
	limits  []RowLimits // per protect pattern
}

// RowLimits bound the rows one statement run under guard may delete or
// update in a protected table: more than MaxRows, or MaxFraction of the
// table's rows or more, and the statement is judged as deleting or updating
// every row.
type RowLimits struct {
	MaxRows     int64
	MaxFraction float64
}

// DefaultRowLimits apply where policy.limits says nothing.
var DefaultRowLimits = RowLimits{MaxRows: 10000, MaxFraction: 0.5}

// Limits returns the row limits of protect pattern i.
func (p *Policy) Limits(i int) RowLimits {
	if i < 0 || i >= len(p.limits) {
		return DefaultRowLimits
	}
	return p.limits[i]
}

type pattern struct {
	text   string
	schema string // glob
	name   string // glob
}

type rule struct {
	name   string
	users  []string
	dbs    []string
	apps   []string
	nets   []netip.Prefix
	ops    opSet
	action Action
}

type opSet uint32

func (s opSet) has(op Operation) bool { return s&(1<<op) != 0 }

var policyVersion atomic.Uint64

// Compile validates cfg and builds a Policy. Errors are *PolicyError values
// naming the key, such as
// `policy.rules[2].operations[0]: unknown operation "dorp"`.
//
// Protect patterns are written as PostgreSQL's folded names: "billing.*"
// protects every table of schema billing, `public.Users` only a table
// created as "Users" (quoted). A * matches any run of characters. The
// first "." separates schema from table.
func Compile(cfg PolicyConfig) (*Policy, error) {
	p := &Policy{version: policyVersion.Add(1)}
	for i, s := range cfg.Protect {
		pat, err := parsePattern(s)
		if err != nil {
			return nil, &PolicyError{Key: fmt.Sprintf("policy.protect[%d]", i), Err: err}
		}
		p.protect = append(p.protect, pat)
	}
	if err := p.compileLimits(cfg.Limits); err != nil {
		return nil, err
	}
	if len(cfg.Rules) > 64 {
		return nil, &PolicyError{Key: "policy.rules", Err: fmt.Errorf("at most 64 rules, got %d", len(cfg.Rules))}
	}
	names := map[string]int{}
	for i, rc := range cfg.Rules {
		key := fmt.Sprintf("policy.rules[%d]", i)
		r := rule{name: rc.Name}
		if rc.Name == "" {
			return nil, &PolicyError{Key: key + ".name", Err: errors.New("is required")}
		}
		if j, dup := names[rc.Name]; dup {
			return nil, &PolicyError{Key: key + ".name", Err: fmt.Errorf("duplicate rule name %q (also policy.rules[%d])", rc.Name, j)}
		}
		if strings.HasPrefix(rc.Name, "default-") {
			return nil, &PolicyError{Key: key + ".name", Err: fmt.Errorf("names starting with default- are reserved, got %q", rc.Name)}
		}
		names[rc.Name] = i
		for field, list := range map[string][]string{"users": rc.Match.Users, "databases": rc.Match.Databases, "applications": rc.Match.Applications} {
			for j, g := range list {
				if g == "" {
					return nil, &PolicyError{Key: fmt.Sprintf("%s.match.%s[%d]", key, field, j), Err: errors.New("empty pattern")}
				}
			}
		}
		r.users, r.dbs, r.apps = rc.Match.Users, rc.Match.Databases, rc.Match.Applications
		for j, c := range rc.Match.Clients {
			pfx, err := parseClient(c)
			if err != nil {
				return nil, &PolicyError{Key: fmt.Sprintf("%s.match.clients[%d]", key, j), Err: err}
			}
			r.nets = append(r.nets, pfx)
		}
		if len(rc.Operations) == 0 {
			return nil, &PolicyError{Key: key + ".operations", Err: errors.New("is required (an operation name or destructive)")}
		}
		for j, o := range rc.Operations {
			if o == "destructive" {
				r.ops |= destructiveOps
				continue
			}
			op, ok := ParseOperation(o)
			if !ok {
				return nil, &PolicyError{Key: fmt.Sprintf("%s.operations[%d]", key, j), Err: fmt.Errorf("unknown operation %q (want %s or destructive)", o, strings.Join(operationNames(), ", "))}
			}
			r.ops |= 1 << op
		}
		a, err := ParseAction(rc.Action)
		if err != nil {
			return nil, &PolicyError{Key: key + ".action", Err: err}
		}
		r.action = a
		p.rules = append(p.rules, r)
	}
	return p, nil
}

func parsePattern(s string) (pattern, error) {
	dot := strings.IndexByte(s, '.')
	if dot <= 0 || dot == len(s)-1 {
		return pattern{}, fmt.Errorf("invalid pattern %q: want schema.table, for example billing.* or public.users", s)
	}
	schema, name := s[:dot], s[dot+1:]
	if strings.ContainsAny(s, " \t\n\"") || strings.Contains(name, ".") {
		return pattern{}, fmt.Errorf("invalid pattern %q: want schema.table with names as PostgreSQL stores them (no quotes, spaces or extra dots)", s)
	}
	return pattern{text: s, schema: schema, name: name}, nil
}

func parseClient(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("invalid CIDR %q", s)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("invalid CIDR %q", s)
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

// Version identifies this compiled policy; every Compile yields a new one.
func (p *Policy) Version() uint64 { return p.version }

// ProtectsAnything reports whether the policy protects at least one pattern.
// A policy that protects nothing allows every statement.
func (p *Policy) ProtectsAnything() bool { return len(p.protect) > 0 }

// Patterns returns the protect patterns as written.
func (p *Policy) Patterns() []string {
	out := make([]string, len(p.protect))
	for i, pat := range p.protect {
		out[i] = pat.text
	}
	return out
}

// matchRules returns the bit mask of rules whose match selects this session.
func (p *Policy) matchRules(id *Identity) uint64 {
	var mask uint64
	for i, r := range p.rules {
		if r.matches(id) {
			mask |= 1 << i
		}
	}
	return mask
}

func (r *rule) matches(id *Identity) bool {
	return anyGlob(r.users, id.User) && anyGlob(r.dbs, id.Database) && anyGlob(r.apps, id.Application) && r.matchClient(id.Client)
}

func (r *rule) matchClient(a netip.Addr) bool {
	if len(r.nets) == 0 {
		return true
	}
	a = a.Unmap()
	for _, n := range r.nets {
		if n.Contains(a) {
			return true
		}
	}
	return false
}

func anyGlob(globs []string, s string) bool {
	if len(globs) == 0 {
		return true
	}
	for _, g := range globs {
		if glob(g, s) {
			return true
		}
	}
	return false
}

// protectedBy returns the first pattern protecting the table schema.name.
func (p *Policy) protectedBy(schema, name string) string {
	for _, pat := range p.protect {
		if glob(pat.schema, schema) && glob(pat.name, name) {
			return pat.text
		}
	}
	return ""
}

// schemaProtectedBy returns the first pattern that protects tables of schema.
func (p *Policy) schemaProtectedBy(schema string) string {
	for _, pat := range p.protect {
		if glob(pat.schema, schema) {
			return pat.text
		}
	}
	return ""
}

// anySchemaProtectedBy returns the first pattern that protects a table
// called name in some schema.
func (p *Policy) anySchemaProtectedBy(name string) string {
	for _, pat := range p.protect {
		if glob(pat.name, name) {
			return pat.text
		}
	}
	return ""
}

// decide applies the policy to a verdict's effects. An effect the
// statement only may have (Effect.Possible) that the policy would hold or
// block makes the statement Verify: run under guard, and judged again from
// what it really did.
func decide(pol *Policy, mask uint64, v *Verdict) {
	v.Action, v.Rule, v.Sentence = Allow, "", ""
	for _, ef := range v.Effects {
		reason, ok := pol.protects(ef)
		if !ok {
			continue
		}
		action, rule := pol.ruleFor(mask, ef.Op)
		if ef.Possible() && action > Verify {
			action = Verify
			reason += "; pgmoat verifies what it really does before it can commit (" + rule + ")"
		}
		if v.Rule == "" || action > v.Action {
			v.Action, v.Rule = action, rule
			what := ef.What
			if ef.Where != "" {
				what += " (" + ef.Where + ")"
			}
			v.Sentence = what + ": " + reason + "; rule " + rule
		}
	}
}

// protects says whether an effect touches something protected, and why.
func (p *Policy) protects(ef Effect) (string, bool) {
	o := ef.Object
	if !p.ProtectsAnything() || ef.Op == OpNone {
		return "", false
	}
	switch o.Kind {
	case KindEverything:
		return "may touch every protected table (" + strings.Join(p.Patterns(), ", ") + ")", true
	case KindDatabase:
		return "the database may hold protected tables (" + strings.Join(p.Patterns(), ", ") + ")", true
	case KindSchema:
		if pat := p.schemaProtectedBy(o.Name); pat != "" {
			return "schema holds tables protected by " + pat, true
		}
		return "", false
	}
	if o.Schema != "" {
		if pat := p.protectedBy(o.Schema, o.Name); pat != "" {
			return "table is protected by " + pat, true
		}
		return p.protectsAncestor(o)
	}
	for _, s := range o.Candidates {
		if pat := p.protectedBy(s, o.Name); pat != "" {
			return "may resolve to " + qualified(s, o.Name) + " through search_path, protected by " + pat, true
		}
	}
	if o.AnySchema {
		if pat := p.anySchemaProtectedBy(o.Name); pat != "" {
			return "search_path is unknown, so it may be a table protected by " + pat, true
		}
	}
	return p.protectsAncestor(o)
}

// protectsAncestor says whether the table an object descends from as a
// partition or inheritance child is protected (see Object.Under).
func (p *Policy) protectsAncestor(o Object) (string, bool) {
	a := o.Under
	if a == nil {
		return "", false
	}
	pat := p.anySchemaProtectedBy(a.Name)
	if a.Schema != "" {
		pat = p.protectedBy(a.Schema, a.Name)
	}
	if pat == "" {
		return "", false
	}
	return a.Lineage + ", protected by " + pat, true
}

// ruleFor returns the action and rule name for an effect on a protected
// object: the first matching rule that covers op, else the default.
func (p *Policy) ruleFor(mask uint64, op Operation) (Action, string) {
	for i := range p.rules {
		if mask&(1<<i) != 0 && p.rules[i].ops.has(op) {
			return p.rules[i].action, p.rules[i].name
		}
	}
	switch op {
	case OpOpaque, OpLexerState, OpUnparseable:
		return Block, RuleDefaultOpaque
	case OpClusterAdmin:
		return Block, RuleDefaultClusterAdmin
	}
	return Block, RuleDefaultDestructive
}

// compileLimits validates policy.limits: keys are "default" or protect
// patterns as written; max_rows is at least 0, max_fraction in [0, 1].
func (p *Policy) compileLimits(cfg map[string]LimitsConfig) error {
	def := DefaultRowLimits
	check := func(key string, lc LimitsConfig, base RowLimits) (RowLimits, error) {
		if lc.MaxRows != nil {
			if *lc.MaxRows < 0 {
				return base, &PolicyError{Key: "policy.limits." + key + ".max_rows", Err: fmt.Errorf("must be 0 or more, got %d", *lc.MaxRows)}
			}
			base.MaxRows = *lc.MaxRows
		}
		if lc.MaxFraction != nil {
			if *lc.MaxFraction < 0 || *lc.MaxFraction > 1 {
				return base, &PolicyError{Key: "policy.limits." + key + ".max_fraction", Err: fmt.Errorf("must be between 0 and 1, got %v", *lc.MaxFraction)}
			}
			base.MaxFraction = *lc.MaxFraction
		}
		return base, nil
	}
	if lc, ok := cfg["default"]; ok {
		var err error
		if def, err = check("default", lc, def); err != nil {
			return err
		}
	}
	keys := make([]string, 0, len(cfg))
	for k := range cfg {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if k == "default" {
			continue
		}
		found := false
		for _, pat := range p.protect {
			found = found || pat.text == k
		}
		if !found {
			return &PolicyError{Key: "policy.limits." + k, Err: fmt.Errorf("is not a protect pattern (want default or one of %s)", strings.Join(p.Patterns(), ", "))}
		}
	}
	p.limits = make([]RowLimits, len(p.protect))
	for i, pat := range p.protect {
		p.limits[i] = def
		if lc, ok := cfg[pat.text]; ok {
			l, err := check(pat.text, lc, def)
			if err != nil {
				return err
			}
			p.limits[i] = l
		}
	}
	return nil
}
