package cpulimit

import (
	"math"
	"runtime"
)

// Limits are the CPUs this process may use.
type Limits struct {
	// Affinity is the number of CPUs the process may run on.
	Affinity int
	// Quota is how many CPUs' worth of time the cgroups allow per period;
	// 0 when none limits it.
	Quota float64
}

// CPUs is how many CPUs the process can keep busy at once: the affinity,
// capped by the quota rounded up, at least one.
func (l Limits) CPUs() int {
	n := max(l.Affinity, 1)
	if l.Quota > 0 {
		n = min(n, int(math.Ceil(l.Quota)))
	}
	return max(n, 1)
}

// Read reads the process's limits.
func Read() Limits {
	l := Limits{Affinity: affinity()}
	if l.Affinity < 1 {
		l.Affinity = runtime.NumCPU()
	}
	l.Quota = quota("")
	return l
}
