package metrics

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Shards is how many copies a metric written on every statement or every
// socket write keeps: Counters and Durations. Each event loop writes to a
// shard of its own (the proxy picks it; other sessions are spread over
// the shards by their number), and a scrape adds the shards up. One copy
// written by every loop would move its cache line between the processors
// at every statement, which is what keeps a relay from scaling with its
// cores (bench/README.md, "Nothing shared on a statement's path").
//
// Any shard number is correct, whichever goroutine writes it: a shard
// chosen badly only shares a line.
const Shards = 16

// lineWords is the 8-byte words of the space each shard's values start
// on: two 64-byte lines, because x86 processors fetch lines in pairs.
const lineWords = 16

// stride returns n words rounded up to whole shard spaces.
func stride(n int) int { return (n + lineWords - 1) / lineWords * lineWords }

// shardOf maps any int to a shard.
func shardOf(shard int) int { return shard & (Shards - 1) }

// sumShards returns the total of cell i over the shards of cells, laid
// out [Shards][stride].
func sumShards(cells []atomic.Uint64, stride, i int) uint64 {
	var n uint64
	for sh := 0; sh < Shards; sh++ {
		n += cells[sh*stride+i].Load()
	}
	return n
}

// Counters is a family of counters whose series are registered up front
// (Series) and counted by number, in Shards copies. It exports like the
// prometheus.CounterVec it stands for, every registered series included.
type Counters struct {
	desc   *prometheus.Desc
	labels int
	stride int
	cells  []atomic.Uint64 // [Shards][stride]: each shard's series on lines of its own

	mu     sync.Mutex
	series [][]string // label values, by series number
}

// NewCounters returns a Counters named name with room for capacity series
// of the given labels.
func NewCounters(name, help string, capacity int, labels ...string) *Counters {
	st := stride(capacity)
	return &Counters{
		desc:   prometheus.NewDesc(name, help, labels, nil),
		labels: len(labels),
		stride: st,
		cells:  make([]atomic.Uint64, Shards*st),
		series: make([][]string, 0, capacity),
	}
}

// Series returns the number of the series with these label values,
// registering it if it is new. It panics with more series than the
// capacity, or with the wrong number of values: both are programming
// errors, found at start-up.
func (c *Counters) Series(values ...string) int {
	if len(values) != c.labels {
		panic(fmt.Sprintf("metrics: %d label values for %d labels", len(values), c.labels))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, v := range c.series {
		if slices.Equal(v, values) {
			return i
		}
	}
	if len(c.series) == cap(c.series) {
		panic("metrics: more series than the capacity: " + strings.Join(values, ","))
	}
	c.series = append(c.series, append([]string(nil), values...))
	return len(c.series) - 1
}

// Cell returns shard's counter of series, for a writer that keeps it.
func (c *Counters) Cell(shard, series int) *atomic.Uint64 {
	return &c.cells[shardOf(shard)*c.stride+series]
}

// Add adds n to shard's counter of series.
func (c *Counters) Add(shard, series int, n uint64) { c.Cell(shard, series).Add(n) }

// Value returns series' total over the shards.
func (c *Counters) Value(series int) uint64 { return sumShards(c.cells, c.stride, series) }

// Describe implements prometheus.Collector.
func (c *Counters) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c *Counters) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	series := c.series
	c.mu.Unlock()
	for i, values := range series {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(c.Value(i)), values...)
	}
}
