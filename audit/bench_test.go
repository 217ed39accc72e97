package audit

import (
	"context"
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func benchEvent() Event {
	return Event{
		Kind: Decision, SessionID: "7f3a2c", User: "app", Database: "shop", Application: "psql",
		Client: "10.0.0.7:51234", Statement: "DELETE FROM orders WHERE created_at < '2020-01-01' AND status = 'cancelled'",
		Fingerprint: "a1b2c3d4e5f60718", Operations: []string{"delete"}, Objects: []string{"public.orders"},
		Decision: "block", Rule: "protect-orders", Reason: "DELETE on protected table public.orders",
	}
}

// BenchmarkRecord is one durable event at a time: encode, queue, seal,
// write(2), answer.
func BenchmarkRecord(b *testing.B) {
	l, _ := openTest(b, testConfig(b), Options{})
	ev := benchEvent()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := l.Record(ctx, ev); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRecordParallel shows group commit: concurrent durable events
// share writes.
func BenchmarkRecordParallel(b *testing.B) {
	l, _ := openTest(b, testConfig(b), Options{})
	ev := benchEvent()
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := l.Record(ctx, ev); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkRecordAsync is what an allowed statement costs its session with
// audit.statements: all, with and without redaction (pg_query's Normalize
// on the caller). Events the writer could not keep up with are reported as
// dropped/op.
func BenchmarkRecordAsync(b *testing.B) {
	for _, redact := range []bool{false, true} {
		b.Run(fmt.Sprintf("redact=%v", redact), func(b *testing.B) {
			cfg := testConfig(b)
			cfg.Statements = "all"
			cfg.Redact = redact
			cfg.QueueSize = 1 << 16
			l, m := openTest(b, cfg, Options{})
			ev := benchEvent()
			ev.Kind, ev.Decision = Statement, "allow"
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					l.RecordAsync(ev)
				}
			})
			b.StopTimer()
			l.Close()
			b.ReportMetric(testutil.ToFloat64(m.AuditEventsDropped.WithLabelValues(dropQueueFull))/float64(b.N), "dropped/op")
		})
	}
}

func BenchmarkVerify(b *testing.B) {
	cfg := testConfig(b)
	l, _ := openTest(b, cfg, Options{})
	ev := benchEvent()
	for range 10000 {
		l.RecordAsync(ev)
	}
	l.Close()
	b.SetBytes(fileSize(b, cfg.Path))
	for b.Loop() {
		if res, err := Verify(cfg.Path); err != nil || !res.OK() {
			b.Fatal(err, res.Break)
		}
	}
}
