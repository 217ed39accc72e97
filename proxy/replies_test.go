package proxy

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"unsafe"

	"github.com/jackc/pgx/v5/pgproto3"
)

// TestReplyQueueRoute drives the FIFO with the message sequences
// PostgreSQL produces and checks which server messages it hides. Entries
// marked hidden stand for messages pgmoat injected.
func TestReplyQueueRoute(t *testing.T) {
	type sent struct {
		typ  byte
		hide bool
	}
	tests := []struct {
		name   string
		sent   []sent
		server string // server message types, in order
		hidden string // the subset of server that the client must not see
	}{
		{
			name:   "plain pipeline passes everything",
			sent:   []sent{{'P', false}, {'B', false}, {'D', false}, {'E', false}, {'S', false}},
			server: "12TDDCZ",
			hidden: "",
		},
		{
			name: "injected parse and bind are hidden, the error is not",
			// A blocked Parse replaced by P/B/E of a DO that raises,
			// then the client's own Sync.
			sent:   []sent{{'P', true}, {'B', true}, {'E', false}, {'S', false}},
			server: "12EZ",
			hidden: "12",
		},
		{
			name: "client's earlier parse is not confused with the injected one",
			sent: []sent{{'P', false}, {'P', true}, {'B', true}, {'E', false}, {'S', false}},
			// ParseComplete of the client's own statement first.
			server: "112EZ",
			hidden: "12",
		},
		{
			name: "entries skipped after an error are dropped at ReadyForQuery",
			sent: []sent{{'P', false}, {'B', false}, {'E', false}, {'S', false}, {'P', true}, {'B', true}, {'E', true}, {'S', false}},
			// The client's Parse fails: B and E are skipped; then the
			// injected statement runs quietly.
			server: "EZ12DCZ",
			hidden: "12DC",
		},
		{
			name:   "notices and notifications belong to no entry",
			sent:   []sent{{'P', true}, {'B', true}, {'E', false}, {'S', false}},
			server: "1N2AEZ",
			hidden: "12",
		},
		{
			name:   "describe statement: parameter and row descriptions",
			sent:   []sent{{'D', true}, {'D', false}, {'S', false}},
			server: "tTtnZ",
			hidden: "tT",
		},
		{
			name:   "simple query errors wait for ReadyForQuery",
			sent:   []sent{{'Q', false}, {'Q', true}},
			server: "TDCEZTDCZ",
			hidden: "TDCZ",
		},
		{
			name:   "hidden sync hides its ReadyForQuery",
			sent:   []sent{{'E', false}, {'S', true}},
			server: "DsZ",
			hidden: "Z",
		},
		{
			name:   "copy inside a query",
			sent:   []sent{{'Q', true}, {'Q', false}},
			server: "HddcCZGCZ",
			hidden: "HddcCZ",
		},
		{
			name:   "nothing outstanding passes",
			sent:   nil,
			server: "NSZ",
			hidden: "",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var q replyQueue
			for _, s := range tt.sent {
				q.push(pendingReply{replyHead: replyHead{kind: replyKindOf(s.typ), hide: s.hide}})
			}
			var hidden []byte
			for i := 0; i < len(tt.server); i++ {
				if h, _ := q.route(tt.server[i], nil); h {
					hidden = append(hidden, tt.server[i])
				}
			}
			if string(hidden) != tt.hidden {
				t.Errorf("hidden %q, want %q", hidden, tt.hidden)
			}
			if _, ok := q.pop(); ok || q.hasCur {
				t.Errorf("entries left over after the exchange")
			}
		})
	}
}

func TestReplyQueueCompacts(t *testing.T) {
	var q replyQueue
	for i := range 10000 {
		q.push(pendingReply{replyHead: replyHead{kind: replySync}})
		if i%2 == 1 {
			q.route('Z', nil)
			q.route('Z', nil)
		}
	}
	if q.slow != nil {
		t.Errorf("plain requests, at most 2 outstanding, used the slow part: %+v", q.slow)
	}
	if size := unsafe.Sizeof(q); size > 64 {
		t.Errorf("replyQueue is %d bytes, more than a cache line", size)
	}
}

// TestReplyQueueFIFO checks the ring, its extras and its overflow against
// a plain slice: random pushes (some with tags or exchanges, in runs deeper
// than the ring) and pops must come out in order, whole, and eachLocked
// must see what is queued, in order.
func TestReplyQueueFIFO(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var q replyQueue
	var model []pendingReply
	tags := make([]int, 64)
	for step := range 200000 {
		if depth := len(model); rng.IntN(100) < 50 || depth == 0 || step%5000 < 200 && depth < 40 {
			e := pendingReply{replyHead: replyHead{kind: replyKind(1 + rng.IntN(8)), hide: rng.IntN(4) == 0, own: rng.IntN(8) == 0}}
			switch rng.IntN(10) {
			case 0:
				e.tag = &tags[rng.IntN(len(tags))]
			case 1:
				e.ex = &ExchangeReply{}
			}
			q.push(e)
			model = append(model, e)
		} else {
			got, ok := q.pop()
			if !ok || got != model[0] {
				t.Fatalf("step %d: pop = %+v, %v; want %+v", step, got, ok, model[0])
			}
			model = model[1:]
		}
		if step%97 == 0 {
			var seen []pendingReply
			q.mu.Lock()
			q.eachLocked(func(e pendingReply) bool { seen = append(seen, e); return true })
			q.mu.Unlock()
			if !slices.Equal(seen, model) {
				t.Fatalf("step %d: eachLocked saw %d entries, %v; want %v", step, len(seen), seen, model)
			}
		}
	}
	for range model {
		q.pop()
	}
	if _, ok := q.pop(); ok {
		t.Fatal("an entry left over")
	}
	if sl := q.slow; sl != nil && (len(sl.more) != 0 || len(sl.extras) != 0) {
		t.Errorf("the emptied queue still holds %d overflow entries and %d extras", len(sl.more), len(sl.extras))
	}
}

// TestOwnErrorResponse checks that a refusal raised by pgmoat's DO block
// reaches the client without the server's PL/pgSQL context and source
// location, and with everything else as the server sent it.
func TestOwnErrorResponse(t *testing.T) {
	in := &pgproto3.ErrorResponse{
		Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: "42501",
		Message: "pgmoat blocked DROP TABLE public.users", Detail: "Statement: DROP TABLE users", Hint: "pre-approve it",
		Where: "PL/pgSQL function inline_code_block line 1 at RAISE", File: "pl_exec.c", Line: 3907, Routine: "exec_stmt_raise",
		InternalQuery: "SELECT 1", InternalPosition: 3,
	}
	raw, err := in.Encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	outRaw := ownErrorResponse(raw)
	var out pgproto3.ErrorResponse
	if int(binary.BigEndian.Uint32(outRaw[1:5])) != len(outRaw)-1 {
		t.Fatalf("length %d for a message of %d bytes", binary.BigEndian.Uint32(outRaw[1:5]), len(outRaw))
	}
	if err := out.Decode(outRaw[5:]); err != nil {
		t.Fatal(err)
	}
	want := pgproto3.ErrorResponse{Severity: in.Severity, SeverityUnlocalized: in.SeverityUnlocalized, Code: in.Code,
		Message: in.Message, Detail: in.Detail, Hint: in.Hint}
	if !reflect.DeepEqual(out, want) {
		t.Errorf("got %+v\nwant %+v", out, want)
	}
	// What it cannot read it leaves alone.
	bad := []byte{'E', 0, 0, 0, 9, 'M', 'x', 'y', 'z'}
	if got := ownErrorResponse(bad); !bytes.Equal(got, bad) {
		t.Errorf("unterminated field: got %q", got)
	}
}
