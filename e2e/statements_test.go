package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgmoat/pgmoat/internal/moattest"
	"github.com/pgmoat/pgmoat/internal/pgtest"
)

// A prepared statement is whatever the server holds under its name, and a
// Parse or Close of it does not always happen: a Parse of a name in use
// fails (42P05) and leaves the old statement, and after any error in the
// extended protocol the server skips every message up to the next Sync.
// pgmoat must judge a Bind by the statement the server will run. Each case
// prepares a statement pgmoat runs under guard (an UPDATE of every row of
// a protected table, which the guard measures and refuses), then tries to
// make pgmoat believe the name stands for something else, and binds it.
const wipeNotes = "UPDATE members SET note = 'gone' WHERE id > $1"

// rawSession speaks the protocol message by message through pgmoat.
type rawSession struct {
	t  *testing.T
	pc *pgconn.PgConn
	fe *pgproto3.Frontend
}

func newRawSession(t *testing.T, connString string) *rawSession {
	t.Helper()
	pc, err := pgconn.Connect(context.Background(), connString)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close(context.Background()) })
	return &rawSession{t: t, pc: pc, fe: pc.Frontend()}
}

// run sends msgs in one write, then reads until as many ReadyForQuery as
// msgs has Syncs and Queries, and returns the errors the server (or
// pgmoat) sent and the rows' first columns.
func (r *rawSession) run(msgs ...pgproto3.FrontendMessage) (errs []*pgproto3.ErrorResponse, rows []string) {
	r.t.Helper()
	ready := 0
	for _, m := range msgs {
		r.fe.Send(m)
		switch m.(type) {
		case *pgproto3.Sync, *pgproto3.Query:
			ready++
		}
	}
	if err := r.fe.Flush(); err != nil {
		r.t.Fatal(err)
	}
	r.pc.Conn().SetReadDeadline(time.Now().Add(30 * time.Second))
	defer r.pc.Conn().SetReadDeadline(time.Time{})
	for ready > 0 {
		msg, err := r.fe.Receive()
		if err != nil {
			r.t.Fatalf("reading the answers: %v", err)
		}
		switch m := msg.(type) {
		case *pgproto3.ReadyForQuery:
			ready--
		case *pgproto3.ErrorResponse:
			c := *m
			errs = append(errs, &c)
		case *pgproto3.DataRow:
			rows = append(rows, string(m.Values[0]))
		}
	}
	return errs, rows
}

func codes(errs []*pgproto3.ErrorResponse) string {
	var s []string
	for _, e := range errs {
		s = append(s, e.Code+" "+e.Message)
	}
	return strings.Join(s, "; ")
}

// wantRows fails t unless the answers held no error and exactly the rows
// want (their first columns, in order).
func wantRows(t *testing.T, errs []*pgproto3.ErrorResponse, rows []string, want ...string) {
	t.Helper()
	if len(errs) > 0 || strings.Join(rows, ",") != strings.Join(want, ",") || len(rows) != len(want) {
		t.Fatalf("rows %q, errors %s; want %q", rows, codes(errs), want)
	}
}

// goneNotes counts the rows of members that the attacks' UPDATE reached.
func goneNotes(t *testing.T, c *pgtest.Cluster, db string) int {
	t.Helper()
	var n int
	if err := direct(t, c, db).QueryRow(context.Background(), "SELECT count(*) FROM members WHERE note = 'gone'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func bindExec(stmt string, arg string) []pgproto3.FrontendMessage {
	return []pgproto3.FrontendMessage{
		&pgproto3.Bind{PreparedStatement: stmt, Parameters: [][]byte{[]byte(arg)}},
		&pgproto3.Execute{},
		&pgproto3.Sync{},
	}
}

func TestStatementIsWhatTheServerHolds(t *testing.T) {
	c := pgtest.Get(t)
	m := moattest.Start(t, c, moattest.Options{Config: guardPolicy})

	// untouched fails t unless the guarded UPDATE was refused and no row
	// of members changed.
	untouched := func(t *testing.T, db string, errs []*pgproto3.ErrorResponse) {
		t.Helper()
		if n := goneNotes(t, c, db); n != 0 {
			t.Fatalf("%d rows of members were updated; answers: %s", n, codes(errs))
		}
		for _, e := range errs {
			if e.Code == "42501" && strings.HasPrefix(e.Message, "pgmoat") {
				return
			}
		}
		t.Fatalf("no refusal from pgmoat; answers: %s", codes(errs))
	}
	prepare := func(t *testing.T, r *rawSession, name string) {
		t.Helper()
		if errs, _ := r.run(&pgproto3.Parse{Name: name, Query: wipeNotes}, &pgproto3.Sync{}); len(errs) > 0 {
			t.Fatalf("Parse of the UPDATE: %s", codes(errs))
		}
	}
	session := func(t *testing.T) (*rawSession, string) {
		db := guardDB(t, c)
		return newRawSession(t, m.SuperConnString(db)), db
	}
	badParse := &pgproto3.Parse{Name: "broken", Query: "SELECT * FROM no_such_table"}

	t.Run("Parse of a name in use", func(t *testing.T) {
		r, db := session(t)
		prepare(t, r, "s")
		errs, _ := r.run(&pgproto3.Parse{Name: "s", Query: "SELECT $1::int"}, &pgproto3.Sync{})
		if len(errs) != 1 || errs[0].Code != "42P05" {
			t.Fatalf("second Parse of s: %s, want 42P05", codes(errs))
		}
		errs, _ = r.run(bindExec("s", "0")...)
		untouched(t, db, errs)
	})
	t.Run("Parse of a name in use, pipelined", func(t *testing.T) {
		// The Bind reaches pgmoat before the server's answer to the
		// Parse: it waits for it.
		r, db := session(t)
		msgs := []pgproto3.FrontendMessage{
			&pgproto3.Parse{Name: "s", Query: wipeNotes}, &pgproto3.Sync{},
			&pgproto3.Parse{Name: "s", Query: "SELECT $1::int"}, &pgproto3.Sync{},
		}
		errs, _ := r.run(append(msgs, bindExec("s", "0")...)...)
		untouched(t, db, errs)
	})
	t.Run("Close skipped after an error", func(t *testing.T) {
		r, db := session(t)
		prepare(t, r, "s")
		r.run(badParse, &pgproto3.Close{ObjectType: 'S', Name: "s"}, &pgproto3.Sync{})
		errs, _ := r.run(bindExec("s", "0")...)
		untouched(t, db, errs)
	})
	t.Run("Close skipped, then the name Parsed again", func(t *testing.T) {
		r, db := session(t)
		prepare(t, r, "s")
		r.run(badParse, &pgproto3.Close{ObjectType: 'S', Name: "s"}, &pgproto3.Sync{})
		r.run(&pgproto3.Parse{Name: "s", Query: "SELECT $1::int"}, &pgproto3.Sync{})
		errs, _ := r.run(bindExec("s", "0")...)
		untouched(t, db, errs)
	})
	t.Run("unnamed statement's Parse skipped after an error", func(t *testing.T) {
		r, db := session(t)
		prepare(t, r, "")
		r.run(badParse, &pgproto3.Parse{Query: "SELECT $1::int"}, &pgproto3.Sync{})
		errs, _ := r.run(bindExec("", "0")...)
		untouched(t, db, errs)
	})
	t.Run("SQL EXECUTE after a Parse of a name in use", func(t *testing.T) {
		r, db := session(t)
		prepare(t, r, "s")
		r.run(&pgproto3.Parse{Name: "s", Query: "SELECT $1::int"}, &pgproto3.Sync{})
		errs, _ := r.run(&pgproto3.Query{String: "EXECUTE s(0)"})
		untouched(t, db, errs)
	})
	t.Run("SQL PREPARE, then a Parse of its name", func(t *testing.T) {
		r, db := session(t)
		if errs, _ := r.run(&pgproto3.Query{String: "PREPARE s(int) AS " + wipeNotes}); len(errs) > 0 {
			t.Fatalf("PREPARE: %s", codes(errs))
		}
		r.run(&pgproto3.Parse{Name: "s", Query: "SELECT $1::int"}, &pgproto3.Sync{})
		errs, _ := r.run(bindExec("s", "0")...)
		untouched(t, db, errs)
	})
	t.Run("DISCARD ALL keeps the unnamed statement", func(t *testing.T) {
		r, db := session(t)
		prepare(t, r, "")
		r.run(&pgproto3.Parse{Name: "d", Query: "DISCARD ALL"}, &pgproto3.Bind{PreparedStatement: "d"}, &pgproto3.Execute{}, &pgproto3.Sync{})
		errs, _ := r.run(bindExec("", "0")...)
		untouched(t, db, errs)
	})

	// What clients do every day still works.
	t.Run("Close, then the name Parsed again", func(t *testing.T) {
		r, _ := session(t)
		r.run(&pgproto3.Parse{Name: "s", Query: "SELECT 1"}, &pgproto3.Sync{})
		msgs := []pgproto3.FrontendMessage{
			&pgproto3.Close{ObjectType: 'S', Name: "s"}, &pgproto3.Sync{},
			&pgproto3.Parse{Name: "s", Query: "SELECT $1::int + 1"},
		}
		errs, rows := r.run(append(msgs, bindExec("s", "41")...)...)
		wantRows(t, errs, rows, "42")
	})
	t.Run("DEALLOCATE, then the name Parsed again", func(t *testing.T) {
		r, _ := session(t)
		r.run(&pgproto3.Parse{Name: "s", Query: "SELECT 1"}, &pgproto3.Sync{})
		r.run(&pgproto3.Query{String: "DEALLOCATE s"})
		errs, rows := r.run(append([]pgproto3.FrontendMessage{&pgproto3.Parse{Name: "s", Query: "SELECT $1::int * 2"}}, bindExec("s", "21")...)...)
		wantRows(t, errs, rows, "42")
	})
	t.Run("a portal and a statement of one name", func(t *testing.T) {
		// Portals and statements have namespaces of their own: a Bind
		// of portal s says nothing of statement s.
		r, _ := session(t)
		r.run(&pgproto3.Parse{Name: "one", Query: "SELECT 1"}, &pgproto3.Bind{DestinationPortal: "s", PreparedStatement: "one"},
			&pgproto3.Execute{Portal: "s"}, &pgproto3.Sync{})
		r.run(&pgproto3.Query{String: "PREPARE s AS SELECT 7"})
		guards := func() float64 {
			return metricValue(t, scrapeMetrics(t, m), "pgmoat_guarded_statements_total", nil)
		}
		before := guards()
		errs, rows := r.run(&pgproto3.Query{String: "EXECUTE s"})
		wantRows(t, errs, rows, "7")
		if after := guards(); after != before {
			t.Fatalf("EXECUTE of a known harmless statement ran under guard (pgmoat_guarded_statements_total %v -> %v)", before, after)
		}
	})
	t.Run("pipelined Parses of the unnamed statement", func(t *testing.T) {
		r, _ := session(t)
		var msgs []pgproto3.FrontendMessage
		for i := range 5 {
			msgs = append(msgs, &pgproto3.Parse{Query: "SELECT $1::int + " + string(rune('0'+i))})
			msgs = append(msgs, bindExec("", "10")...)
		}
		errs, rows := r.run(msgs...)
		wantRows(t, errs, rows, "10", "11", "12", "13", "14")
	})
}

// TestCursorIsAPortal: a cursor declared in SQL, or opened by a function,
// is a portal, which an Execute message runs as FETCH does. pgmoat judges
// FETCH by the cursor's query; an Execute of a portal no Bind made must
// not run it unjudged. Portals that Binds made run as before.
func TestCursorIsAPortal(t *testing.T) {
	c := pgtest.Get(t)
	m := moattest.Start(t, c, moattest.Options{Config: guardPolicy})
	const wipe = `SELECT run_sql('UPDATE members SET note = ''gone''')`
	const openP = `CREATE FUNCTION open_p() RETURNS refcursor LANGUAGE plpgsql AS $f$
DECLARE c refcursor := 'p';
BEGIN OPEN c FOR ` + wipe + `; RETURN c; END$f$;
CREATE FUNCTION reopen_p() RETURNS refcursor LANGUAGE plpgsql AS $f$
DECLARE c refcursor := 'p';
BEGIN CLOSE c; OPEN c FOR ` + wipe + `; RETURN c; END$f$`

	attack := func(t *testing.T, steps ...[]pgproto3.FrontendMessage) {
		t.Helper()
		db := guardDB(t, c)
		c.Exec(t, db, openP)
		r := newRawSession(t, m.SuperConnString(db))
		var answers []*pgproto3.ErrorResponse
		for _, msgs := range steps {
			errs, _ := r.run(msgs...)
			answers = append(answers, errs...)
		}
		if n := goneNotes(t, c, db); n != 0 {
			t.Fatalf("%d rows of members were updated; answers: %s", n, codes(answers))
		}
	}
	q := func(sql string) []pgproto3.FrontendMessage {
		return []pgproto3.FrontendMessage{&pgproto3.Query{String: sql}}
	}
	execP := []pgproto3.FrontendMessage{&pgproto3.Execute{Portal: "p"}, &pgproto3.Sync{}}
	bindP := []pgproto3.FrontendMessage{
		&pgproto3.Parse{Name: "one", Query: "SELECT 1"}, &pgproto3.Bind{DestinationPortal: "p", PreparedStatement: "one"},
		&pgproto3.Execute{Portal: "p", MaxRows: 1}, &pgproto3.Sync{},
	}

	t.Run("DECLARE, then Execute", func(t *testing.T) {
		attack(t, q("BEGIN"), q("DECLARE p CURSOR FOR "+wipe), execP, q("COMMIT"))
	})
	t.Run("a function opens it", func(t *testing.T) {
		attack(t, q("BEGIN"), q("SELECT open_p()"), execP, q("COMMIT"))
	})
	t.Run("a portal Bind made, rolled back, its name taken by a function's cursor", func(t *testing.T) {
		attack(t, q("BEGIN"), q("SAVEPOINT a"), bindP, q("ROLLBACK TO a"), q("SELECT open_p()"), execP, q("COMMIT"))
	})
	t.Run("a portal Bind made, closed in SQL, its name taken by a cursor", func(t *testing.T) {
		attack(t, q("BEGIN"), bindP, q("CLOSE p"), q("DECLARE p CURSOR FOR "+wipe), execP, q("COMMIT"))
	})
	t.Run("a portal Bind made, closed by a function that opens its own under the name", func(t *testing.T) {
		attack(t, q("BEGIN"), bindP, q("SELECT reopen_p()"), execP, q("COMMIT"))
	})
	t.Run("a portal Bind made, closed in SQL inside a savepoint rolled back, then a function's cursor", func(t *testing.T) {
		// Closing a portal is not undone by ROLLBACK TO.
		attack(t, q("BEGIN"), bindP, q("SAVEPOINT a"), q("CLOSE p"), q("ROLLBACK TO a"), q("SELECT open_p()"), execP, q("COMMIT"))
	})
	t.Run("a portal Bind made in a savepoint released into one rolled back", func(t *testing.T) {
		attack(t, q("BEGIN"), q("SAVEPOINT a"), q("SAVEPOINT b"), bindP, q("RELEASE b"), q("ROLLBACK TO a"),
			q("SELECT open_p()"), execP, q("COMMIT"))
	})

	t.Run("a named portal fetched in parts", func(t *testing.T) {
		// As JDBC does with a fetch size: the portal's Executes run as
		// they did.
		db := guardDB(t, c)
		r := newRawSession(t, m.SuperConnString(db))
		r.run(q("BEGIN")...)
		var all []string
		errs, rows := r.run(&pgproto3.Parse{Name: "s", Query: "SELECT id::text FROM members WHERE id <= $1 ORDER BY id"},
			&pgproto3.Bind{DestinationPortal: "C_1", PreparedStatement: "s", Parameters: [][]byte{[]byte("5")}},
			&pgproto3.Execute{Portal: "C_1", MaxRows: 3}, &pgproto3.Sync{})
		all = append(all, rows...)
		for range 2 {
			e, rows := r.run(&pgproto3.Execute{Portal: "C_1", MaxRows: 3}, &pgproto3.Sync{})
			errs = append(errs, e...)
			all = append(all, rows...)
		}
		r.run(q("COMMIT")...)
		wantRows(t, errs, all, "1", "2", "3", "4", "5")
	})
	// ROLLBACK TO closes the portals opened after the savepoint, and only
	// those: JDBC with autosave and a fetch size goes on fetching from its
	// portal after a statement failed and was rolled back to the savepoint
	// the driver set before it.
	for _, tc := range []struct {
		name         string
		before, fail []string // around the portal's Bind; fail runs after its first fetch
	}{
		{"bound before the savepoint", nil,
			[]string{"SAVEPOINT PGJDBC_AUTOSAVE", "SELECT 1/0", "ROLLBACK TO SAVEPOINT PGJDBC_AUTOSAVE"}},
		{"bound before savepoints of the same name, nested", nil,
			[]string{"SAVEPOINT s", "SAVEPOINT s", "SELECT 1/0", "ROLLBACK TO s", "ROLLBACK TO s"}},
		{"bound in a savepoint released before another rolled back", []string{"SAVEPOINT a"},
			[]string{"RELEASE a", "SAVEPOINT b", "SELECT 1/0", "ROLLBACK TO b"}},
	} {
		t.Run("a named portal fetched on after a rollback to a savepoint, "+tc.name, func(t *testing.T) {
			db := guardDB(t, c)
			r := newRawSession(t, m.SuperConnString(db))
			r.run(q("BEGIN")...)
			for _, sql := range tc.before {
				r.run(q(sql)...)
			}
			errs, all := r.run(&pgproto3.Parse{Name: "s", Query: "SELECT id::text FROM members WHERE id <= $1 ORDER BY id"},
				&pgproto3.Bind{DestinationPortal: "C_1", PreparedStatement: "s", Parameters: [][]byte{[]byte("5")}},
				&pgproto3.Execute{Portal: "C_1", MaxRows: 2}, &pgproto3.Sync{})
			for i, sql := range tc.fail {
				e, _ := r.run(q(sql)...)
				if wantErr := strings.Contains(sql, "1/0"); wantErr != (len(e) == 1) || wantErr && e[0].Code != "22012" {
					t.Fatalf("step %d (%s): %s", i, sql, codes(e))
				}
			}
			e, rows := r.run(&pgproto3.Execute{Portal: "C_1", MaxRows: 3}, &pgproto3.Sync{})
			r.run(q("COMMIT")...)
			wantRows(t, append(errs, e...), append(all, rows...), "1", "2", "3", "4", "5")
		})
	}
}
