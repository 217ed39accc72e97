package rules

import (
	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// Settings that change where pgmoat cannot see. A SET or set_config at the
// top of a statement is tracked exactly (see settings.go); the same inside
// a DO block or a function body runs only if the code reaches it, a
// function's plain SET outlives the function, and code pgmoat cannot read
// may set anything. After a statement that runs such code the session's
// search_path is unknown, the strictest assumption, until the proxy reads
// the settings back from the server (ChangeStaleSettings, Session.ReadBack).
// Settings that change how the server lexes (standard_conforming_strings,
// client_encoding) are judged wherever they are set, and the server reports
// them in ParameterStatus besides.

// staleness says why the session's settings may have changed unseen.
type staleness uint8

const (
	// staleCode: code ran that may have set search_path or the role.
	staleCode staleness = 1 << iota
	// staleReload: the server reloaded its configuration
	// (pg_reload_conf), which may change every setting that came from it.
	staleReload
)

// markStale records that the statement being analysed may change the
// session's settings where pgmoat cannot see.
func (e *env) markStale(s staleness) { e.stale |= s }

// ranCode records that code that may have changed settings (as s says)
// ran: the statement's settings are stale, and for the rest of the code
// around it, if any, search_path is unknown.
func (e *env) ranCode(s staleness) {
	if s == 0 {
		return
	}
	e.markStale(s)
	if e.depth > 0 {
		e.tx.cur.path = pathVal{}
	}
}

// bodySetsPath records a change of search_path to v inside code: for the
// rest of the code the path is v or what it was (the SET may not run),
// and after the statement it is stale.
func (e *env) bodySetsPath(v pathVal) {
	e.tx.cur.path = mergePath(e.tx.cur.path, v)
	e.markStale(staleCode)
}

// setInBody judges a SET or RESET inside a DO block or a function body
// (depth > 0) for what it does to the session's name resolution.
func (e *env) setInBody(s *pg_query.VariableSetStmt, name string, values []string, known bool) {
	switch name {
	case "search_path":
		switch s.Kind {
		case pg_query.VariableSetKind_VAR_SET_VALUE:
			e.bodySetsPath(pathVal{known: known, entries: truncateIdents(values)})
		case pg_query.VariableSetKind_VAR_SET_DEFAULT, pg_query.VariableSetKind_VAR_RESET:
			e.bodySetsPath(e.tx.initial.path)
		}
	case "role", "session_authorization":
		// $user follows the current role.
		e.bodySetsPath(pathVal{})
	case "":
		if s.Kind == pg_query.VariableSetKind_VAR_RESET_ALL {
			e.bodySetsPath(pathVal{})
		}
	}
}

// settleStale ends the analysis of a top-level statement: if it may have
// changed settings unseen, it reports ChangeStaleSettings, which makes
// search_path unknown for the statements after it.
func (e *env) settleStale() {
	if e.stale == 0 {
		return
	}
	name := ""
	if e.stale&staleReload != 0 {
		name = "reload"
	}
	e.stale = 0
	e.change(StateChange{Kind: ChangeStaleSettings, Name: name})
}
