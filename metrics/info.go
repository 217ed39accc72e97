package metrics

import (
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Current is a gauge with one labelled series at a time: the current value
// of something identified by a label that changes, such as the policy's
// hash or the audit chain's head. A GaugeVec would keep every hash it was
// ever given; Current exports only the last one, and a scrape sees the
// label and the value of the same Set.
type Current struct {
	desc  *prometheus.Desc
	mu    sync.Mutex
	label string
	value float64
	set   bool
}

// NewCurrent returns a Current named name with one label.
func NewCurrent(name, help, label string) *Current {
	return &Current{desc: prometheus.NewDesc(name, help, []string{label}, nil)}
}

// Set replaces the exported series with one labelled label, of value v.
func (c *Current) Set(label string, v float64) {
	c.mu.Lock()
	c.label, c.value, c.set = label, v, true
	c.mu.Unlock()
}

// Get returns the current label and value, and whether Set was called.
func (c *Current) Get() (string, float64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.label, c.value, c.set
}

// Describe implements prometheus.Collector.
func (c *Current) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c *Current) Collect(ch chan<- prometheus.Metric) {
	label, v, ok := c.Get()
	if ok {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, v, label)
	}
}

// The series of pgmoat_relayed_bytes_total, by direction.
const (
	ClientToServer = 0
	ServerToClient = 1
)

// NewRelayed returns pgmoat_relayed_bytes_total, the protocol bytes
// relayed in each direction (series ClientToServer and ServerToClient).
// The relay adds to it once per write to a socket, from every session:
// a writer keeps its shard's counter (Counters.Cell) and adds with one
// instruction, where a Prometheus counter costs an interface call and a
// check for exemplars.
func NewRelayed() *Counters {
	c := NewCounters("pgmoat_relayed_bytes_total", "Protocol bytes relayed, by direction.", 2, "direction")
	c.Series("client_to_server")
	c.Series("server_to_client")
	return c
}

// Durations is a histogram of durations that exports like a Prometheus
// histogram of seconds. pgmoat_analysis_duration_seconds is observed for
// every judged message, on the relay's path, so it counts whole
// nanoseconds with an atomic add to its bucket and one to its sum: a
// prometheus.Histogram's Observe (seconds as a float, added in a
// compare-and-swap loop, and its checks for native histograms and
// exemplars) was among the larger pieces of code a statement runs
// (bench/README.md, "The code a statement runs does not fit the
// instruction cache"). Like Counters, it keeps Shards copies, which a
// scrape adds up.
//
// The count is the buckets' total, so it always agrees with them; a
// scrape that races an Observe may see the sum without that observation
// or the other way round, as a Prometheus histogram's would between its
// buckets and sum.
type Durations struct {
	desc    *prometheus.Desc
	seconds []float64       // the buckets' upper bounds, as exported
	bounds  []time.Duration // the same, to compare with
	stride  int
	// cells holds each shard's counts per bucket (not cumulative; the
	// last is +Inf), then its sum in nanoseconds: [Shards][stride].
	cells []atomic.Uint64
}

// NewDurations returns a Durations named name whose buckets end at
// seconds (ascending).
func NewDurations(name, help string, seconds []float64) *Durations {
	h := &Durations{
		desc:    prometheus.NewDesc(name, help, nil, nil),
		seconds: seconds,
		bounds:  make([]time.Duration, len(seconds)),
		stride:  stride(len(seconds) + 2),
	}
	h.cells = make([]atomic.Uint64, Shards*h.stride)
	for i, s := range seconds {
		if i > 0 && s <= seconds[i-1] {
			panic("metrics: bucket bounds of " + name + " are not ascending")
		}
		h.bounds[i] = time.Duration(math.Round(s * 1e9))
	}
	return h
}

// Observe adds one duration to shard; a negative one counts as zero.
func (h *Durations) Observe(shard int, d time.Duration) {
	d = max(d, 0)
	i := 0
	for i < len(h.bounds) && d > h.bounds[i] {
		i++
	}
	c := h.cells[shardOf(shard)*h.stride:]
	c[i].Add(1)
	c[len(h.bounds)+1].Add(uint64(d))
}

// Describe implements prometheus.Collector.
func (h *Durations) Describe(ch chan<- *prometheus.Desc) { ch <- h.desc }

// Collect implements prometheus.Collector.
func (h *Durations) Collect(ch chan<- prometheus.Metric) {
	total := func(i int) uint64 { return sumShards(h.cells, h.stride, i) }
	buckets := make(map[float64]uint64, len(h.seconds))
	var n uint64
	for i, s := range h.seconds {
		n += total(i)
		buckets[s] = n
	}
	n += total(len(h.seconds))
	sum := time.Duration(total(len(h.seconds) + 1)).Seconds()
	ch <- prometheus.MustNewConstHistogram(h.desc, n, sum, buckets)
}
