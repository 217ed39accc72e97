package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgmoat/pgmoat/internal/moattest"
	"github.com/pgmoat/pgmoat/internal/pgtest"
)

// manyInserts is one message of n INSERTs into events.
func manyInserts(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "INSERT INTO events VALUES (%d);\n", i)
	}
	return b.String()
}

// TestAnalysisBudget sets limits.analysis_statements to 1000: a message
// of 1000 statements runs, one of 1001 is refused whole (42501) with an
// error that names the limit and how to raise it, and the session goes on.
func TestAnalysisBudget(t *testing.T) {
	c := pgtest.Get(t)
	db := c.NewDatabase(t)
	c.Exec(t, db, "CREATE TABLE users(id int); CREATE TABLE events(id int)")
	m := moattest.Start(t, c, moattest.Options{Limits: []string{"analysis_statements: 1000"}, Config: "policy:\n  protect: [public.users]\n"})
	conn := connect(t, m.SuperConnString(db), simpleProtocol)
	mustExec(t, conn, manyInserts(1000))
	_, err := conn.Exec(context.Background(), manyInserts(1001))
	pe := wantCode(t, err, "42501", "a message of 1001 statements")
	if !strings.Contains(pe.Message, "limits.analysis_statements") || !strings.Contains(pe.Message, "raise limits.analysis_statements") {
		t.Errorf("the refusal does not name the limit and how to raise it: %q", pe.Message)
	}
	wantUsable(t, conn)
	wantTable(t, direct(t, c, db), "public.events", 1000)
}

// TestAnalysisStopsWhenClientLeaves sends one message of 100,000 INSERTs
// (a second or more of analysis) and disconnects at once: pgmoat stops
// analysing, says so, and forwards none of it. Before, it analysed to the
// end (minutes, at 100k statements) for a client long gone, then ran it.
func TestAnalysisStopsWhenClientLeaves(t *testing.T) {
	c := pgtest.Get(t)
	db := c.NewDatabase(t)
	c.Exec(t, db, "CREATE TABLE users(id int); CREATE TABLE events(id int)")
	m := moattest.Start(t, c, moattest.Options{Config: "policy:\n  protect: [public.users]\n"})
	ctx := context.Background()
	pc, err := pgconn.Connect(ctx, m.SuperConnString(db))
	if err != nil {
		t.Fatal(err)
	}
	fe := pc.Frontend()
	fe.Send(&pgproto3.Query{String: manyInserts(100_000)})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	pc.Conn().Close()

	moattest.WaitFor(t, 30*time.Second, "pgmoat to stop the analysis", func() bool {
		return strings.Contains(m.Log(), "pgmoat stopped analysing the message: client disconnected")
	})
	waitMetric(t, m, "pgmoat_client_connections_open", nil, 0)
	wantTable(t, direct(t, c, db), "public.events", 0)
}
