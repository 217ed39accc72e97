//go:build race

package rules

// raceEnabled: the race detector is on (sync.Pool then drops a quarter
// of what it is given, so reuse cannot be counted on).
const raceEnabled = true
