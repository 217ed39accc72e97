package rules

import (
	"fmt"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// Fingerprints splits sql into statements with PostgreSQL's own parser and
// returns each statement's pg_query fingerprint (literals do not change
// it). Pre-approvals register these and enforcement compares them, so both
// sides must go through this one function.
func Fingerprints(sql string) ([]string, error) {
	stmts, err := pg_query.SplitWithParser(sql, true)
	if err != nil {
		return nil, fmt.Errorf("split: %w", err)
	}
	fps := make([]string, 0, len(stmts))
	for _, s := range stmts {
		if s == "" {
			continue
		}
		fp, err := pg_query.Fingerprint(s)
		if err != nil {
			return nil, fmt.Errorf("fingerprint %q: %w", s, err)
		}
		fps = append(fps, fp)
	}
	return fps, nil
}
