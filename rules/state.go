package rules

import (
	"net/netip"
	"slices"
)

// Identity is who a session is; policy rules match on it. It does not
// change during a session (SET ROLE changes the current role, tracked
// separately, not the identity rules see).
type Identity struct {
	User        string
	Database    string
	Application string
	Client      netip.Addr
}

// ChangeKind says what a StateChange does to a session.
type ChangeKind uint8

// Session state changes, reported per statement in Verdict.Changes.
const (
	// ChangeSearchPath: SET [LOCAL] search_path, set_config. SearchPath
	// holds the entries as the server stores them ("$user" unexpanded);
	// Known is false when pgmoat cannot tell the value. Merge means the
	// change may or may not happen (a set_config call in a query), so the
	// new path is the union of old and new.
	ChangeSearchPath ChangeKind = iota + 1
	// ChangeResetSearchPath: RESET search_path, SET search_path TO DEFAULT.
	ChangeResetSearchPath
	// ChangeRole: SET [LOCAL] ROLE / SESSION AUTHORIZATION; Name "" resets.
	ChangeRole
	// ChangePrepare: PREPARE Name AS ...; Text is the whole PREPARE statement.
	ChangePrepare
	// ChangeDeallocate: DEALLOCATE Name, or every statement when Name is "".
	ChangeDeallocate
	// ChangeResetAll: RESET ALL.
	ChangeResetAll
	// ChangeDiscardAll: DISCARD ALL (RESET ALL, DEALLOCATE ALL, ...).
	ChangeDiscardAll
	// Transaction control; Name is the savepoint. ChangeCommit's Text is
	// "PREPARE TRANSACTION" for that statement, which ends the session's
	// transaction as COMMIT does.
	ChangeBegin
	ChangeCommit
	ChangeRollback
	ChangeSavepoint
	ChangeRelease
	ChangeRollbackTo

	// Relation changes: what the session did to relations since the
	// catalog snapshot (see Session). Relation is the relation concerned,
	// resolved as at the statement (Schema pg_temp for temporary ones).

	// ChangeCreateRelation: CREATE TABLE / VIEW / MATERIALIZED VIEW /
	// FOREIGN TABLE, CREATE TABLE AS, SELECT INTO made Relation, a
	// relation pgmoat now knows (what it reaches comes in ChangeEdge).
	ChangeCreateRelation
	// ChangeEdge: an operation on Relation also reaches each of Objects,
	// as Edge says (a view's bases, a new child or partition, a table
	// with a foreign key to it, a rule's target).
	ChangeEdge
	// ChangeDropRelation: Relation is gone (DROP); the catalog's entry no
	// longer counts.
	ChangeDropRelation
	// ChangeRenameRelation: Relation is now Objects[0] (ALTER ... RENAME
	// TO, SET SCHEMA), with what it reached.
	ChangeRenameRelation
	// ChangeDropSchema: schema Name is gone, with its relations.
	ChangeDropSchema
	// ChangeDiscardTemp: DISCARD TEMP dropped the temporary relations
	// (DISCARD ALL does too).
	ChangeDiscardTemp

	// ChangeStaleSettings: the statement may have changed search_path or
	// the current role where pgmoat cannot see (a SET or set_config in a
	// DO block or a function body, code pgmoat cannot read, a reload of
	// the server's configuration), so the session's search_path is unknown
	// until the proxy reads the settings back from the server
	// (Session.ReadBack). Name is "reload" when the server's configuration
	// was reloaded: then what RESET and ROLLBACK return to may have
	// changed too.
	ChangeStaleSettings
	// ChangeDeclareCursor: DECLARE Name CURSOR FOR ...; Text is the
	// whole DECLARE statement: FETCH and MOVE run its query.
	ChangeDeclareCursor
	// ChangeCloseCursor: CLOSE Name, or every cursor when Name is "".
	ChangeCloseCursor
)

// EdgeKind says how an operation on one relation reaches another
// (StateChange.Edge).
type EdgeKind uint8

// Edge kinds.
const (
	// EdgeBase: DML through the relation changes the other: a view's
	// base, the target of a rule's action.
	EdgeBase EdgeKind = iota + 1
	// EdgeChild: the other inherits from the relation or is one of its
	// partitions: DML, TRUNCATE, DROP and ALTER of the relation reach it.
	EdgeChild
	// EdgeReferencedBy: the other has a foreign key to the relation:
	// TRUNCATE ... CASCADE of the relation reaches it.
	EdgeReferencedBy
	// EdgeRemote: DML through the relation may change any table (a
	// foreign table, whose server may be this one). Objects is empty.
	EdgeRemote
	// EdgeDeleteCascade: the other has a foreign key to the relation with
	// ON DELETE CASCADE: deleting the relation's rows deletes the other's.
	EdgeDeleteCascade
	// EdgeDeleteSet: the other has a foreign key to the relation with ON
	// DELETE SET NULL or SET DEFAULT: deleting the relation's rows
	// rewrites the other's.
	EdgeDeleteSet
	// EdgeUpdateAction: the other has a foreign key to the relation with
	// ON UPDATE CASCADE, SET NULL or SET DEFAULT: updating the relation's
	// key rewrites the other's rows.
	EdgeUpdateAction
)

// StateChange is a change a statement makes to session state that later
// analysis depends on. The proxy applies it (Session.Apply) once the
// statement has completed on the server.
type StateChange struct {
	Kind       ChangeKind
	Local      bool // SET LOCAL, set_config(..., true): until the end of the transaction
	Known      bool
	Merge      bool
	SearchPath []string
	Name       string
	Text       string
	// Relation changes.
	Relation Object
	Edge     EdgeKind
	Objects  []Object
}

// pathVal is a search_path value: its entries as stored by the server.
type pathVal struct {
	known   bool
	entries []string
}

func (p pathVal) equal(q pathVal) bool {
	if p.known != q.known || len(p.entries) != len(q.entries) {
		return false
	}
	// Values are never changed in place (a change makes a new slice), so
	// copies of one value, the usual case, share their entries.
	if len(p.entries) == 0 || &p.entries[0] == &q.entries[0] {
		return true
	}
	return slices.Equal(p.entries, q.entries)
}

func mergePath(a, b pathVal) pathVal {
	if !a.known || !b.known {
		return pathVal{}
	}
	out := pathVal{known: true, entries: slices.Clone(a.entries)}
	for _, e := range b.entries {
		if !slices.Contains(out.entries, e) {
			out.entries = append(out.entries, e)
		}
	}
	return out
}

// settings are the session settings that change what statements mean.
type settings struct {
	path pathVal
	role string // current role; "" = the session user
}

type savepoint struct {
	name      string
	cur, sess settings
}

// txState tracks settings through transactions with PostgreSQL's rules:
// a plain SET lasts past COMMIT but not ROLLBACK, SET LOCAL lasts until the
// transaction ends, ROLLBACK TO undoes what followed the savepoint, and
// COMMIT of a failed transaction is a ROLLBACK.
type txState struct {
	initial settings // at session start: what RESET returns to
	cur     settings // in force now
	sess    settings // what survives the end of the current transaction
	start   settings // sess when the transaction began
	inTx    bool
	// failed: the server reported the transaction block failed
	// (ReadyForQuery 'E'); it can only roll back, whatever the client
	// sends to end it.
	failed bool
	saves  []savepoint
}

func (t *txState) clone() txState {
	c := *t
	c.saves = slices.Clone(t.saves)
	return c
}

func (t *txState) set(s settings, local bool) {
	t.cur = s
	if !local {
		t.sess = s
	}
}

func (t *txState) apply(ch StateChange) {
	switch ch.Kind {
	case ChangeSearchPath:
		v := pathVal{known: ch.Known, entries: ch.SearchPath}
		if ch.Merge {
			v = mergePath(t.cur.path, v)
		}
		s := t.cur
		s.path = v
		t.setKeepOther(s, ch.Local, true)
	case ChangeResetSearchPath:
		s := t.cur
		s.path = t.initial.path
		t.setKeepOther(s, ch.Local, true)
	case ChangeRole:
		s := t.cur
		s.role = ch.Name
		t.setKeepOther(s, ch.Local, false)
	case ChangeResetAll, ChangeDiscardAll:
		t.set(t.initial, false)
	case ChangeBegin:
		if !t.inTx {
			t.inTx = true
			t.failed = false
			t.start = t.sess
			t.saves = t.saves[:0]
		}
	case ChangeCommit:
		if t.failed {
			// The server answers COMMIT (and PREPARE TRANSACTION) of a
			// failed transaction with ROLLBACK: its SETs are undone.
			t.rollback()
			break
		}
		t.cur = t.sess
		t.inTx = false
		t.saves = t.saves[:0]
	case ChangeRollback:
		t.rollback()
	case ChangeSavepoint:
		t.saves = append(t.saves, savepoint{ch.Name, t.cur, t.sess})
	case ChangeRelease, ChangeRollbackTo:
		for i := len(t.saves) - 1; i >= 0; i-- {
			if t.saves[i].name == ch.Name {
				if ch.Kind == ChangeRollbackTo {
					t.cur, t.sess = t.saves[i].cur, t.saves[i].sess
					t.saves = t.saves[:i+1]
					t.failed = false
				} else {
					t.saves = t.saves[:i]
				}
				break
			}
		}
	case ChangeStaleSettings:
		t.stale(ch.Name == "reload")
	}
}

func (t *txState) rollback() {
	t.cur, t.sess = t.start, t.start
	if !t.inTx {
		t.cur = t.sess
	}
	t.inTx = false
	t.failed = false
	t.saves = t.saves[:0]
}

// stale forgets the search_path in force and the one that survives the
// transaction: code may have changed either (SET, SET LOCAL,
// set_config(..., true or false)). A rollback still undoes what the code
// did, so the values at the start of the transaction and at savepoints
// stay, unless the server reloaded its configuration: that changes the
// values that came from it, whatever the transaction does.
func (t *txState) stale(reload bool) {
	t.cur.path, t.sess.path = pathVal{}, pathVal{}
	if !reload {
		return
	}
	t.initial.path, t.start.path = pathVal{}, pathVal{}
	for i := range t.saves {
		t.saves[i].cur.path, t.saves[i].sess.path = pathVal{}, pathVal{}
	}
}

// readBack records settings read from the server: they are in force now,
// and outside a transaction block they are also what the session keeps.
// Inside one, whether code set them locally only running it told, so what
// survives the transaction stays as pgmoat knew it.
func (t *txState) readBack(s settings) {
	t.cur = s
	if !t.inTx {
		t.sess = s
	}
}

// setKeepOther changes one setting (path or role) of cur, and of sess when
// not local, leaving the other setting of sess alone.
func (t *txState) setKeepOther(s settings, local, path bool) {
	t.cur = s
	if local {
		return
	}
	if path {
		t.sess.path = s.path
	} else {
		t.sess.role = s.role
	}
}

// sync reconciles with the transaction status the server reported in
// ReadyForQuery ('I' idle, 'T' in transaction, 'E' failed transaction).
func (t *txState) sync(status byte) (changed bool) {
	switch status {
	case 'I':
		if t.inTx {
			changed = true
			switch {
			case t.failed:
				// A failed transaction can only have rolled back.
				t.sess = t.start
			default:
				// The transaction ended without pgmoat seeing how:
				// assume either outcome.
				t.sess.path = mergePath(t.sess.path, t.start.path)
				if t.sess.role != t.start.role {
					t.sess.path = pathVal{}
				}
			}
			t.inTx = false
			t.failed = false
			t.saves = t.saves[:0]
		}
		// SET LOCAL outside a transaction block lasts for the implicit
		// transaction of one message only.
		if !t.cur.equal(&t.sess) {
			t.cur = t.sess
			changed = true
		}
	case 'T', 'E':
		if !t.inTx {
			t.inTx = true
			t.start = t.sess
			changed = true
		}
		if failed := status == 'E'; failed != t.failed {
			t.failed = failed
			changed = true
		}
	}
	return changed
}

// equal takes pointers: txState.equal compares five settings in one
// expression, and copying each pair onto the stack for the call was most
// of the code a session's BEGIN and COMMIT ran through in the state key's
// look-up (bench/README.md, "The code a statement runs does not fit the
// instruction cache").
func (s *settings) equal(o *settings) bool { return s.role == o.role && s.path.equal(o.path) }

func (t *txState) equal(o *txState) bool {
	if t.inTx != o.inTx || t.failed != o.failed || !t.cur.equal(&o.cur) || !t.sess.equal(&o.sess) || !t.initial.equal(&o.initial) || len(t.saves) != len(o.saves) {
		return false
	}
	if t.inTx && !t.start.equal(&o.start) {
		return false
	}
	for i := range t.saves {
		a, b := &t.saves[i], &o.saves[i]
		if a.name != b.name || !a.cur.equal(&b.cur) || !a.sess.equal(&b.sess) {
			return false
		}
	}
	return true
}
