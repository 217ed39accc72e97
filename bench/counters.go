package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
)

// counters are pgmoat's own Prometheus counters, scraped from its admin
// listener: proof that the matrix really went through the analysis.
type counters map[string]float64 // "name{labels}" → value

// scrapeCounters reads the metrics pgmoat exposes on its admin listener.
func scrapeCounters(ctx context.Context, adminPort int) (counters, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/metrics", adminPort), nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	return parseCounters(resp.Body)
}

// parseCounters reads the pgmoat_* samples of the Prometheus text format.
func parseCounters(r io.Reader) (counters, error) {
	c := counters{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "pgmoat_") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("bad sample %q", line)
		}
		c[line[:i]] = v
	}
	return c, sc.Err()
}

// sum adds the samples of metric whose labels include every label given
// as `name="value"`.
func (c counters) sum(metric string, labels ...string) float64 {
	var t float64
	for k, v := range c {
		name, lbl, _ := strings.Cut(k, "{")
		if name != metric {
			continue
		}
		ok := true
		for _, l := range labels {
			if !strings.Contains(lbl, l) {
				ok = false
			}
		}
		if ok {
			t += v
		}
	}
	return t
}

// labelValues lists the values label takes among metric's samples.
func (c counters) labelValues(metric, label string) []string {
	seen := map[string]bool{}
	for k := range c {
		name, lbl, _ := strings.Cut(k, "{")
		if name != metric {
			continue
		}
		for _, kv := range strings.Split(strings.TrimSuffix(lbl, "}"), ",") {
			if n, v, ok := strings.Cut(kv, "="); ok && n == label {
				seen[strings.Trim(v, `"`)] = true
			}
		}
	}
	vs := make([]string, 0, len(seen))
	for v := range seen {
		vs = append(vs, v)
	}
	sort.Strings(vs)
	return vs
}

// minus is c - before, sample by sample.
func (c counters) minus(before counters) counters {
	d := counters{}
	for k, v := range c {
		d[k] = v - before[k]
	}
	return d
}
