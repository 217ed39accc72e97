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

// Relayed counts the protocol bytes relayed in each direction. The relay
// adds to it once per write to a socket, from every session, so it is two
// plain atomic counters rather than a CounterVec: a writer keeps a pointer
// to its direction's and adds with one instruction, where a Prometheus
// counter costs an interface call and a check for exemplars.
type Relayed struct {
	desc           *prometheus.Desc
	ClientToServer atomic.Uint64
	ServerToClient atomic.Uint64
}

// NewRelayed returns the pgmoat_relayed_bytes_total counters.
func NewRelayed() *Relayed {
	return &Relayed{desc: prometheus.NewDesc("pgmoat_relayed_bytes_total", "Protocol bytes relayed, by direction.", []string{"direction"}, nil)}
}

// Describe implements prometheus.Collector.
func (r *Relayed) Describe(ch chan<- *prometheus.Desc) { ch <- r.desc }

// Collect implements prometheus.Collector.
func (r *Relayed) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(r.desc, prometheus.CounterValue, float64(r.ClientToServer.Load()), "client_to_server")
	ch <- prometheus.MustNewConstMetric(r.desc, prometheus.CounterValue, float64(r.ServerToClient.Load()), "server_to_client")
}

// Durations is a histogram of durations that exports like a Prometheus
// histogram of seconds. pgmoat_analysis_duration_seconds is observed for
// every judged message, on the relay's path, so it counts whole
// nanoseconds with an atomic add to its bucket and one to its sum: a
// prometheus.Histogram's Observe (seconds as a float, added in a
// compare-and-swap loop, and its checks for native histograms and
// exemplars) was among the larger pieces of code a statement runs
// (bench/README.md, "The code a statement runs does not fit the
// instruction cache").
//
// The count is the buckets' total, so it always agrees with them; a
// scrape that races an Observe may see the sum without that observation
// or the other way round, as a Prometheus histogram's would between its
// buckets and sum.
type Durations struct {
	desc    *prometheus.Desc
	seconds []float64       // the buckets' upper bounds, as exported
	bounds  []time.Duration // the same, to compare with
	counts  []atomic.Uint64 // per bucket (not cumulative); the last is +Inf
	sum     atomic.Uint64   // nanoseconds
}

// NewDurations returns a Durations named name whose buckets end at
// seconds (ascending).
func NewDurations(name, help string, seconds []float64) *Durations {
	h := &Durations{
		desc:    prometheus.NewDesc(name, help, nil, nil),
		seconds: seconds,
		bounds:  make([]time.Duration, len(seconds)),
		counts:  make([]atomic.Uint64, len(seconds)+1),
	}
	for i, s := range seconds {
		if i > 0 && s <= seconds[i-1] {
			panic("metrics: bucket bounds of " + name + " are not ascending")
		}
		h.bounds[i] = time.Duration(math.Round(s * 1e9))
	}
	return h
}

// Observe adds one duration; a negative one counts as zero.
func (h *Durations) Observe(d time.Duration) {
	d = max(d, 0)
	i := 0
	for i < len(h.bounds) && d > h.bounds[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sum.Add(uint64(d))
}

// Describe implements prometheus.Collector.
func (h *Durations) Describe(ch chan<- *prometheus.Desc) { ch <- h.desc }

// Collect implements prometheus.Collector.
func (h *Durations) Collect(ch chan<- prometheus.Metric) {
	buckets := make(map[float64]uint64, len(h.seconds))
	var n uint64
	for i, s := range h.seconds {
		n += h.counts[i].Load()
		buckets[s] = n
	}
	n += h.counts[len(h.seconds)].Load()
	sum := time.Duration(h.sum.Load()).Seconds()
	ch <- prometheus.MustNewConstHistogram(h.desc, n, sum, buckets)
}
