package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/pgmoat/pgmoat/admin"
	"github.com/pgmoat/pgmoat/approvals"
	"github.com/pgmoat/pgmoat/audit"
	"github.com/pgmoat/pgmoat/config"
	"github.com/pgmoat/pgmoat/enforce"
	"github.com/pgmoat/pgmoat/metrics"
	"github.com/pgmoat/pgmoat/proxy"
	"github.com/pgmoat/pgmoat/rules"
)

// serveFlags are the command-line settings of `pgmoat serve`; the flags
// override the file's keys, on start and on every reload.
type serveFlags struct {
	config   string
	listen   string
	upstream string
	// cpuProfile and memProfile, when set, are written with pprof
	// profiles of the whole run (for bench/: see bench/README.md).
	cpuProfile string
	memProfile string
}

// load reads the configuration the flags name, applies the overrides and
// validates the result.
func (f serveFlags) load() (*config.Config, error) {
	var cfg *config.Config
	if f.config != "" {
		c, err := config.LoadFile(f.config)
		if err != nil {
			return nil, err
		}
		cfg = c
	} else {
		c := config.Default()
		cfg = &c
	}
	if f.listen == "" && f.upstream == "" {
		if f.config == "" {
			if err := cfg.Validate(); err != nil {
				return nil, err
			}
		}
		return cfg, nil
	}
	if f.listen != "" {
		cfg.Listen = f.listen
	}
	if f.upstream != "" {
		cfg.Upstream = f.upstream
	}
	if err := cfg.Validate(); err != nil {
		var ce *config.Error
		if errors.As(err, &ce) {
			ce.File = "command line"
		}
		return nil, err
	}
	return cfg, nil
}

func runServe(ctx context.Context, args []string, _, stderr io.Writer) int {
	fs := newFlagSet("serve", stderr)
	var f serveFlags
	fs.StringVar(&f.config, "config", "", "configuration `file` (YAML); defaults apply when omitted")
	fs.StringVar(&f.listen, "listen", "", "client-facing `address` (overrides listen)")
	fs.StringVar(&f.upstream, "upstream", "", "upstream PostgreSQL `URL` (overrides upstream)")
	fs.StringVar(&f.cpuProfile, "cpuprofile", "", "write a CPU profile of the run to `file`")
	fs.StringVar(&f.memProfile, "memprofile", "", "write an allocation profile to `file` at exit")
	if _, err := parseFlags(fs, args); err != nil {
		return exitUsage
	}
	if f.cpuProfile != "" {
		out, err := os.Create(f.cpuProfile)
		if err != nil {
			fmt.Fprintf(stderr, "pgmoat: %v\n", err)
			return exitUsage
		}
		pprof.StartCPUProfile(out)
		defer func() { pprof.StopCPUProfile(); out.Close() }()
	}
	if f.memProfile != "" {
		runtime.MemProfileRate = 64 << 10
		defer func() {
			if err := writeAllocsProfile(f.memProfile); err != nil {
				fmt.Fprintf(stderr, "pgmoat: --memprofile: %v\n", err)
			}
		}()
	}
	cfg, err := f.load()
	if err != nil {
		fmt.Fprintf(stderr, "pgmoat: %v\n", err)
		return exitUsage
	}
	d, err := newDaemon(cfg, f, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "pgmoat: %v\n", err)
		var ce *config.Error
		if errors.As(err, &ce) {
			return exitUsage
		}
		return 1
	}
	if err := d.run(ctx); err != nil {
		d.log.Error("pgmoat stopped", "err", err)
		return 1
	}
	return exitOK
}

// daemon is a running `pgmoat serve`: the proxy, the admin listener and
// everything they share.
type daemon struct {
	flags serveFlags
	log   *slog.Logger
	reg   *prometheus.Registry
	met   *metrics.Metrics
	audit *audit.Logger
	holds *approvals.Store
	proxy *proxy.Server
	// enforcer judges every statement; reloads swap its policy.
	enforcer *enforce.Enforcer
	admin    *admin.Server
	// instance names this pgmoat with state.dsn ("" without).
	instance string

	listening atomic.Bool

	mu  sync.Mutex // serialises reloads
	cfg *config.Config
}

func newLogger(c config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func newDaemon(cfg *config.Config, f serveFlags, stderr io.Writer) (*daemon, error) {
	d := &daemon{flags: f, cfg: cfg, log: newLogger(cfg.Log, stderr)}
	d.reg = prometheus.NewRegistry()
	d.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	d.met = metrics.New(d.reg)
	d.exportPolicy(cfg.Protection())

	var err error
	d.instance = instanceID(cfg.State)
	d.audit, err = audit.Open(cfg.Audit, audit.Options{Logger: d.log, Metrics: d.met, Instance: d.instance})
	if err != nil {
		return nil, err
	}
	var (
		backend    approvals.Backend
		sessionKey []byte
	)
	if cfg.State.Shared() {
		sb, key, err := openState(cfg, d.instance, d.log, d.met)
		if err != nil {
			d.audit.Close()
			return nil, err
		}
		backend, sessionKey = sb, key
	}
	d.holds = approvals.New(cfg.Holds, approvals.Options{
		Logger:   d.log,
		Metrics:  d.met,
		OnEvent:  d.recordApprovalEvent,
		Backend:  backend,
		Instance: d.instance,
	})
	d.enforcer = enforce.New(enforce.Options{
		Engine: rules.NewEngine(cfg.CompiledPolicy, rules.EngineOptions{Limits: cfg.Limits.Rules(), Verify: true}),
		Holds:  d.holds,
		Audit:  d.audit,
		Logger: d.log,
		Met:    d.met,
		Holds0: cfg.Holds,
	})
	d.proxy, err = proxy.New(cfg, proxy.Options{Logger: d.log, Metrics: d.met, Interceptor: d.enforcer})
	if err != nil {
		return nil, err
	}
	if cfg.Admin.Listen != "" {
		d.admin, err = admin.New(admin.Options{
			Config:     cfg.Admin,
			Store:      d.holds,
			Gatherer:   d.reg,
			Ready:      d.ready,
			Reload:     d.reload,
			Logger:     d.log,
			SessionKey: sessionKey,
			AuditPath:  cfg.Audit.Path,
			InForce:    d.inForce,
		})
		if err != nil {
			return nil, &config.Error{File: cfg.File, Err: err}
		}
	}
	return d, nil
}

// recordApprovalEvent writes a holds-store event to the audit log,
// durably: the store refuses to release a statement whose approval could
// not be recorded.
func (d *daemon) recordApprovalEvent(ev approvals.Event) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return d.audit.Record(ctx, auditEvent(ev))
}

func (d *daemon) run(ctx context.Context) error {
	ln, err := net.Listen("tcp", d.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP, syscall.SIGUSR1)
	defer signal.Stop(hup)

	var adminLn net.Listener
	if d.admin != nil {
		if adminLn, err = net.Listen("tcp", d.cfg.Admin.Listen); err != nil {
			ln.Close()
			return fmt.Errorf("admin listen: %w", err)
		}
		go func() {
			var err error
			if t := d.cfg.Admin.TLS; t.Enabled() {
				err = d.admin.ServeTLS(adminLn, t.Cert, t.Key)
			} else {
				err = d.admin.Serve(adminLn)
			}
			if err != nil {
				d.log.Error("admin listener stopped", "err", err)
			}
		}()
	}
	d.listening.Store(true)
	// The audit log says which policy is in force from the start, before
	// any session, not only after the first reload: a restart changes the
	// policy as much as a reload does.
	p := d.cfg.Protection()
	d.audit.RecordAsync(audit.Event{Kind: audit.ConfigLoaded, Reason: p.Summary(), PolicyHash: p.Hash()})
	served := make(chan error, 1)
	go func() { served <- d.proxy.Serve(ln) }()
	d.logStart()

	for {
		select {
		case sig := <-hup:
			if err := d.audit.Reopen(); err != nil {
				d.log.Error("audit log reopen failed", "err", err)
			}
			if sig == syscall.SIGHUP {
				_ = d.reload()
			}
			continue
		case err := <-served:
			d.close()
			return err
		case <-ctx.Done():
		}
		break
	}
	d.log.Info("shutting down: no new connections; draining sessions", "drain_timeout", d.cfg.Limits.DrainTimeout.String())
	drainCtx, cancel := context.WithTimeout(context.Background(), d.cfg.Limits.DrainTimeout.Std())
	defer cancel()
	if err := d.proxy.Shutdown(drainCtx); err != nil {
		d.log.Warn("drain timeout expired", "err", err)
	}
	<-served
	d.close()
	d.log.Info("pgmoat stopped")
	return nil
}

// ready is /readyz: pgmoat is listening and the upstream accepts
// connections.
func (d *daemon) ready(ctx context.Context) error {
	if !d.listening.Load() {
		return errors.New("not listening yet")
	}
	return d.proxy.CheckUpstream(ctx)
}

func (d *daemon) close() {
	d.listening.Store(false)
	if d.admin != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		d.admin.Shutdown(ctx)
		cancel()
	}
	d.holds.Close()
	if err := d.audit.Close(); err != nil {
		d.log.Error("audit log close failed", "err", err)
	}
}

func (d *daemon) logStart() {
	cfg := d.cfg
	admin := cfg.Admin.Listen
	if admin == "" {
		admin = "disabled"
	}
	d.log.Info("pgmoat started",
		"version", version,
		"listen", cfg.Listen,
		"admin", admin,
		"upstream", cfg.UpstreamURL.Addr(),
		"upstream_sslmode", cfg.UpstreamURL.SSLMode,
		"client_tls", cfg.TLS.Enabled(),
		"policy", cfg.Protection().Summary(),
		"policy_hash", cfg.Protection().Hash(),
		"audit", cfg.Audit.Path,
		"state", stateSummary(cfg, d.instance),
	)
}

// reload re-reads the configuration file. A valid file takes effect for
// the next statement of every session; an invalid one is rejected, logged,
// audited and counted, and the old configuration stays in force. So is a
// file that lacks a section the running one states (config.CheckReload:
// it looks truncated). A reload that changes protection is logged and
// audited with its diff; one that lowers protection takes effect only
// once that audit line is written. Listener addresses, TLS files and the
// audit path need a restart.
func (d *daemon) reload() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	cfg, err := d.flags.load()
	if err != nil {
		return d.reloadFailed(err)
	}
	old := d.cfg
	next := cfg.Protection()
	changes, err := config.CheckReload(old.Protection(), next)
	if err != nil {
		return d.reloadFailed(&config.Error{File: cfg.File, Err: err})
	}
	for key, changed := range map[string]bool{
		"listen":       cfg.Listen != old.Listen,
		"admin.listen": cfg.Admin.Listen != old.Admin.Listen,
		"admin.tls":    cfg.Admin.TLS != old.Admin.TLS,
		"tls":          cfg.TLS != old.TLS,
		"state":        cfg.State != old.State,
		// The event loops are started with the proxy.
		"limits.event_loops": cfg.Limits.EventLoops != old.Limits.EventLoops,
	} {
		if changed {
			d.log.Warn("configuration key changed but takes effect only after a restart", "key", key)
		}
	}
	if d.admin != nil {
		// Reads the tokens' secrets: the last check that can fail.
		if err := d.admin.SetConfig(cfg.Admin); err != nil {
			return d.reloadFailed(&config.Error{File: cfg.File, Err: err})
		}
	}
	if len(changes) > 0 {
		if err := d.recordChanges(next, changes); err != nil {
			if d.admin != nil {
				_ = d.admin.SetConfig(old.Admin) // read a moment ago; put the old tokens back
			}
			return d.reloadFailed(fmt.Errorf("the reload lowers protection and the audit log cannot record it, so it is refused: %w", err))
		}
	}
	d.holds.SetConfig(cfg.Holds)
	d.enforcer.SetConfig(cfg)
	if err := d.audit.Apply(cfg.Audit); err != nil {
		d.log.Warn("audit setting changed but takes effect only after a restart", "err", err)
	}
	d.cfg = cfg
	d.exportPolicy(next)
	d.met.ConfigReloads.WithLabelValues("success").Inc()
	d.log.Info("configuration reloaded", "policy", next.Summary(), "policy_hash", next.Hash())
	d.audit.RecordAsync(audit.Event{Kind: audit.ConfigLoaded, Reason: next.Summary(), PolicyHash: next.Hash()})
	return nil
}

// recordChanges logs and audits how a reload changes protection. When it
// lowers protection the config_changed event is written durably (and the
// reload counted in pgmoat_config_protection_lowered_total): an error
// means it is not in the log, and the reload must not take effect.
func (d *daemon) recordChanges(next config.Protection, changes []config.Change) error {
	lines := make([]string, len(changes))
	for i, c := range changes {
		lines[i] = c.String()
	}
	ev := audit.Event{Kind: audit.ConfigChanged, PolicyHash: next.Hash(), Changes: lines}
	lowers := config.Lowers(changes)
	if lowers {
		ev.Reason = "the reload lowers protection"
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := d.audit.Record(ctx, ev); err != nil {
			return err
		}
		d.met.ProtectionLowered.Inc()
	} else {
		ev.Reason = "the reload changes protection"
		d.audit.RecordAsync(ev)
	}
	for _, c := range changes {
		if c.Lowers {
			d.log.Warn("reload lowers protection", "change", c.Text)
		} else {
			d.log.Info("reload changes protection", "change", c.Text)
		}
	}
	return nil
}

// exportPolicy puts what p protects on /metrics.
func (d *daemon) exportPolicy(p config.Protection) {
	d.met.PolicyInfo.Set(p.Hash(), 1)
	d.met.PolicyPatterns.Set(float64(len(p.Policy.Protect)))
	for action, n := range p.RulesByAction() {
		d.met.PolicyRules.WithLabelValues(action).Set(float64(n))
	}
	for role, n := range p.TokensByRole() {
		d.met.AdminTokens.WithLabelValues(role).Set(float64(n))
	}
}

// inForce returns the configuration in force (GET /api/v1/policy).
func (d *daemon) inForce() *config.Config {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cfg
}

// reloadFailed logs, audits and counts a rejected reload.
func (d *daemon) reloadFailed(err error) error {
	d.met.ConfigReloads.WithLabelValues("failure").Inc()
	d.log.Error("configuration reload rejected; the previous configuration stays in force", "err", err)
	d.audit.RecordAsync(audit.Event{Kind: audit.ConfigReloadFailed, Error: err.Error()})
	return err
}

// writeAllocsProfile writes the allocations profile to path, after a
// garbage collection, as runtime/pprof advises for up-to-date statistics:
// without one, a profile of a TPC-B run through pgmoat held 35,814
// objects and none of the 2 per transaction that go_memstats_mallocs_total
// counted; with it, 77,849, and their caller (bench/README.md).
func writeAllocsProfile(path string) error {
	out, err := os.Create(path)
	if err != nil {
		return err
	}
	runtime.GC()
	if err := pprof.Lookup("allocs").WriteTo(out, 0); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
