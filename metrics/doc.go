// Package metrics owns pgmoat's Prometheus collectors: their names, help
// texts and labels. Label values are always from small fixed sets (decision,
// operation, outcome, reason); statement text, users and hold ids never
// become labels.
//
// The few metrics written on every statement or socket write (statements
// judged, analysis time, cache look-ups, bytes relayed) are collectors of
// this package's own, Counters and Durations, kept in Shards copies that a
// scrape adds up, so that event loops on different processors never write
// the same memory (shards.go). Everything else is a plain Prometheus type.
package metrics
