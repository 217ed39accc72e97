package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// pgbenchResult is what one pgbench run reports.
type pgbenchResult struct {
	TPS          float64 // transactions per second, without connection set-up
	LatencyMS    float64 // average latency
	Transactions int64   // transactions processed
	Failed       int64   // failed transactions (pgbench ≥ 15 reports them)
	ConnectMS    float64 // initial connection time
}

// pgbenchRun is one invocation of pgbench against one target.
type pgbenchRun struct {
	Bin      string // pgbench binary
	Host     string
	Port     int
	User     string
	Password string
	DB       string

	Script  string // "select" (-S) or "tpcb" (the default script)
	Mode    string // -M: simple, extended, prepared
	Clients int
	Jobs    int
	// Duration is how long the clients run once connected (whole
	// seconds); pgbench's -T adds connectSlack for them to connect.
	Duration time.Duration
	// Slack, when longer than connectSlack's estimate, is the time given
	// to connect: what the target's clients took last time, with margin.
	Slack time.Duration
	// LogPrefix, when set, makes pgbench log every transaction (-l) to
	// LogPrefix.PID and LogPrefix.PID.N (readTxLogs).
	LogPrefix string
}

// connectSlack is the time a run gives its clients to connect on top of
// its duration: pgbench's -T counts from before the first connection, and
// each of a job's clients connects in turn (a new backend, through pgmoat
// a new upstream connection too), some 5 to 20 ms each on 2 busy cores.
func connectSlack(clients, jobs int) time.Duration {
	perJob := (clients + jobs - 1) / max(jobs, 1)
	return (300*time.Millisecond + time.Duration(perJob)*15*time.Millisecond).Round(time.Second)
}

// seconds is pgbench's -T for r: its duration and the time to connect,
// in whole seconds, at least one more than the duration.
func (r pgbenchRun) seconds() int {
	d := int(r.Duration.Round(time.Second) / time.Second)
	slack := max(connectSlack(r.Clients, r.Jobs), r.Slack.Round(time.Second))
	return d + max(1, int(slack/time.Second))
}

// args are pgbench's arguments for r. -n: the caller vacuums (directly,
// not through the target) so that every target sees the same table state.
func (r pgbenchRun) args() []string {
	a := []string{"-n", "-h", r.Host, "-p", strconv.Itoa(r.Port), "-U", r.User,
		"-c", strconv.Itoa(r.Clients), "-j", strconv.Itoa(r.Jobs),
		"-T", strconv.Itoa(r.seconds()),
		"-M", r.Mode}
	if r.Script == "select" {
		a = append(a, "-S")
	}
	if r.LogPrefix != "" {
		a = append(a, "-l", "--log-prefix="+r.LogPrefix)
	}
	return append(a, r.DB)
}

// run executes pgbench and parses its report. A run that pgbench itself
// calls failed (an aborted client, an error) is an error carrying the tail
// of its output, so a blocked statement shows up as such.
func (r pgbenchRun) run(ctx context.Context) (pgbenchResult, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(r.seconds())*time.Second+2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.Bin, r.args()...)
	// Plain TCP everywhere: the throwaway server offers TLS, PgBouncer and
	// pgmoat are not configured for it, and TLS on one target only would
	// not be a comparison of the relays.
	cmd.Env = append(os.Environ(), "PGSSLMODE=disable", "PGPASSWORD="+r.Password,
		"PGCONNECT_TIMEOUT=10", "PGAPPNAME=pgmoat-bench")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	res, perr := parsePgbench(out.String())
	if err != nil {
		return res, fmt.Errorf("pgbench %s: %v: %s", strings.Join(r.args(), " "), err, tail(out.String(), 5))
	}
	if perr != nil {
		return res, fmt.Errorf("pgbench %s: %v: %s", strings.Join(r.args(), " "), perr, tail(out.String(), 5))
	}
	if strings.Contains(out.String(), "Run was aborted") {
		return res, fmt.Errorf("pgbench %s: run aborted: %s", strings.Join(r.args(), " "), tail(out.String(), 5))
	}
	return res, nil
}

// parsePgbench reads the summary pgbench prints at the end of a run. It
// knows the report of pgbench 14 and later ("tps = N (without initial
// connection time)") and of older ones ("(excluding connections
// establishing)").
func parsePgbench(out string) (pgbenchResult, error) {
	var res pgbenchResult
	var haveTPS, haveLatency bool
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "tps = "):
			if strings.Contains(line, "including connections") {
				continue
			}
			v, err := firstFloat(strings.TrimPrefix(line, "tps = "))
			if err != nil {
				return res, fmt.Errorf("bad tps line %q", line)
			}
			res.TPS, haveTPS = v, true
		case strings.HasPrefix(line, "latency average = "):
			v, err := firstFloat(strings.TrimPrefix(line, "latency average = "))
			if err != nil {
				return res, fmt.Errorf("bad latency line %q", line)
			}
			res.LatencyMS, haveLatency = v, true
		case strings.HasPrefix(line, "initial connection time = "):
			res.ConnectMS, _ = firstFloat(strings.TrimPrefix(line, "initial connection time = "))
		case strings.HasPrefix(line, "number of transactions actually processed: "):
			s := strings.TrimPrefix(line, "number of transactions actually processed: ")
			s, _, _ = strings.Cut(s, "/") // "N/M" with -t
			res.Transactions, _ = strconv.ParseInt(strings.TrimSpace(s), 10, 64)
		case strings.HasPrefix(line, "number of failed transactions: "):
			f, _ := firstFloat(strings.TrimPrefix(line, "number of failed transactions: "))
			res.Failed = int64(f)
		}
	}
	if !haveTPS || !haveLatency {
		return res, errors.New("no tps or latency in pgbench's output")
	}
	if res.Failed > 0 {
		return res, fmt.Errorf("%d failed transactions", res.Failed)
	}
	return res, nil
}

// firstFloat parses the first space-separated field of s.
func firstFloat(s string) (float64, error) {
	f, _, _ := strings.Cut(strings.TrimSpace(s), " ")
	return strconv.ParseFloat(f, 64)
}

// tail returns the last n non-empty lines of s, joined with " | ".
func tail(s string, n int) string {
	var lines []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
