package rules

import (
	"context"
	"errors"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// chunkBytes is about how much text one libpg_query call parses when a
// message is long. libpg_query's cost per statement grows with the size of
// what it parses at once: 100k short statements cost 2.5 s of CPU parsed
// whole, 0.7 s in pieces of 64 KiB and 0.63 s in pieces of 1–4 KiB (below
// that, the fixed cost of a call shows). One call cannot be interrupted;
// between pieces the analysis checks its budget and its context.
const chunkBytes = 4 << 10

// errStopped wraps the cause when a message's analysis stopped because its
// context ended (the session is gone).
var errStopped = errors.New("analysis stopped")

// StoppedError says that the analysis of a message stopped because its
// context ended: the session it was for is gone, and the message was not
// forwarded.
type StoppedError struct{ Cause error }

func (e *StoppedError) Error() string { return errStopped.Error() + ": " + e.Cause.Error() }
func (e *StoppedError) Unwrap() error { return errStopped }

// parseChunks parses sql, whose top-level statement boundaries scanBounds
// proposed as cuts, piece by piece, and calls each with every statement in
// order, its location made relative to sql. It stops at each's first error
// and when ctx ends (a *StoppedError). A parse error is the message's:
// when a piece does not parse, the rest of the text is parsed whole, so a
// cut that was no statement boundary costs one more parse, and an error
// reported is one the whole text has.
func parseChunks(ctx context.Context, sql string, cuts []int, each func(raw *pg_query.RawStmt) error) error {
	start := 0
	for i := 0; start < len(sql); i++ {
		if err := ctx.Err(); err != nil {
			return &StoppedError{Cause: context.Cause(ctx)}
		}
		end := len(sql)
		if i < len(cuts) {
			end = cuts[i]
		}
		tree, err := pg_query.Parse(sql[start:end])
		if err != nil && end < len(sql) {
			end = len(sql)
			tree, err = pg_query.Parse(sql[start:])
			i = len(cuts)
		}
		if err != nil {
			return err
		}
		for _, raw := range tree.Stmts {
			if raw.StmtLen == 0 {
				// The last statement of the piece: it runs to the piece's end.
				raw.StmtLen = int32(end - start - int(raw.StmtLocation))
			}
			raw.StmtLocation += int32(start)
			if err := each(raw); err != nil {
				return err
			}
		}
		start = end
	}
	return nil
}
