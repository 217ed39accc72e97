package main

import (
	"math"
	"sort"
)

// stat is the median of one cell on one target over the rounds.
type stat struct {
	N          int     // runs measured
	Failed     int     // runs that failed
	Unmeasured int     // runs that passed without a steady state to measure
	TPS        float64 // median
	MinTPS     float64
	MaxTPS     float64
	LatencyMS  float64 // median of the runs' average latencies
	// CPUPerTx and CSPerTx are the medians of the runs' relay CPU time
	// (µs) and context switches per transaction; NaN for direct, or when
	// no run has one.
	CPUPerTx float64
	CSPerTx  float64
	// UserPerTx is the median of the part of the runs' CPU time per
	// transaction spent in user space.
	UserPerTx float64
	// SyscallsPerTx is the relay's system calls per transaction, from the
	// counting pass (the median, should it have several runs); NaN when
	// not counted.
	SyscallsPerTx float64
	Err           string // the first failure, if any
}

// ok reports whether the cell has a number to show.
func (s stat) ok() bool { return s.N > 0 }

// hasCPU reports whether the cell has a relay CPU time to show.
func (s stat) hasCPU() bool { return s.ok() && !math.IsNaN(s.CPUPerTx) }

type statKey struct {
	Cell   cell
	Target string
}

// summarize takes the medians of the measured runs of each cell on each
// target. A cell with any failed run keeps its medians but carries the
// first error: a firewall that blocks one run of pgbench is broken.
func summarize(recs []runRecord) map[statKey]stat {
	type acc struct {
		tps, lat, cpu, user, cs, sys []float64
		failed, unmeasured           int
		err                          string
	}
	accs := map[statKey]*acc{}
	for _, r := range recs {
		k := statKey{r.Cell, r.Target}
		a := accs[k]
		if a == nil {
			a = &acc{}
			accs[k] = a
		}
		switch {
		case r.Err != "":
			a.failed++
			if a.err == "" {
				a.err = r.Err
			}
		case r.Counting:
			if !math.IsNaN(r.SyscallsPerTx) {
				a.sys = append(a.sys, r.SyscallsPerTx)
			}
		case !r.measured():
			a.unmeasured++
		default:
			a.tps = append(a.tps, r.TPS())
			a.lat = append(a.lat, r.Result.LatencyMS)
			if x := r.CPUPerTx(); !math.IsNaN(x) {
				a.cpu = append(a.cpu, x)
				a.user = append(a.user, r.UserPerTx())
				a.cs = append(a.cs, r.CSPerTx())
			}
		}
	}
	out := make(map[statKey]stat, len(accs))
	for k, a := range accs {
		s := stat{N: len(a.tps), Failed: a.failed, Unmeasured: a.unmeasured, Err: a.err,
			CPUPerTx: median(a.cpu), UserPerTx: median(a.user), CSPerTx: median(a.cs), SyscallsPerTx: median(a.sys)}
		if s.N > 0 {
			s.TPS = median(a.tps)
			s.LatencyMS = median(a.lat)
			s.MinTPS, s.MaxTPS = minMax(a.tps)
		}
		out[k] = s
	}
	return out
}

// median of xs (the mean of the middle two for an even count); NaN for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func minMax(xs []float64) (lo, hi float64) {
	lo, hi = math.Inf(1), math.Inf(-1)
	for _, x := range xs {
		lo, hi = math.Min(lo, x), math.Max(hi, x)
	}
	return lo, hi
}

// cpuRatio is a/b of two stats' median relay CPU per transaction, NaN
// unless both have one.
func cpuRatio(a, b stat) float64 {
	if !a.hasCPU() || !b.hasCPU() || b.CPUPerTx == 0 {
		return math.NaN()
	}
	return a.CPUPerTx / b.CPUPerTx
}

// ratio is a/b of two stats' median TPS, NaN unless both have one.
func ratio(a, b stat) float64 {
	if !a.ok() || !b.ok() || b.TPS == 0 {
		return math.NaN()
	}
	return a.TPS / b.TPS
}
