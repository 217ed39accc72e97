package main

import (
	"strings"
	"testing"
)

const metricsText = `# HELP pgmoat_statements_total Statements judged.
# TYPE pgmoat_statements_total counter
pgmoat_statements_total{decision="allow",operation="select"} 1200
pgmoat_statements_total{decision="allow",operation="update"} 300
pgmoat_statements_total{decision="block",operation="truncate"} 2
pgmoat_analysis_cache_requests_total{result="hit"} 1490
pgmoat_analysis_cache_requests_total{result="miss"} 12
pgmoat_analysis_duration_seconds_sum 0.0015
pgmoat_analysis_duration_seconds_count 1502
go_goroutines 12
`

func TestCounters(t *testing.T) {
	c, err := parseCounters(strings.NewReader(metricsText))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.sum("pgmoat_statements_total"); got != 1502 {
		t.Errorf("statements = %v, want 1502", got)
	}
	if got := c.sum("pgmoat_statements_total", `decision="allow"`); got != 1500 {
		t.Errorf("allowed = %v, want 1500", got)
	}
	if got := strings.Join(c.labelValues("pgmoat_statements_total", "decision"), ","); got != "allow,block" {
		t.Errorf("decisions = %s", got)
	}
	before, _ := parseCounters(strings.NewReader(`pgmoat_statements_total{decision="allow",operation="select"} 200`))
	if got := c.minus(before).sum("pgmoat_statements_total"); got != 1302 {
		t.Errorf("after - before = %v, want 1302", got)
	}
	if _, ok := c["go_goroutines"]; ok {
		t.Error("kept a non-pgmoat sample")
	}
}
