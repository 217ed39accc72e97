package rules

import "context"

// JudgeScript analyses a whole file of SQL (a migration) as `pgmoat check`
// does: statement by statement, with search_path, role and transactions
// tracked through the file, without the cache. s supplies the identity
// rules match on and the starting search_path (unknown unless set with
// SetSearchPath). Verdict positions are the file's lines and columns.
// With a catalog (SetCatalog for s's database) it is as strict as Judge
// about relations the catalog does not hold, so check and serve agree.
func (e *Engine) JudgeScript(s *Session, sql string) *Result {
	pol := e.pol.Load()
	ce := e.catalog(s.id.Database)
	s.stateKey(pol, ce) // computes the session's rule mask
	r, _ := e.full(context.Background(), pol, ce, s, sql, true)
	return r
}
