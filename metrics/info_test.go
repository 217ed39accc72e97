package metrics

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
)

// TestRelayedExposition checks that the relay's byte counters are exported
// as the counter family they replaced: one series per direction.
func TestRelayedExposition(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m := New(reg)
	m.BytesRelayed.Add(0, ClientToServer, 10)
	m.BytesRelayed.Add(3, ServerToClient, 2500)
	m.BytesRelayed.Cell(Shards+5, ServerToClient).Add(1) // any int is a shard
	want := `
# HELP pgmoat_relayed_bytes_total Protocol bytes relayed, by direction.
# TYPE pgmoat_relayed_bytes_total counter
pgmoat_relayed_bytes_total{direction="client_to_server"} 10
pgmoat_relayed_bytes_total{direction="server_to_client"} 2501
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "pgmoat_relayed_bytes_total"); err != nil {
		t.Fatal(err)
	}
}

// TestDurationsLikeHistogram checks that Durations exports what the
// prometheus.Histogram it replaced would: the same buckets (a duration on
// a bound counts in that bucket), count and sum.
func TestDurationsLikeHistogram(t *testing.T) {
	bounds := []float64{1e-7, 5e-7, 1e-6, 5e-6, 1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 1e-2}
	ours := NewDurations("d_seconds", "Durations.", bounds)
	theirs := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "d_seconds", Help: "Durations.", Buckets: bounds})
	for i, d := range []time.Duration{
		0, -5, 1, 99, 100, 101, 499, 500, 501, 999 * time.Nanosecond, time.Microsecond,
		5 * time.Microsecond, 7 * time.Microsecond, 10 * time.Microsecond, 50*time.Microsecond + 1,
		100 * time.Microsecond, 500 * time.Microsecond, time.Millisecond, 10 * time.Millisecond,
		10*time.Millisecond + 1, 3 * time.Second,
	} {
		ours.Observe(i*7, d) // spread over the shards, which a scrape adds up
		theirs.Observe(max(d, 0).Seconds())
	}
	got, want := gatherOne(t, ours), gatherOne(t, theirs)
	if g, w := got.GetSampleCount(), want.GetSampleCount(); g != w {
		t.Errorf("count %d, want %d", g, w)
	}
	if g, w := got.GetSampleSum(), want.GetSampleSum(); math.Abs(g-w) > 1e-12 {
		t.Errorf("sum %v, want %v", g, w)
	}
	gb, wb := got.GetBucket(), want.GetBucket()
	if len(gb) != len(wb) {
		t.Fatalf("%d buckets, want %d", len(gb), len(wb))
	}
	for i := range wb {
		if gb[i].GetUpperBound() != wb[i].GetUpperBound() || gb[i].GetCumulativeCount() != wb[i].GetCumulativeCount() {
			t.Errorf("bucket %d: le=%v count %d, want le=%v count %d", i,
				gb[i].GetUpperBound(), gb[i].GetCumulativeCount(), wb[i].GetUpperBound(), wb[i].GetCumulativeCount())
		}
	}
}

// gatherOne returns the histogram c exports, c's only metric.
func gatherOne(t *testing.T, c prometheus.Collector) *dto.Histogram {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(fams) != 1 || len(fams[0].GetMetric()) != 1 || fams[0].GetType() != dto.MetricType_HISTOGRAM {
		t.Fatalf("gathered %v, want one histogram", fams)
	}
	return fams[0].GetMetric()[0].GetHistogram()
}
