package proxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgmoat/pgmoat/internal/pgtest"
	"github.com/pgmoat/pgmoat/metrics"
)

func TestSimpleQuery(t *testing.T) {
	c := pgtest.Get(t)
	db := c.NewDatabase(t)
	p := startProxy(t, Options{})
	conn := p.superConn(t, db)
	ctx := ctxTimeout(t, time.Minute)

	// Several statements in one Query message: each result comes back.
	results, err := conn.PgConn().Exec(ctx, `
		CREATE TABLE t (id int PRIMARY KEY, v text);
		INSERT INTO t VALUES (1, 'one'), (2, 'two');
		SELECT v FROM t ORDER BY id;
		UPDATE t SET v = upper(v)`).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	var tags []string
	for _, r := range results {
		tags = append(tags, r.CommandTag.String())
	}
	if got := strings.Join(tags, "|"); got != "CREATE TABLE|INSERT 0 2|SELECT 2|UPDATE 2" {
		t.Errorf("command tags %q", got)
	}
	if got := string(results[2].Rows[1][0]); got != "two" {
		t.Errorf("second row %q, want two", got)
	}

	// An error in the middle of a multi-statement Query stops it there,
	// as PostgreSQL does, and the session stays usable.
	_, err = conn.PgConn().Exec(ctx, `INSERT INTO t VALUES (3, 'x'); SELECT 1/0; INSERT INTO t VALUES (4, 'y')`).ReadAll()
	if pgCode(err) != "22012" {
		t.Fatalf("got %v, want division_by_zero", err)
	}
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil || n != 2 {
		t.Fatalf("count = %d, %v; want 2 (the failed Query ran as one implicit transaction)", n, err)
	}
}

func TestExtendedProtocolAndPreparedStatements(t *testing.T) {
	c := pgtest.Get(t)
	db := c.NewDatabase(t)
	c.Exec(t, db, `CREATE TABLE items (id int PRIMARY KEY, name text, price numeric, data bytea)`)
	p := startProxy(t, Options{})
	conn := p.superConn(t, db)
	ctx := ctxTimeout(t, time.Minute)

	if _, err := conn.Prepare(ctx, "ins", "INSERT INTO items VALUES ($1, $2, $3, $4)"); err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		if _, err := conn.Exec(ctx, "ins", i, fmt.Sprintf("item-%d", i), fmt.Sprintf("%d.25", i), []byte{byte(i), 0, 255}); err != nil {
			t.Fatal(err)
		}
	}
	// Parameters and results in binary format (pgx uses binary for int and bytea).
	var name string
	var data []byte
	if err := conn.QueryRow(ctx, "SELECT name, data FROM items WHERE id = $1", 7).Scan(&name, &data); err != nil {
		t.Fatal(err)
	}
	if name != "item-7" || !bytes.Equal(data, []byte{7, 0, 255}) {
		t.Errorf("got %q %v", name, data)
	}
	// A portal read in chunks (Execute with a row limit, PortalSuspended).
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rr := tx.Conn().PgConn().ExecParams(ctx, "SELECT id FROM items ORDER BY id", nil, nil, nil, nil)
	if _, err := rr.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "DECLARE cur CURSOR FOR SELECT id FROM items ORDER BY id"); err != nil {
		t.Fatal(err)
	}
	var ids []int
	rows, _ := tx.Query(ctx, "FETCH 5 FROM cur")
	ids, err = pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil || len(ids) != 5 || ids[4] != 4 {
		t.Fatalf("fetch: %v %v", ids, err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	// Describe of a statement with parameters, then deallocation (Close).
	sd, err := conn.Prepare(ctx, "q", "SELECT price FROM items WHERE id = $1 AND name = $2")
	if err != nil {
		t.Fatal(err)
	}
	if len(sd.ParamOIDs) != 2 || len(sd.Fields) != 1 {
		t.Errorf("describe: %d params, %d fields", len(sd.ParamOIDs), len(sd.Fields))
	}
	if err := conn.Deallocate(ctx, "q"); err != nil {
		t.Fatal(err)
	}
	// An error in the extended protocol leaves the session usable.
	if _, err := conn.Exec(ctx, "SELECT $1::int / 0", 1); pgCode(err) != "22012" {
		t.Fatalf("got %v", err)
	}
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM items WHERE id >= $1", 10).Scan(&n); err != nil || n != 40 {
		t.Fatalf("count %d, %v", n, err)
	}
}

func TestPipelineBatch(t *testing.T) {
	c := pgtest.Get(t)
	db := c.NewDatabase(t)
	c.Exec(t, db, `CREATE TABLE log (i int)`)
	p := startProxy(t, Options{})
	conn := p.superConn(t, db)
	ctx := ctxTimeout(t, time.Minute)

	// pgx sends a whole batch as one pipeline: all Parse/Bind/Execute
	// messages, then one Sync.
	b := &pgx.Batch{}
	for i := range 500 {
		b.Queue("INSERT INTO log VALUES ($1)", i)
	}
	b.Queue("SELECT sum(i) FROM log")
	br := conn.SendBatch(ctx, b)
	for range 500 {
		if _, err := br.Exec(); err != nil {
			t.Fatal(err)
		}
	}
	var sum int
	if err := br.QueryRow().Scan(&sum); err != nil {
		t.Fatal(err)
	}
	if err := br.Close(); err != nil {
		t.Fatal(err)
	}
	if sum != 499*500/2 {
		t.Errorf("sum %d", sum)
	}

	// An error inside a pipeline: what follows up to Sync is skipped by
	// the server, and the batch is one implicit transaction.
	b = &pgx.Batch{}
	b.Queue("INSERT INTO log VALUES (-1)")
	b.Queue("SELECT 1/0")
	b.Queue("INSERT INTO log VALUES (-2)")
	err := conn.SendBatch(ctx, b).Close()
	if pgCode(err) != "22012" {
		t.Fatalf("got %v", err)
	}
	var neg int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM log WHERE i < 0").Scan(&neg); err != nil || neg != 0 {
		t.Fatalf("negative rows %d, %v", neg, err)
	}

	// The low-level pipeline API with several Syncs.
	pl := conn.PgConn().StartPipeline(ctx)
	pl.SendQueryParams("SELECT $1::int", [][]byte{[]byte("1")}, nil, nil, nil)
	pl.SendPipelineSync()
	pl.SendQueryParams("SELECT $1::int + 1", [][]byte{[]byte("1")}, nil, nil, nil)
	pl.SendPipelineSync()
	if err := pl.Flush(); err != nil {
		t.Fatal(err)
	}
	var got []string
	for len(got) < 2 {
		res, err := pl.GetResults()
		if err != nil {
			t.Fatal(err)
		}
		switch r := res.(type) {
		case *pgconn.ResultReader:
			rows, err := r.Read().Rows, r.Read().Err
			_ = rows
			if err != nil {
				t.Fatal(err)
			}
		case *pgconn.PipelineSync:
			got = append(got, "sync")
		}
	}
	if err := pl.Close(); err != nil {
		t.Fatal(err)
	}
}

// copyOut runs COPY ... TO STDOUT and returns the bytes.
func copyOut(t testing.TB, conn *pgx.Conn, sql string) []byte {
	t.Helper()
	var buf bytes.Buffer
	if _, err := conn.PgConn().CopyTo(ctxTimeout(t, 2*time.Minute), &buf, sql); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestCopyInAndOut(t *testing.T) {
	c := pgtest.Get(t)
	db := c.NewDatabase(t)
	c.Exec(t, db, `CREATE TABLE rows (id int, name text, payload bytea)`)
	p := startProxy(t, Options{})
	conn := p.superConn(t, db)
	ctx := ctxTimeout(t, 2*time.Minute)

	const n = 100_000
	src := pgx.CopyFromSlice(n, func(i int) ([]any, error) {
		return []any{i, fmt.Sprintf("name %d\twith tab", i), []byte{byte(i), byte(i >> 8), 0}}, nil
	})
	got, err := conn.CopyFrom(ctx, pgx.Identifier{"rows"}, []string{"id", "name", "payload"}, src)
	if err != nil {
		t.Fatal(err)
	}
	if got != n {
		t.Fatalf("copied %d rows", got)
	}

	// COPY FROM STDIN in text format through the simple protocol.
	var in bytes.Buffer
	for i := range 1000 {
		fmt.Fprintf(&in, "%d\ttext %d\t\\\\x00%02x\n", n+i, i, i%256)
	}
	tag, err := conn.PgConn().CopyFrom(ctx, &in, "COPY rows FROM STDIN")
	if err != nil || tag.RowsAffected() != 1000 {
		t.Fatalf("COPY FROM STDIN: %v %v", tag, err)
	}

	// A COPY the client aborts (CopyFail): the server rolls it back.
	_, err = conn.PgConn().CopyFrom(ctx, io.MultiReader(strings.NewReader("1\tx\t\\\\x00\n"), errReader{}), "COPY rows FROM STDIN")
	if err == nil {
		t.Fatal("aborted COPY succeeded")
	}

	// COPY TO STDOUT, text and binary, byte for byte equal to direct.
	direct := directConn(t, db)
	for _, q := range []string{
		"COPY (SELECT * FROM rows ORDER BY id) TO STDOUT",
		"COPY (SELECT * FROM rows ORDER BY id) TO STDOUT (FORMAT binary)",
		"COPY (SELECT * FROM rows ORDER BY id) TO STDOUT (FORMAT csv, HEADER)",
	} {
		viaProxy := copyOut(t, conn, q)
		want := copyOut(t, direct, q)
		if !bytes.Equal(viaProxy, want) {
			t.Errorf("%s: %d bytes through pgmoat, %d direct, not equal", q, len(viaProxy), len(want))
		}
		if len(want) < n*10 {
			t.Errorf("%s: only %d bytes", q, len(want))
		}
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("client gives up") }

func TestListenNotify(t *testing.T) {
	c := pgtest.Get(t)
	db := c.NewDatabase(t)
	p := startProxy(t, Options{})
	listener := p.superConn(t, db)
	sender := p.superConn(t, db)
	ctx := ctxTimeout(t, time.Minute)

	if _, err := listener.Exec(ctx, "LISTEN chan_a"); err != nil {
		t.Fatal(err)
	}
	// A notice (NoticeResponse) is relayed too.
	var notices []string
	noticeConn := connectWithNotices(t, p.connString(c.Superuser, c.SuperPassword, db), &notices)
	if _, err := noticeConn.Exec(ctx, "DO $$ BEGIN RAISE NOTICE 'hello from the server'; END $$"); err != nil {
		t.Fatal(err)
	}
	if len(notices) != 1 || notices[0] != "hello from the server" {
		t.Errorf("notices %q", notices)
	}

	if _, err := sender.Exec(ctx, "SELECT pg_notify('chan_a', 'payload 1')"); err != nil {
		t.Fatal(err)
	}
	n, err := listener.WaitForNotification(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n.Channel != "chan_a" || n.Payload != "payload 1" {
		t.Errorf("notification %+v", n)
	}
	// A notification arriving while the listener is idle is relayed at
	// once (the server→client copier flushes when the server goes quiet).
	sent := make(chan error, 1)
	go func() {
		time.Sleep(100 * time.Millisecond)
		_, err := sender.Exec(context.Background(), "NOTIFY chan_a, 'payload 2'")
		sent <- err
	}()
	n, err = listener.WaitForNotification(ctx)
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	if err != nil || n.Payload != "payload 2" {
		t.Fatalf("second notification %+v, %v", n, err)
	}
}

func connectWithNotices(t testing.TB, connString string, notices *[]string) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(connString)
	if err != nil {
		t.Fatal(err)
	}
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) { *notices = append(*notices, n.Message) }
	conn, err := pgx.ConnectConfig(ctxTimeout(t, 30*time.Second), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// TestLargeResult reads about 100 MB of rows through pgmoat and directly
// and compares checksums.
func TestLargeResult(t *testing.T) {
	c := pgtest.Get(t)
	db := c.NewDatabase(t)
	p := startProxy(t, Options{})
	const q = "SELECT i, repeat(md5(i::text), 32) FROM generate_series(1, 100000) i"
	sum := func(conn *pgx.Conn) ([32]byte, int) {
		h := sha256.New()
		rows, err := conn.Query(ctxTimeout(t, 5*time.Minute), q)
		if err != nil {
			t.Fatal(err)
		}
		total := 0
		for rows.Next() {
			raw := rows.RawValues()
			for _, v := range raw {
				h.Write(v)
				total += len(v)
			}
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		var out [32]byte
		copy(out[:], h.Sum(nil))
		return out, total
	}
	viaProxy, n := sum(p.superConn(t, db))
	direct, _ := sum(directConn(t, db))
	if n < 100_000_000 {
		t.Fatalf("only %d bytes", n)
	}
	if viaProxy != direct {
		t.Error("checksums differ")
	}
	if got := p.met.BytesRelayed.Value(metrics.ServerToClient); got < 100_000_000 {
		t.Errorf("pgmoat_relayed_bytes_total{direction=server_to_client} = %v, want > 100e6", got)
	}
}

// TestHugeMessageStreamsWithFlatMemory sends a query whose single result
// value is 200 MB through pgmoat, read by a raw client that hashes the
// bytes as they come, and samples the heap meanwhile: pgmoat must stream
// the DataRow, not assemble it.
func TestHugeMessageStreamsWithFlatMemory(t *testing.T) {
	c := pgtest.Get(t)
	db := c.NewDatabase(t)
	p := startProxy(t, Options{})
	const size = 200 << 20
	query := fmt.Sprintf("SELECT repeat('x', %d)", size)

	hashVia := func(addr string, sample func()) [32]byte {
		conn, fe := rawLogin(t, addr, c.Superuser, c.SuperPassword, db)
		defer conn.Close()
		fe.Send(&pgproto3.Query{String: query})
		if err := fe.Flush(); err != nil {
			t.Fatal(err)
		}
		// Read the raw reply up to ReadyForQuery without the
		// Frontend's buffering, which would hold the whole row.
		h := sha256.New()
		conn.SetReadDeadline(time.Now().Add(3 * time.Minute))
		buf := make([]byte, 32<<10)
		var hdr [5]byte
		for {
			if _, err := io.ReadFull(conn, hdr[:]); err != nil {
				t.Fatal(err)
			}
			h.Write(hdr[:])
			n := int(binary.BigEndian.Uint32(hdr[1:])) - 4
			for n > 0 {
				k, err := conn.Read(buf[:min(n, len(buf))])
				if err != nil {
					t.Fatal(err)
				}
				h.Write(buf[:k])
				n -= k
				sample()
			}
			if hdr[0] == 'Z' {
				break
			}
		}
		var out [32]byte
		copy(out[:], h.Sum(nil))
		return out
	}
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	var peak uint64
	reads := 0
	viaProxy := hashVia(p.addr(), func() {
		reads++
		if reads%64 == 0 {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapAlloc)
		}
	})
	direct := hashVia(c.Addr(), func() {})
	if viaProxy != direct {
		t.Error("the reply through pgmoat differs from the direct one")
	}
	if grew := int64(peak) - int64(base); grew > 64<<20 {
		t.Errorf("heap grew by %d MB while relaying a %d MB message", grew>>20, size>>20)
	}
}

// rawLogin opens a plain connection to addr and logs in with the
// cleartext or trust methods the superuser has, returning the connection
// after ReadyForQuery.
func rawLogin(t testing.TB, addr, user, password, db string) (net.Conn, *pgproto3.Frontend) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	fe := pgproto3.NewFrontend(conn, conn)
	fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30,
		Parameters: map[string]string{"user": user, "database": db}})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	for {
		msg, err := fe.Receive()
		if err != nil {
			t.Fatalf("login: %v", err)
		}
		switch m := msg.(type) {
		case *pgproto3.AuthenticationCleartextPassword, *pgproto3.AuthenticationMD5Password:
			t.Fatalf("rawLogin: unexpected %T", m)
		case *pgproto3.ErrorResponse:
			t.Fatalf("login: %s %s", m.Code, m.Message)
		case *pgproto3.ReadyForQuery:
			conn.SetDeadline(time.Time{})
			return conn, fe
		}
	}
}

func TestCancelRequest(t *testing.T) {
	c := pgtest.Get(t)
	db := c.NewDatabase(t)
	p := startProxy(t, Options{})
	conn := p.superConn(t, db)

	// pgx sends a CancelRequest when the context ends during a query.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := conn.Exec(ctx, "SELECT pg_sleep(30)")
	if err == nil {
		t.Fatal("pg_sleep(30) finished")
	}
	if !pgconn.Timeout(err) {
		t.Fatalf("got %v", err)
	}
	// The same through the low-level API, observing the SQLSTATE.
	conn2 := p.superConn(t, db)
	pc := conn2.PgConn()
	done := make(chan error, 1)
	go func() {
		_, err := pc.Exec(context.Background(), "SELECT pg_sleep(30)").ReadAll()
		done <- err
	}()
	waitActive(t, db, pc.PID())
	if err := pc.CancelRequest(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := <-done; pgCode(err) != "57014" {
		t.Fatalf("got %v, want SQLSTATE 57014", err)
	}
	// The session survives the cancel.
	var one int
	if err := conn2.QueryRow(ctxTimeout(t, 10*time.Second), "SELECT 1").Scan(&one); err != nil {
		t.Fatal(err)
	}
	logs := p.logs.String()
	if !strings.Contains(logs, "cancel request forwarded") {
		t.Errorf("no cancel logged:\n%s", logs)
	}
	secret := pc.SecretKey()
	for _, form := range []string{fmt.Sprint(secret), fmt.Sprintf("%x", secret), fmt.Sprintf("%X", secret)} {
		if len(form) > 2 && strings.Contains(logs, form) {
			t.Errorf("the log contains the cancel secret (%s)", form)
		}
	}

	// A CancelRequest with a wrong secret cancels nothing.
	go func() {
		_, err := pc.Exec(context.Background(), "SELECT pg_sleep(1)").ReadAll()
		done <- err
	}()
	waitActive(t, db, pc.PID())
	sendCancel(t, p.addr(), &pgproto3.CancelRequest{ProcessID: pc.PID(), SecretKey: []byte{1, 2, 3, 4}})
	if err := <-done; err != nil {
		t.Fatalf("query cancelled by a wrong key: %v", err)
	}
}

// waitActive waits until backend pid is running a statement.
func waitActive(t testing.TB, db string, pid uint32) {
	t.Helper()
	direct := directConn(t, db)
	eventually(t, 20*time.Second, "the query to run", func() bool {
		var n int
		err := direct.QueryRow(context.Background(),
			"SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND state = 'active'", pid).Scan(&n)
		return err == nil && n == 1
	})
}

func sendCancel(t testing.TB, addr string, req *pgproto3.CancelRequest) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	buf, _ := req.Encode(nil)
	conn.Write(buf)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	io.Copy(io.Discard, conn) // pgmoat closes once it has forwarded the request
}

func TestFunctionCall(t *testing.T) {
	c := pgtest.Get(t)
	db := c.NewDatabase(t)
	p := startProxy(t, Options{})
	conn := p.superConn(t, db)
	ctx := ctxTimeout(t, time.Minute)
	var oid uint32
	if err := conn.QueryRow(ctx, "SELECT 'int4abs'::regproc::oid").Scan(&oid); err != nil {
		t.Fatal(err)
	}
	hj, err := conn.PgConn().Hijack()
	if err != nil {
		t.Fatal(err)
	}
	defer hj.Conn.Close()
	hj.Conn.SetDeadline(time.Now().Add(30 * time.Second))
	arg := binary.BigEndian.AppendUint32(nil, uint32(0xffffffff-41)) // -42
	hj.Frontend.Send(&pgproto3.FunctionCall{Function: oid, ArgFormatCodes: []uint16{1}, Arguments: [][]byte{arg}, ResultFormatCode: 1})
	if err := hj.Frontend.Flush(); err != nil {
		t.Fatal(err)
	}
	var result []byte
	for {
		msg, err := hj.Frontend.Receive()
		if err != nil {
			t.Fatal(err)
		}
		if r, ok := msg.(*pgproto3.FunctionCallResponse); ok {
			result = bytes.Clone(r.Result)
		}
		if e, ok := msg.(*pgproto3.ErrorResponse); ok {
			t.Fatalf("%s %s", e.Code, e.Message)
		}
		if _, ok := msg.(*pgproto3.ReadyForQuery); ok {
			break
		}
	}
	if len(result) != 4 || binary.BigEndian.Uint32(result) != 42 {
		t.Errorf("int4abs(-42) = %v", result)
	}
}

// TestTerminateAndDisconnect checks both ends of a session: a client's
// Terminate is forwarded, and a client that vanishes without one has its
// server backend ended too.
func TestTerminateAndDisconnect(t *testing.T) {
	c := pgtest.Get(t)
	db := c.NewDatabase(t)
	p := startProxy(t, Options{})
	direct := directConn(t, db)
	ctx := ctxTimeout(t, time.Minute)
	backendGone := func(pid uint32) bool {
		var n int
		if err := direct.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 0
	}

	conn := p.superConn(t, db)
	pid := conn.PgConn().PID()
	if backendGone(pid) {
		t.Fatal("backend not found")
	}
	conn.Close(ctx) // sends Terminate
	eventually(t, 20*time.Second, "backend of the terminated session to exit", func() bool { return backendGone(pid) })
	eventually(t, 10*time.Second, "session end log", func() bool {
		return strings.Contains(p.logs.String(), "reason=client_terminate")
	})

	conn = p.superConn(t, db)
	pid = conn.PgConn().PID()
	hj, err := conn.PgConn().Hijack()
	if err != nil {
		t.Fatal(err)
	}
	hj.Conn.(*net.TCPConn).SetLinger(0)
	hj.Conn.Close() // RST, no Terminate
	eventually(t, 20*time.Second, "backend of the vanished client to exit", func() bool { return backendGone(pid) })
	eventually(t, 10*time.Second, "session end log", func() bool {
		return strings.Contains(p.logs.String(), "reason=client_disconnect")
	})
	eventually(t, 10*time.Second, "open sessions gauge back to 0", func() bool {
		return p.counter(p.met.ClientConnectionsOpen) == 0
	})
	if got := p.counter(p.met.ClientConnectionsTotal); got != 2 {
		t.Errorf("connections total %v, want 2", got)
	}
}

// TestStartupParametersRelayed checks that what the client asks for at
// startup reaches the server.
func TestStartupParametersRelayed(t *testing.T) {
	c := pgtest.Get(t)
	db := c.NewDatabase(t)
	p := startProxy(t, Options{})
	conn := p.superConn(t, db, "application_name=moat-test", "options=-c search_path=custom_path -c work_mem=7MB", "DateStyle=German")
	ctx := ctxTimeout(t, time.Minute)
	var app, sp, wm, ds, cdb, cu string
	err := conn.QueryRow(ctx, `SELECT current_setting('application_name'), current_setting('search_path'),
		current_setting('work_mem'), current_setting('DateStyle'), current_database(), current_user`).Scan(&app, &sp, &wm, &ds, &cdb, &cu)
	if err != nil {
		t.Fatal(err)
	}
	if app != "moat-test" || sp != "custom_path" || wm != "7MB" || !strings.HasPrefix(ds, "German") || cdb != db || cu != c.Superuser {
		t.Errorf("got application_name=%q search_path=%q work_mem=%q DateStyle=%q database=%q user=%q", app, sp, wm, ds, cdb, cu)
	}
	// ParameterStatus messages reach the client: pgx tracks them.
	if got := conn.PgConn().ParameterStatus("application_name"); got != "moat-test" {
		t.Errorf("ParameterStatus application_name = %q", got)
	}
	if _, err := conn.Exec(ctx, "SET application_name = 'renamed'"); err != nil {
		t.Fatal(err)
	}
	if got := conn.PgConn().ParameterStatus("application_name"); got != "renamed" {
		t.Errorf("ParameterStatus after SET = %q", got)
	}
}

// TestHugeCopyDataStreamsWithFlatMemory is the client→server twin of
// TestHugeMessageStreamsWithFlatMemory: one 60 MB CopyData message goes
// through pgmoat while the heap is sampled.
func TestHugeCopyDataStreamsWithFlatMemory(t *testing.T) {
	c := pgtest.Get(t)
	db := c.NewDatabase(t)
	c.Exec(t, db, "CREATE TABLE lines (l text)")
	p := startProxy(t, Options{})
	conn, fe := rawLogin(t, p.addr(), c.Superuser, c.SuperPassword, db)
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(3 * time.Minute))
	fe.Send(&pgproto3.Query{String: "COPY lines FROM STDIN"})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	if msg, err := fe.Receive(); err != nil {
		t.Fatal(err)
	} else if _, ok := msg.(*pgproto3.CopyInResponse); !ok {
		t.Fatalf("got %T", msg)
	}
	line := []byte(strings.Repeat("x", 1023) + "\n")
	const lines = 60 << 10 // 60 MB
	hdr := []byte{'d', 0, 0, 0, 0}
	binary.BigEndian.PutUint32(hdr[1:], uint32(4+lines*len(line)))
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	base, peak := ms.HeapAlloc, uint64(0)
	if _, err := conn.Write(hdr); err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat(line, 64)
	for i := 0; i < lines/64; i++ {
		if _, err := conn.Write(chunk); err != nil {
			t.Fatal(err)
		}
		if i%16 == 0 {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapAlloc)
		}
	}
	fe.Send(&pgproto3.CopyDone{})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	for {
		msg, err := fe.Receive()
		if err != nil {
			t.Fatal(err)
		}
		if e, ok := msg.(*pgproto3.ErrorResponse); ok {
			t.Fatalf("%s %s", e.Code, e.Message)
		}
		if cc, ok := msg.(*pgproto3.CommandComplete); ok && string(cc.CommandTag) != fmt.Sprintf("COPY %d", lines) {
			t.Errorf("command tag %q", cc.CommandTag)
		}
		if _, ok := msg.(*pgproto3.ReadyForQuery); ok {
			break
		}
	}
	if grew := int64(peak) - int64(base); grew > 32<<20 {
		t.Errorf("heap grew by %d MB while relaying a 60 MB CopyData message", grew>>20)
	}
}
