package enforce

import (
	"context"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgmoat/pgmoat/proxy"
	"github.com/pgmoat/pgmoat/rules"
)

// catalogMaxAge is how long a database's catalog (which tables exist in
// which schema, foreign keys, view bases, children and partitions) is used
// before the next session of that database reloads it. A relation made
// since outside pgmoat is unknown to the analysis, which then counts a
// statement that may empty it as touching every protected table (it may
// be a view or parent over one); what sessions make through pgmoat the
// engine learns at once (rules.Engine.Learn). A session that makes or
// re-wires relations marks the catalog stale, so that the next session
// reloads it at once.
const catalogMaxAge = 30 * time.Second

// catalogs remembers when each database's catalog was loaded.
type catalogs struct {
	mu     sync.Mutex
	loaded map[string]time.Time
}

// learn asks the server, on the new session's own connection, what the
// analysis needs to resolve names as PostgreSQL will: the session's real
// search_path (roles and databases can set their own) and, when the
// database's catalog is missing or old, the catalog. Failures leave the
// session with an unknown search_path, the strictest assumption.
func (st *sessionState) learn(searchPathKnown bool) {
	if !searchPathKnown {
		rows, err := st.client.StartupQuery("SELECT pg_catalog.current_setting('search_path')")
		if err == nil && len(rows) == 1 && len(rows[0]) == 1 {
			if path, ok, err := rules.CheckStartup(map[string]string{"search_path": rows[0][0]}); err == nil && ok {
				st.analysis.SetSearchPath(path)
			}
		} else if err != nil {
			st.e.log.Warn("could not read the session's search_path; unqualified names count as possibly protected", "session", st.auditBase.SessionID, "err", err)
		}
	}
	db := st.auditBase.Database
	if !st.e.cats.claim(db, st.e.now()) {
		return
	}
	rows, err := st.client.StartupQuery(rules.CatalogQuery)
	if err != nil {
		st.e.log.Warn("could not load the database catalog", "database", db, "err", err)
		st.e.cats.release(db)
		return
	}
	cat := rules.NewCatalog()
	for _, r := range rows {
		if len(r) == 5 {
			cat.AddRow(r[0], r[1], r[2], r[3], r[4])
		}
	}
	st.e.engine.SetCatalog(db, cat)
}

// claim reports whether the caller should (re)load db's catalog, and if so
// marks it loaded so that concurrent sessions do not all load it.
func (cs *catalogs) claim(db string, now time.Time) bool {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if t, ok := cs.loaded[db]; ok && now.Sub(t) < catalogMaxAge {
		return false
	}
	if cs.loaded == nil {
		cs.loaded = map[string]time.Time{}
	}
	cs.loaded[db] = now
	return true
}

// release forgets a claim whose load failed.
func (cs *catalogs) release(db string) {
	cs.mu.Lock()
	delete(cs.loaded, db)
	cs.mu.Unlock()
}

// reloadCatalog loads the database's catalog again on the session's own
// connection, invisibly to the client, after DDL that ran under guard:
// functions, triggers, rules, types and the rest that DDL made or changed
// count for every session's next statement, not after catalogMaxAge. Read
// inside the client's transaction it may hold what is not committed yet,
// which errs towards knowing more. A failed load keeps the old catalog
// and leaves the next session to load it.
func (st *sessionState) reloadCatalog(ctx context.Context) error {
	x := st.client.NewExchange()
	r := x.Add(&pgproto3.Query{String: rules.CatalogQuery}, proxy.ReplyCollect)
	if err := x.Run(ctx); err != nil {
		return proxy.Refuse("08006", "pgmoat lost track of the server while reading the catalog: "+err.Error(), "")
	}
	db := st.auditBase.Database
	if r.Err != nil {
		st.e.log.Warn("could not reload the database catalog after DDL", "database", db, "err", r.Err.Message)
		st.e.cats.release(db)
		return nil
	}
	cat := rules.NewCatalog()
	for _, row := range r.Rows {
		if len(row) == 5 {
			cat.AddRow(string(row[0]), string(row[1]), string(row[2]), string(row[3]), string(row[4]))
		}
	}
	st.e.engine.SetCatalog(db, cat)
	st.e.cats.touch(db, st.e.now())
	return nil
}

// touch records that db's catalog was just loaded.
func (cs *catalogs) touch(db string, now time.Time) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.loaded == nil {
		cs.loaded = map[string]time.Time{}
	}
	cs.loaded[db] = now
}

// hasDDL reports whether any of the statements is DDL.
func hasDDL(stmts []*rules.Verdict) bool {
	for _, v := range stmts {
		if v.DDL {
			return true
		}
	}
	return false
}
