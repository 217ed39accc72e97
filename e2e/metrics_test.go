package e2e

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode"

	"github.com/jackc/pgx/v5"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/pgmoat/pgmoat/admin"
	"github.com/pgmoat/pgmoat/internal/moattest"
	"github.com/pgmoat/pgmoat/internal/pgtest"
)

const metricsPolicy = `policy:
  protect: [public.users, public.old_stuff]
  rules:
    - name: deployer-needs-approval
      match:
        applications: [deployer]
      operations: [destructive]
      action: hold
`

// TestMetricsAfterTraffic scrapes /metrics around real traffic through the
// binary and checks that each counter moved, with the labels an alert or
// dashboard would select on, and that no statement text leaks into it.
func TestMetricsAfterTraffic(t *testing.T) {
	c := pgtest.Get(t)
	db := c.NewDatabase(t)
	c.Exec(t, db, "CREATE TABLE users(id int); CREATE TABLE old_stuff(id int)")
	m := moattest.Start(t, c, moattest.Options{Config: metricsPolicy})
	ctx := context.Background()

	start := scrapeMetrics(t, m)
	for _, name := range []string{"pgmoat_client_connections_total", "pgmoat_upstream_connect_errors_total", "pgmoat_holds_pending", "pgmoat_analysis_duration_seconds"} {
		if start[name] == nil {
			t.Errorf("%s missing from /metrics before any traffic", name)
		}
	}
	if v := metricValue(t, start, "pgmoat_client_connections_total", nil); v != 0 {
		t.Errorf("pgmoat_client_connections_total = %v before any client", v)
	}

	// Simple protocol, so that every Exec sends its text to be judged.
	conn := connect(t, m.SuperConnString(db, "default_query_exec_mode=simple_protocol", "application_name=metrics"))
	other := connect(t, m.SuperConnString(db, "application_name=metrics-2"))
	waitMetric(t, m, "pgmoat_client_connections_open", nil, 2)
	// Plain TCP sessions run in the event loop (unless it is turned off).
	loopOn := moattest.EventLoops() != "0"
	if loopOn {
		waitMetric(t, m, "pgmoat_relay_sessions", labels("mode", "event_loop"), 2)
	}

	mustExec(t, conn, "SELECT 'metrics-literal-7f3'")
	first := scrapeMetrics(t, m)
	for range 3 {
		mustExec(t, conn, "SELECT 'metrics-literal-7f3'")
	}
	repeated := scrapeMetrics(t, m)
	if h0, h1 := metricValue(t, first, "pgmoat_analysis_cache_requests_total", labels("result", "hit")),
		metricValue(t, repeated, "pgmoat_analysis_cache_requests_total", labels("result", "hit")); h1 < h0+3 {
		t.Errorf("cache hits went from %v to %v over 3 repeats of a statement", h0, h1)
	}
	if _, err := conn.Exec(ctx, "DROP TABLE users"); stateOf(err) != "42501" {
		t.Fatalf("DROP TABLE users: %v", err)
	}
	mustExec(t, other, "SELECT count(*) FROM old_stuff")

	// A hold: pending while it waits, resolved as approved after.
	dep := connect(t, m.SuperConnString(db, "application_name=deployer"))
	held := make(chan error, 1)
	go func() {
		_, err := dep.Exec(ctx, "DROP TABLE old_stuff")
		held <- err
	}()
	api := &admin.Client{BaseURL: m.AdminURL, Token: moattest.ApproverToken}
	hold := waitPendingHold(t, api)
	waitMetric(t, m, "pgmoat_holds_pending", nil, 1)
	if _, err := api.Approve(ctx, hold.ID, "metrics test"); err != nil {
		t.Fatal(err)
	}
	if err := <-held; err != nil {
		t.Fatalf("approved DROP: %v", err)
	}

	// Reloads: one good, one rejected.
	m.Reload()
	good, err := os.ReadFile(m.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, m.ConfigPath, string(good)+"no_such_key: 1\n")
	m.Reload()
	writeFile(t, m.ConfigPath, string(good))

	for _, cn := range []*pgx.Conn{conn, other, dep} {
		closeConn(t, cn)
	}
	waitMetric(t, m, "pgmoat_client_connections_open", nil, 0)

	page := m.Metrics(t)
	fams := parseMetrics(t, page)
	inf := math.Inf(1)
	checks := []struct {
		name     string
		labels   map[string]string
		min, max float64
	}{
		{"pgmoat_client_connections_total", nil, 3, 3},
		{"pgmoat_statements_total", labels("decision", "block", "operation", "drop"), 1, 1},
		{"pgmoat_statements_total", labels("decision", "hold", "operation", "drop"), 1, 1},
		{"pgmoat_statements_total", labels("decision", "allow", "operation", "none"), 5, inf},
		{"pgmoat_statements_total", labels("decision", "allow", "operation", "drop"), 0, 0},
		{"pgmoat_analysis_cache_requests_total", labels("result", "miss"), 1, inf},
		{"pgmoat_relayed_bytes_total", labels("direction", "client_to_server"), 100, inf},
		{"pgmoat_relayed_bytes_total", labels("direction", "server_to_client"), 100, inf},
		{"pgmoat_holds_pending", nil, 0, 0},
		{"pgmoat_holds_resolved_total", labels("outcome", "approved"), 1, 1},
		{"pgmoat_config_reloads_total", labels("result", "success"), 1, 1},
		{"pgmoat_config_reloads_total", labels("result", "failure"), 1, 1},
		{"pgmoat_audit_write_errors_total", nil, 0, 0},
		{"pgmoat_upstream_connect_errors_total", nil, 0, 0},
	}
	if loopOn {
		// The blocked DROP and the held one each take their session
		// out of the loop; the rest stays in it.
		checks = append(checks, []struct {
			name     string
			labels   map[string]string
			min, max float64
		}{
			{"pgmoat_event_loop_handoffs_total", labels("reason", "interceptor"), 2, 2},
			{"pgmoat_event_loop_handoffs_total", labels("reason", "large_message"), 0, 0},
			{"pgmoat_relay_sessions", labels("mode", "event_loop"), 0, 0},
			{"pgmoat_relay_sessions", labels("mode", "goroutines"), 0, 0},
		}...)
	}
	for _, ck := range checks {
		v := metricValue(t, fams, ck.name, ck.labels)
		if v < ck.min || v > ck.max {
			t.Errorf("%s%v = %v, want between %v and %v", ck.name, ck.labels, v, ck.min, ck.max)
		}
	}
	if n := histogramCount(t, fams, "pgmoat_analysis_duration_seconds"); n < 7 {
		t.Errorf("pgmoat_analysis_duration_seconds_count = %d, want one per judged message (at least 7)", n)
	}
	if n := histogramCount(t, fams, "pgmoat_hold_wait_duration_seconds"); n != 1 {
		t.Errorf("pgmoat_hold_wait_duration_seconds_count = %d, want 1", n)
	}
	for _, text := range []string{"metrics-literal-7f3", "DROP", "SELECT", "old_stuff", "users"} {
		if strings.Contains(page, text) {
			t.Errorf("/metrics contains statement text %q", text)
		}
	}
}

// TestMetricsUpstreamConnectErrors points a pgmoat at an upstream port that
// closes after it starts: a client connecting gets 08006 and the error is
// counted.
func TestMetricsUpstreamConnectErrors(t *testing.T) {
	c := pgtest.Get(t)
	up := newFlakyUpstream(t, c)
	m := moattest.Start(t, c, moattest.Options{Upstream: up.url()})
	up.close()

	err := connectErr(m.SuperConnString("postgres"))
	if stateOf(err) != "08006" {
		t.Fatalf("connecting with the upstream down: err = %v, want SQLSTATE 08006", err)
	}
	fams := scrapeMetrics(t, m)
	if v := metricValue(t, fams, "pgmoat_upstream_connect_errors_total", nil); v != 1 {
		t.Errorf("pgmoat_upstream_connect_errors_total = %v after one failed connection, want 1", v)
	}
	// The client reads its FATAL before pgmoat has closed the session:
	// wait for the gauge rather than race it.
	waitMetric(t, m, "pgmoat_client_connections_open", nil, 0)
}

// TestPromtoolChecksAlerts validates examples/alerts.yml with promtool
// (Debian's, which make deps installs; built from the Go module proxy only
// where it is missing) and, so that a
// promtool that accepts anything cannot pass the test, checks that it
// rejects a broken copy.
func TestPromtoolChecksAlerts(t *testing.T) {
	root := repoRoot(t)
	promtool := findPromtool(t, root)
	alerts := filepath.Join(root, "examples", "alerts.yml")
	out, err := exec.Command(promtool, "check", "rules", alerts).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "SUCCESS") {
		t.Fatalf("promtool check rules %s: %v\n%s", alerts, err, out)
	}
	data, err := os.ReadFile(alerts)
	if err != nil {
		t.Fatal(err)
	}
	broken := filepath.Join(t.TempDir(), "alerts.yml")
	writeFile(t, broken, strings.Replace(string(data), "> 0", "> > 0", 1))
	if out, err := exec.Command(promtool, "check", "rules", broken).CombinedOutput(); err == nil {
		t.Errorf("promtool accepted a rule file with a broken expression:\n%s", out)
	}
}

// TestDashboardUsesExportedMetrics checks that the Grafana dashboard is
// valid JSON and that every metric its PromQL selects is one pgmoat
// really exports: the names come from a scrape of the binary after traffic
// that makes every labelled family appear.
func TestDashboardUsesExportedMetrics(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "examples", "grafana-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash any
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("examples/grafana-dashboard.json is not valid JSON: %v", err)
	}
	var exprs []string
	walkJSON(dash, func(key, value string) {
		if key == "expr" || key == "query" && strings.HasPrefix(value, "label_values(") {
			exprs = append(exprs, value)
		}
	})
	if len(exprs) < 10 {
		t.Fatalf("found only %d PromQL expressions in the dashboard", len(exprs))
	}

	c := pgtest.Get(t)
	db := c.NewDatabase(t)
	c.Exec(t, db, "CREATE TABLE users(id int); CREATE TABLE old_stuff(id int)")
	m := moattest.Start(t, c, moattest.Options{Config: metricsPolicy})
	ctx := context.Background()
	conn := connect(t, m.SuperConnString(db))
	if _, err := conn.Exec(ctx, "DROP TABLE users"); stateOf(err) != "42501" {
		t.Fatal(err)
	}
	// A hold denied, a rejected connection and a reload, so that the
	// families with labels have a series to show.
	dep := connect(t, m.SuperConnString(db, "application_name=deployer"))
	held := make(chan error, 1)
	go func() { _, err := dep.Exec(ctx, "DROP TABLE old_stuff"); held <- err }()
	api := &admin.Client{BaseURL: m.AdminURL, Token: moattest.ApproverToken}
	if _, err := api.Deny(ctx, waitPendingHold(t, api).ID, "dashboard test"); err != nil {
		t.Fatal(err)
	}
	<-held
	sendBadStartup(t, m.Addr)
	m.Reload()
	waitMetric(t, m, "pgmoat_client_connections_rejected_total", labels("reason", "protocol_error"), 1)

	exported := map[string]bool{}
	for name, f := range scrapeMetrics(t, m) {
		exported[name] = true
		if f.GetType() == dto.MetricType_HISTOGRAM {
			for _, s := range []string{"_bucket", "_count", "_sum"} {
				exported[name+s] = true
			}
		}
	}
	for _, e := range exprs {
		names := promqlMetricNames(e)
		if len(names) == 0 {
			t.Errorf("no metric name found in %q", e)
		}
		for _, n := range names {
			if !exported[n] {
				t.Errorf("dashboard expression %q uses %s, which pgmoat does not export", e, n)
			}
		}
	}
}

// TestPromqlMetricNames checks the small PromQL scanner the dashboard test
// relies on.
func TestPromqlMetricNames(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []string
	}{
		{`sum(increase(pgmoat_statements_total{decision="block",instance=~"$instance"}[1h]))`, []string{"pgmoat_statements_total"}},
		{`histogram_quantile(0.99, sum by (le) (rate(pgmoat_analysis_duration_seconds_bucket{instance=~"$instance"}[$__rate_interval])))`, []string{"pgmoat_analysis_duration_seconds_bucket"}},
		{`sum by (decision, operation) (rate(x_total{a!="b"}[5m])) / ignoring(operation) group_left sum(y) > bool 0 and on(instance) z offset 5m`, []string{"x_total", "y", "z"}},
		{`label_values(pgmoat_client_connections_open, instance)`, []string{"pgmoat_client_connections_open"}},
		{`up{job="pgmoat"} == 0 or vector(1e3)`, []string{"up"}},
	} {
		if got := promqlMetricNames(tc.expr); !slices.Equal(got, tc.want) {
			t.Errorf("promqlMetricNames(%q) = %q, want %q", tc.expr, got, tc.want)
		}
	}
}

// scrapeMetrics fetches and parses pgmoat's /metrics.
func scrapeMetrics(t *testing.T, m *moattest.Moat) map[string]*dto.MetricFamily {
	t.Helper()
	return parseMetrics(t, m.Metrics(t))
}

func parseMetrics(t *testing.T, page string) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(page))
	if err != nil {
		t.Fatalf("parsing /metrics: %v\n%s", err, page)
	}
	return fams
}

func labels(kv ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

// metricValue sums the counter, gauge or untyped series of family name
// whose labels include want; 0 when there are none.
func metricValue(t *testing.T, fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	t.Helper()
	f := fams[name]
	if f == nil {
		return 0
	}
	var sum float64
	for _, m := range f.GetMetric() {
		if !hasLabels(m, want) {
			continue
		}
		switch f.GetType() {
		case dto.MetricType_COUNTER:
			sum += m.GetCounter().GetValue()
		case dto.MetricType_GAUGE:
			sum += m.GetGauge().GetValue()
		case dto.MetricType_UNTYPED:
			sum += m.GetUntyped().GetValue()
		default:
			t.Fatalf("%s is a %s, not a counter or gauge", name, f.GetType())
		}
	}
	return sum
}

func histogramCount(t *testing.T, fams map[string]*dto.MetricFamily, name string) uint64 {
	t.Helper()
	f := fams[name]
	if f == nil || f.GetType() != dto.MetricType_HISTOGRAM {
		t.Fatalf("%s is not a histogram on /metrics", name)
	}
	var n uint64
	for _, m := range f.GetMetric() {
		n += m.GetHistogram().GetSampleCount()
	}
	return n
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	for k, v := range want {
		found := false
		for _, lp := range m.GetLabel() {
			if lp.GetName() == k && lp.GetValue() == v {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// waitMetric scrapes until the series' value is want.
func waitMetric(t *testing.T, m *moattest.Moat, name string, l map[string]string, want float64) {
	t.Helper()
	var got float64
	moattest.WaitFor(t, 10*time.Second, name+" to reach its value", func() bool {
		got = metricValue(t, scrapeMetrics(t, m), name, l)
		return got == want
	})
}

// sendBadStartup opens a connection and sends a startup packet for
// protocol 2.0, which pgmoat rejects as a protocol error.
func sendBadStartup(t *testing.T, addr string) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var pkt [8]byte
	binary.BigEndian.PutUint32(pkt[0:], 8)
	binary.BigEndian.PutUint32(pkt[4:], 2<<16)
	if _, err := nc.Write(pkt[:]); err != nil {
		t.Fatal(err)
	}
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 512)
	for {
		if _, err := nc.Read(buf); err != nil {
			return
		}
	}
}

// walkJSON calls fn for every string value in v with the key it is under.
func walkJSON(v any, fn func(key, value string)) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if s, ok := e.(string); ok {
				fn(k, s)
			} else {
				walkJSON(e, fn)
			}
		}
	case []any:
		for _, e := range x {
			walkJSON(e, fn)
		}
	}
}

// promqlKeywords are PromQL words that are not metric names when they are
// not followed by "(": aggregations written before "by", binary operators
// and modifiers, and the number literals.
var promqlKeywords = map[string]bool{
	"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true,
	"count": true, "count_values": true, "bottomk": true, "topk": true, "quantile": true,
	"limitk": true, "limit_ratio": true,
	"and": true, "or": true, "unless": true, "bool": true, "offset": true, "atan2": true,
	"inf": true, "nan": true, "Inf": true, "NaN": true,
}

// promqlLabelLists are the modifiers followed by a parenthesised list of
// label names.
var promqlLabelLists = map[string]bool{"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true}

// promqlMetricNames returns the metric names a PromQL expression (or a
// Grafana label_values() query) selects, in order. It is a scanner, not a
// parser: it skips strings, label matchers {…}, ranges […], Grafana
// variables, numbers, function names (an identifier followed by "("),
// keywords and the label lists of by/on/ignoring/…; what is left are
// metric names.
func promqlMetricNames(expr string) []string {
	var names []string
	s := []rune(expr)
	isIdentStart := func(r rune) bool { return r == '_' || r == ':' || unicode.IsLetter(r) }
	isIdent := func(r rune) bool { return isIdentStart(r) || unicode.IsDigit(r) }
	skipSpace := func(i int) int {
		for i < len(s) && unicode.IsSpace(s[i]) {
			i++
		}
		return i
	}
	// skipGroup returns the index after the bracket that closes s[i].
	var skipGroup func(i int) int
	skipString := func(i int) int {
		q := s[i]
		for i++; i < len(s) && s[i] != q; i++ {
			if s[i] == '\\' && q != '`' {
				i++
			}
		}
		return i + 1
	}
	skipGroup = func(i int) int {
		open := s[i]
		close := map[rune]rune{'{': '}', '[': ']', '(': ')'}[open]
		for i++; i < len(s) && s[i] != close; {
			switch s[i] {
			case '"', '\'', '`':
				i = skipString(i)
			case '{', '[', '(':
				i = skipGroup(i)
			default:
				i++
			}
		}
		return i + 1
	}
	labelValues := strings.HasPrefix(strings.TrimSpace(expr), "label_values(")
	for i := 0; i < len(s); {
		r := s[i]
		switch {
		case r == '"' || r == '\'' || r == '`':
			i = skipString(i)
		case r == '{' || r == '[':
			i = skipGroup(i)
		case r == '$':
			for i++; i < len(s) && (isIdent(s[i]) || s[i] == '{' || s[i] == '}'); i++ {
			}
		case unicode.IsDigit(r) || r == '.':
			for i++; i < len(s) && (isIdent(s[i]) || s[i] == '.'); i++ {
			}
		case isIdentStart(r):
			j := i
			for j < len(s) && isIdent(s[j]) {
				j++
			}
			word := string(s[i:j])
			next := skipSpace(j)
			switch {
			case promqlLabelLists[word]:
				i = next
				if i < len(s) && s[i] == '(' {
					i = skipGroup(i)
				}
				continue
			case next < len(s) && s[next] == '(':
				// A function or an aggregation: its arguments follow.
			case promqlKeywords[word]:
			default:
				names = append(names, word)
				if labelValues {
					// label_values(metric, label): the rest are label names.
					return names
				}
			}
			i = j
		default:
			i++
		}
	}
	return names
}

func repoRoot(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

// promtoolModule is the promtool the suite and `make deps` use.
const promtoolModule = "github.com/prometheus/prometheus/cmd/promtool@v0.316.0"

// findPromtool returns promtool from PATH, or from <repo>/bin/tools,
// building it there from the Go module proxy if needed. A file lock keeps
// parallel test binaries from building it twice at once.
func findPromtool(t *testing.T, root string) string {
	t.Helper()
	if p, err := exec.LookPath("promtool"); err == nil {
		return p
	}
	dir := filepath.Join(root, "bin", "tools")
	p := filepath.Join(dir, "promtool")
	if isExecutable(p) {
		return p
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".promtool.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if isExecutable(p) { // built by another test binary while we waited
		return p
	}
	t.Logf("building %s into %s (a few minutes the first time)", promtoolModule, dir)
	cmd := exec.Command("go", "install", promtoolModule)
	cmd.Env = append(os.Environ(), "GOBIN="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go install %s: %v\n%s", promtoolModule, err, out)
	}
	return p
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// connectErr connects once and returns the error (closing any connection).
func connectErr(connString string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, connString)
	if err == nil {
		conn.Close(ctx)
	}
	return err
}

// httpGet returns the status code and body of GET url.
func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// TestUnprotectedSessionsStayInLoop: a pgmoat that protects nothing (yet)
// has no name to resolve, so it does not read a session's search_path
// back from the server, which would take every session out of the event
// loop for good at its first statement (and cost it about half again as
// much CPU per transaction). Once a reload protects something, the next
// statement reads it back, and a DROP of the newly protected table is
// refused.
func TestUnprotectedSessionsStayInLoop(t *testing.T) {
	if moattest.EventLoops() == "0" {
		t.Skip("the event loop is off (PGMOAT_TEST_EVENT_LOOPS=0)")
	}
	c := pgtest.Get(t)
	db := c.NewDatabase(t)
	c.Exec(t, db, "CREATE TABLE accounts(id int primary key, balance int)")
	m := moattest.Start(t, c, moattest.Options{Config: "policy:\n  protect: []\n"})
	ctx := context.Background()
	conn := connect(t, m.SuperConnString(db))
	for i := 0; i < 5; i++ {
		if _, err := conn.Exec(ctx, "UPDATE accounts SET balance = balance + $1 WHERE id = $2", i, i); err != nil {
			t.Fatal(err)
		}
		var n int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM accounts WHERE id = $1", i).Scan(&n); err != nil {
			t.Fatal(err)
		}
	}
	mustExec(t, conn, "SET search_path = public")
	fams := parseMetrics(t, m.Metrics(t))
	if v := metricValue(t, fams, "pgmoat_event_loop_handoffs_total", labels("reason", "interceptor")); v != 0 {
		t.Errorf("pgmoat_event_loop_handoffs_total{reason=interceptor} = %v with nothing protected, want 0", v)
	}
	if v := metricValue(t, fams, "pgmoat_relay_sessions", labels("mode", "event_loop")); v != 1 {
		t.Errorf("pgmoat_relay_sessions{mode=event_loop} = %v, want 1", v)
	}

	good, err := os.ReadFile(m.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, m.ConfigPath, strings.Replace(string(good), "protect: []", "protect: [public.accounts]", 1))
	m.Reload()
	waitMetric(t, m, "pgmoat_config_reloads_total", labels("result", "success"), 1)
	// Now the next statement (a text not prepared before, so that no
	// Bind is judged again under the new policy) reads the search_path
	// back, on the blocking path: the session leaves the loop for it.
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM accounts WHERE balance > $1", 0).Scan(&n); err != nil {
		t.Fatal(err)
	}
	waitMetric(t, m, "pgmoat_event_loop_handoffs_total", labels("reason", "interceptor"), 1)
	if _, err := conn.Exec(ctx, "DROP TABLE accounts"); stateOf(err) != "42501" {
		t.Fatalf("DROP TABLE accounts after the reload protected it: %v, want 42501", err)
	}
	c.Exec(t, db, "SELECT 1 FROM accounts")
}
