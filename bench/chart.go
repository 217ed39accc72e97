package main

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// chartSpec is one chart: a figure of each cell's stats, by client count,
// a line per target.
type chartSpec struct {
	File    string // PNG file name, next to the report
	Title   string // what is plotted, for the chart's title
	YLabel  string
	Format  string // gnuplot's y-axis format
	Targets []string
	Value   func(stat) float64 // NaN where there is none
}

// tpsChart is TPS by clients, every target.
func tpsChart(r *report) chartSpec {
	return chartSpec{File: "tps.png", Title: "pgbench TPS by clients", YLabel: "TPS", Format: "%.0f", Targets: r.Targets,
		Value: func(s stat) float64 {
			if !s.ok() {
				return math.NaN()
			}
			return s.TPS
		}}
}

// cpuChart is the relays' CPU per transaction by clients.
func cpuChart(r *report) chartSpec {
	return chartSpec{File: "cpu.png", Title: "relay CPU µs per transaction by clients", YLabel: "µs per transaction", Format: "%.0f",
		Targets: r.relays(), Value: func(s stat) float64 {
			if !s.hasCPU() {
				return math.NaN()
			}
			return s.CPUPerTx
		}}
}

// chartData is gnuplot's input: one block per (script, protocol) panel,
// a line per client count, a column per target ("NaN" where there is no
// median), blocks separated by two blank lines so `index` selects them.
func chartData(r *report, spec chartSpec) (data string, panels [][2]string) {
	var b strings.Builder
	seen := map[[2]string]bool{}
	for _, c := range r.Cells {
		k := [2]string{c.Script, c.Mode}
		if !seen[k] {
			seen[k] = true
			panels = append(panels, k)
		}
	}
	for i, pn := range panels {
		if i > 0 {
			b.WriteString("\n\n")
		}
		fmt.Fprintf(&b, "# %s -M %s\n", scriptTitle(pn[0]), pn[1])
		for _, c := range r.Cells {
			if c.Script != pn[0] || c.Mode != pn[1] {
				continue
			}
			fmt.Fprintf(&b, "%d", c.Clients)
			for _, t := range spec.Targets {
				if v := spec.Value(r.stat(c, t)); !math.IsNaN(v) {
					fmt.Fprintf(&b, " %.1f", v)
				} else {
					b.WriteString(" NaN")
				}
			}
			b.WriteByte('\n')
		}
	}
	return b.String(), panels
}

// targetStyle keeps each target's colour the same in every panel.
var targetStyle = map[string]string{
	targetDirect:    `lc rgb "#555555" dt 2 pt 6`,
	targetPgBouncer: `lc rgb "#1f77b4" pt 4`,
	targetPgmoat:    `lc rgb "#d62728" pt 7`,
	targetPgmoatB:   `lc rgb "#ff7f0e" dt 4 pt 9`,
}

// gnuplotScript draws one panel per (script, protocol): the spec's figure
// by client count, a line per target.
func gnuplotScript(r *report, spec chartSpec, dataFile, pngFile string, panels [][2]string) string {
	cols := 0
	scripts := map[string]bool{}
	for _, pn := range panels {
		scripts[pn[0]] = true
	}
	rows := len(scripts)
	cols = (len(panels) + rows - 1) / rows
	var b strings.Builder
	fmt.Fprintf(&b, "set terminal pngcairo size %d,%d font 'sans,10'\n", 380*cols+40, 320*rows+60)
	fmt.Fprintf(&b, "set output %s\n", gpQuote(pngFile))
	fmt.Fprintf(&b, "set multiplot layout %d,%d title %s font 'sans,12'\n", rows, cols,
		gpQuote(fmt.Sprintf("%s (median of %d × %s; %d × %s)", spec.Title, r.Opts.Rounds, r.Opts.Duration, r.Machine.CPUs, r.Machine.CPUModel)))
	fmt.Fprintf(&b, "set logscale x 2\nset grid\nset key bottom right opaque box samplen 2\nset yrange [0:*]\nset offsets 0, 0, graph 0.08, 0\nset format y %s\nset xlabel 'clients'\nset ylabel %s\nset datafile missing 'NaN'\n",
		gpQuote(spec.Format), gpQuote(spec.YLabel))
	var clients []string
	seen := map[int]bool{}
	for _, c := range r.Cells {
		if !seen[c.Clients] {
			seen[c.Clients] = true
			clients = append(clients, fmt.Sprint(c.Clients))
		}
	}
	fmt.Fprintf(&b, "set xtics (%s)\nset xrange [0.7:%d]\n", strings.Join(clients, ", "), maxClients(r.Cells)*3/2)
	for i, pn := range panels {
		fmt.Fprintf(&b, "set title %s\n", gpQuote(fmt.Sprintf("%s  -M %s", scriptTitle(pn[0]), pn[1])))
		var plots []string
		for j, t := range spec.Targets {
			plots = append(plots, fmt.Sprintf("%s index %d using 1:%d with linespoints lw 2 %s title %s",
				gpQuote(dataFile), i, j+2, targetStyle[t], gpQuote(targetTitle(t))))
		}
		b.WriteString("plot " + strings.Join(plots, ", \\\n     ") + "\n")
	}
	b.WriteString("unset multiplot\n")
	return b.String()
}

func maxClients(cs []cell) int {
	m := 1
	for _, c := range cs {
		m = max(m, c.Clients)
	}
	return m
}

func gpQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// drawChart writes spec's chart to dir with gnuplot, keeping its input
// files there.
func drawChart(ctx context.Context, r *report, spec chartSpec, dir string) error {
	gp, err := exec.LookPath("gnuplot")
	if err != nil {
		return fmt.Errorf("gnuplot not found (bench/run.sh installs gnuplot-nox): %w", err)
	}
	if len(spec.Targets) == 0 {
		return fmt.Errorf("%s: nothing to plot", spec.File)
	}
	data, panels := chartData(r, spec)
	base := strings.TrimSuffix(spec.File, ".png")
	dataFile := filepath.Join(dir, base+".dat")
	if err := os.WriteFile(dataFile, []byte(data), 0o644); err != nil {
		return err
	}
	script := filepath.Join(dir, base+".gp")
	if err := os.WriteFile(script, []byte(gnuplotScript(r, spec, dataFile, filepath.Join(dir, spec.File), panels)), 0o644); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, gp, script)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("gnuplot %s: %v: %s", script, err, out.String())
	}
	return nil
}
