package enforce

import (
	"strconv"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgmoat/pgmoat/guard"
	"github.com/pgmoat/pgmoat/proxy"
)

// The guard's snapshot query is prepared once per session (and again
// after a reload changes the protect patterns, or after the client
// DISCARDs or DEALLOCATEs ALL), under a statement name of pgmoat's own:
// planning it costs more than running it.

// snapshotPortal is the portal the snapshot runs in; it is closed at once.
const snapshotPortal = "pgmoat_snapshot"

// snapshotRun is one run of the snapshot in an exchange: the replies of
// its requests, and the Execute's, which collects the rows.
type snapshotRun struct{ extRun }

// addSnapshot adds a run of the session's prepared snapshot to x (Parse
// first when it is not prepared yet). sync ends it with a Sync, so that
// an error in it skips nothing after it: the simple-Query path needs
// that; in the extended protocol the client's batch must not be cut.
func (st *sessionState) addSnapshot(x *proxy.Exchange, sync bool) *snapshotRun {
	pol := st.e.engine.Policy()
	st.mu.Lock()
	name := st.snapName
	parse := st.snapPolicy != pol.Version() || name == ""
	old := ""
	if parse {
		old = name
		name = "pgmoat_snapshot_" + strconv.FormatUint(pol.Version(), 10)
		st.snapName, st.snapPolicy = name, pol.Version()
	}
	st.mu.Unlock()
	r := &snapshotRun{}
	if parse {
		if old != "" {
			r.all = append(r.all, x.Add(&pgproto3.Close{ObjectType: 'S', Name: old}, proxy.ReplyHide))
		}
		r.all = append(r.all,
			x.Add(&pgproto3.Close{ObjectType: 'S', Name: name}, proxy.ReplyHide),
			x.Add(&pgproto3.Parse{Name: name, Query: guard.Query(pol.Patterns())}, proxy.ReplyHide))
	}
	r.all = append(r.all, x.Add(&pgproto3.Bind{DestinationPortal: snapshotPortal, PreparedStatement: name}, proxy.ReplyHide))
	r.exec = x.Add(&pgproto3.Execute{Portal: snapshotPortal}, proxy.ReplyCollect)
	r.all = append(r.all, r.exec, x.Add(&pgproto3.Close{ObjectType: 'P', Name: snapshotPortal}, proxy.ReplyHide))
	if sync {
		r.all = append(r.all, x.Add(&pgproto3.Sync{}, proxy.ReplyHide))
	}
	return r
}

// snapshotFailed notes that the prepared snapshot may be gone (the
// client deallocated it, say): the next run prepares it again.
func (st *sessionState) snapshotFailed() {
	st.mu.Lock()
	st.snapName = ""
	st.mu.Unlock()
}
