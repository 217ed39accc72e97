// Package metrics owns pgmoat's Prometheus collectors: their names, help
// texts and labels. Label values are always from small fixed sets (decision,
// operation, outcome, reason); statement text, users and hold ids never
// become labels.
package metrics
