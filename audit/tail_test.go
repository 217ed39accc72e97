package audit

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pgmoat/pgmoat/config"
)

func TestTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	l, err := Open(config.Audit{Path: path, Statements: "decisions", QueueSize: 64, FlushInterval: config.Duration(time.Millisecond)},
		Options{Instance: "pgmoat-a"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		kind := Decision
		if i%2 == 1 {
			kind = SessionStart
		}
		if err := l.Record(context.Background(), Event{Kind: kind, Statement: fmt.Sprint("DROP TABLE t", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	decisions := func(ev *Event) bool { return ev.Kind == Decision }
	evs, err := Tail(path, 1<<20, 3, decisions)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 3 || evs[0].Statement != "DROP TABLE t44" || evs[2].Statement != "DROP TABLE t48" || evs[2].Instance != "pgmoat-a" {
		t.Fatalf("Tail = %+v", evs)
	}
	// A window that starts mid-line skips that line and keeps the rest.
	st, _ := os.Stat(path)
	evs, err = Tail(path, st.Size()/10, 100, decisions)
	if err != nil || len(evs) == 0 || len(evs) > 5 || evs[len(evs)-1].Statement != "DROP TABLE t48" {
		t.Fatalf("small window: %d events, %v", len(evs), err)
	}
	if _, err := Tail("-", 1, 1, nil); err == nil {
		t.Error("Tail of stdout: no error")
	}
}
