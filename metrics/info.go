package metrics

import (
	"sync"
	"sync/atomic"

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
