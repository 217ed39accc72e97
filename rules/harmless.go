package rules

import "strings"

// Proving a relation's own code harmless. A table whose defaults,
// checks, index expressions, policies or triggers call functions of the
// database's own runs code on every write; a view calling them, on every
// read. When every such function is SQL or PL/pgSQL whose body pgmoat
// reads and finds does nothing it would report, writing or reading the
// relation is as harmless as if it ran no code, and needs no guard (COPY
// FROM STDIN, which cannot run under guard, then passes too). Rules, and
// triggers executing functions pgmoat does not know or cannot read, are
// never proven harmless.

// codeReasons are the reasons CatalogQuery's code rows give for code
// that calls functions of the database's own, all of which its calls
// rows list (catalog_contract.go); triggers are listed by name.
var codeReasons = map[string]bool{
	"a default or generated column calling a function": true,
	"a check constraint calling a function":            true,
	"a domain check calling a function":                true,
	"an index expression calling a function":           true,
	"a row-level security policy calling a function":   true,
	"its query calls a function":                       true,
}

type harmlessKey struct {
	q     qname
	scope codeScope
}

// codeHarmless reports whether the code relation q runs in scope (why is
// what the catalog's code rows say it runs) is proven harmless. The
// proof does not depend on the session, so the catalog remembers it.
func (e *env) codeHarmless(q qname, scope codeScope, why string) bool {
	if e.cat == nil || e.probe != nil {
		return false
	}
	key := harmlessKey{q, scope}
	if v, ok := e.cat.contract.harmless.Load(key); ok {
		return v.(bool)
	}
	ok := e.cat.proveHarmless(q, scope, why)
	e.cat.contract.harmless.Store(key, ok)
	return ok
}

func (c *Catalog) proveHarmless(q qname, scope codeScope, why string) bool {
	var facts []callFact
	triggers := map[string]bool{}
	for _, cf := range c.contract.calls {
		if cf.rel != q {
			continue
		}
		if strings.HasPrefix(cf.what, "trigger ") {
			triggers[cf.what] = true
		}
		if cf.scope&scope != 0 {
			facts = append(facts, cf)
		}
	}
	for _, reason := range strings.Split(why, ", ") {
		if !codeReasons[reason] && !triggers[reason] {
			return false // a rule, or a trigger pgmoat cannot read
		}
	}
	e := newEnv(&Policy{}, c, "", txState{})
	for _, cf := range facts {
		fs := c.resolveFn(cf.fn)
		if len(fs) == 0 {
			return false
		}
		for _, f := range fs {
			if f.Lang != "sql" && f.Lang != "plpgsql" {
				return false
			}
			var out []Effect
			e.callFunctions([]*Function{f}, "", &out)
			if len(out) > 0 {
				return false
			}
		}
	}
	return true
}
