package metrics

import (
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestCountersLikeCounterVec checks that Counters exports what the
// prometheus.CounterVec it replaced would, with every series created up
// front: each registered series, its shards added up, none other.
func TestCountersLikeCounterVec(t *testing.T) {
	ours := NewCounters("c_total", "Counted.", 4, "decision", "operation")
	theirs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "c_total", Help: "Counted."}, []string{"decision", "operation"})
	allowNone := ours.Series("allow", "none")
	blockDrop := ours.Series("block", "drop")
	ours.Series("hold", "drop") // registered, never counted: exported as 0
	if again := ours.Series("block", "drop"); again != blockDrop {
		t.Fatalf("the same label values got series %d, then %d", blockDrop, again)
	}
	theirs.WithLabelValues("allow", "none")
	theirs.WithLabelValues("block", "drop")
	theirs.WithLabelValues("hold", "drop")
	for shard := range 3 * Shards {
		ours.Add(shard, allowNone, uint64(shard))
		theirs.WithLabelValues("allow", "none").Add(float64(shard))
	}
	ours.Cell(-1, blockDrop).Add(2) // any int is a shard
	theirs.WithLabelValues("block", "drop").Add(2)

	want := `
# HELP c_total Counted.
# TYPE c_total counter
c_total{decision="allow",operation="none"} 1128
c_total{decision="block",operation="drop"} 2
c_total{decision="hold",operation="drop"} 0
`
	for name, c := range map[string]prometheus.Collector{"Counters": ours, "CounterVec": theirs} {
		reg := prometheus.NewPedanticRegistry()
		reg.MustRegister(c)
		if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "c_total"); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if got := ours.Value(allowNone); got != 1128 { // 0+1+...+47
		t.Fatalf("Value = %d, want 1128", got)
	}
}

// TestCountersCapacity: more series than room for them is a programming
// error, caught at start-up.
func TestCountersCapacity(t *testing.T) {
	c := NewCounters("c_total", "Counted.", 1, "result")
	c.Series("hit")
	defer func() {
		if recover() == nil {
			t.Fatal("a series past the capacity was accepted")
		}
	}()
	c.Series("miss")
}

// BenchmarkCounterParallel counts from every processor, as the event
// loops do: into one shared counter (what a Prometheus counter is), and
// into Counters, each goroutine with a shard of its own. Run with
// -cpu 1,2 (or more): the shared counter's time per add grows with the
// processors, the sharded one's falls.
func BenchmarkCounterParallel(b *testing.B) {
	b.Run("shared", func(b *testing.B) {
		var n atomic.Uint64
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				n.Add(1)
			}
		})
	})
	b.Run("sharded", func(b *testing.B) {
		c := NewCounters("c_total", "Counted.", 1, "result")
		s := c.Series("hit")
		var next atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			shard := int(next.Add(1))
			for pb.Next() {
				c.Add(shard, s, 1)
			}
		})
	})
}
