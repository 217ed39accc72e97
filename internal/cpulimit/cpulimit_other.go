//go:build !linux

package cpulimit

import "runtime"

func affinity() int { return runtime.NumCPU() }

func quota(string) float64 { return 0 }
