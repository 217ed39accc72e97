package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"go.yaml.in/yaml/v3"

	"github.com/pgmoat/pgmoat/rules"
)

// Config is pgmoat's whole configuration. The zero value is not useful:
// start from Default (or Load, which does) so that every key has a value.
type Config struct {
	// Listen is the client-facing address, host:port.
	Listen string `yaml:"listen"`
	// Upstream is a libpq-style URL; only host, port, sslmode and
	// sslrootcert are used. User and database come from each client.
	Upstream string             `yaml:"upstream"`
	TLS      TLS                `yaml:"tls"`
	Limits   Limits             `yaml:"limits"`
	Log      Log                `yaml:"log"`
	Admin    Admin              `yaml:"admin"`
	Policy   rules.PolicyConfig `yaml:"policy"`
	Holds    Holds              `yaml:"holds"`
	Audit    Audit              `yaml:"audit"`
	State    State              `yaml:"state"`

	// UpstreamURL is Upstream, parsed and validated by Load.
	UpstreamURL Upstream `yaml:"-"`
	// CompiledPolicy is Policy, validated and compiled by Load.
	CompiledPolicy *rules.Policy `yaml:"-"`
	// File is the file the configuration was read from ("" for defaults).
	File string `yaml:"-"`
	// stated holds the dotted keys (two levels deep: "policy",
	// "policy.protect") to which the file gives a value other than null.
	// The reload rule (CheckReload) compares them.
	stated map[string]bool
}

// TLS configures client-facing TLS termination. Both or neither are set.
type TLS struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// Enabled reports whether client-facing TLS is configured.
func (t TLS) Enabled() bool { return t.Cert != "" }

// Limits bounds what one client, or all of them, may cost.
type Limits struct {
	// MaxConnections is the maximum number of concurrent client sessions;
	// further clients get SQLSTATE 53300 (too_many_connections).
	MaxConnections int `yaml:"max_connections"`
	// StartupTimeout bounds the time from TCP accept to the end of
	// authentication.
	StartupTimeout Duration `yaml:"startup_timeout"`
	// ConnectTimeout bounds the dial (and TLS handshake) to the upstream.
	ConnectTimeout Duration `yaml:"connect_timeout"`
	// MaxMessageSize is the largest protocol message accepted from a client.
	MaxMessageSize ByteSize `yaml:"max_message_size"`
	// MessageMemory bounds the memory all sessions together spend on
	// client messages larger than a session's 16 KiB read buffer while
	// pgmoat holds them (reads, judges, forwards or holds them). A session
	// whose message would pass it waits; after 30 seconds it ends with
	// 53200. At least MaxMessageSize.
	MessageMemory ByteSize `yaml:"message_memory"`
	// DrainTimeout is how long SIGTERM waits for sessions to finish.
	DrainTimeout Duration `yaml:"drain_timeout"`
	// EventLoops is how many threads relay plain-socket sessions in epoll
	// event loops (Linux): EventLoopsAuto, or a number; 0 turns the event
	// loop off, and every session has goroutines of its own.
	EventLoops EventLoops `yaml:"event_loops"`
	// AnalysisStatements and AnalysisTime bound the analysis of one client
	// message: past either, the message is refused unanalysed (as
	// unparseable), so that no message costs more than that much CPU.
	AnalysisStatements int      `yaml:"analysis_statements"`
	AnalysisTime       Duration `yaml:"analysis_time"`
}

// Rules returns the analysis limits for rules.Engine.
func (l Limits) Rules() rules.Limits {
	return rules.Limits{MaxStatements: l.AnalysisStatements, MaxTime: l.AnalysisTime.Std()}
}

// Log configures pgmoat's operational log (not the audit log).
type Log struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // text, json
}

// Admin configures the admin HTTP listener.
type Admin struct {
	// Listen is host:port; empty disables the admin listener.
	Listen string  `yaml:"listen"`
	Tokens []Token `yaml:"tokens"`
	// TLS serves the admin listener (API and console) over HTTPS; both
	// or neither are set.
	TLS TLS `yaml:"tls"`
	// SessionTTL is how long a console sign-in lasts.
	SessionTTL Duration `yaml:"session_ttl"`
}

// State configures where holds and pre-approvals live. Without DSN they
// live in this process's memory; with it, in a control database that
// several pgmoat instances share.
type State struct {
	// DSN is the control database, a libpq URL or key=value string (a
	// password may come from PGPASSWORD or a passfile instead).
	DSN string `yaml:"dsn"`
	// Schema holds pgmoat's tables in it.
	Schema string `yaml:"schema"`
	// InstanceID names this instance in holds and audit events; empty
	// means the host name.
	InstanceID string `yaml:"instance_id"`
	// Lease: an instance that has not renewed its lease for this long is
	// taken for dead, and its holds are withdrawn.
	Lease Duration `yaml:"lease"`
	// PollInterval: how often holds are read again while notifications
	// from the control database are lost.
	PollInterval Duration `yaml:"poll_interval"`
	// Timeout bounds each operation on the control database.
	Timeout Duration `yaml:"timeout"`
}

// Shared reports whether a control database is configured.
func (s State) Shared() bool { return s.DSN != "" }

// Token is one bearer token accepted by the admin API. The secret itself is
// never in the file: it is read from an environment variable or a file.
type Token struct {
	Name      string `yaml:"name"`
	Role      string `yaml:"role"` // approver or viewer
	TokenEnv  string `yaml:"token_env"`
	TokenFile string `yaml:"token_file"`
}

// Token roles.
const (
	RoleApprover = "approver"
	RoleViewer   = "viewer"
)

// Holds configures statements held for human approval.
type Holds struct {
	// Timeout ends a pending hold with a denial.
	Timeout Duration `yaml:"timeout"`
	// ApprovalsRequired is the number of distinct approvers needed.
	ApprovalsRequired int `yaml:"approvals_required"`
	// InTransaction says what happens to a statement that would be held
	// while its session is inside a transaction block (and may hold locks):
	// "block" refuses it at once with a hint to pre-approve; "hold" holds
	// it, but for at most InTransactionTimeout.
	InTransaction        string   `yaml:"in_transaction"`
	InTransactionTimeout Duration `yaml:"in_transaction_timeout"`
	// Webhook, when set, receives a JSON POST for every new hold.
	Webhook string `yaml:"webhook"`
	// PublicURL is the admin API's base URL as approvers reach it; it is
	// used to build approve/deny links. Defaults to http://<admin.listen>.
	PublicURL string `yaml:"public_url"`
}

// Audit configures the audit log.
type Audit struct {
	// Path is the JSON Lines file, or "-" for stdout, or "" for none.
	Path string `yaml:"path"`
	// Statements is "decisions" (default: only non-allow decisions) or
	// "all" (every statement, pgAudit-style).
	Statements string `yaml:"statements"`
	// Redact replaces literals in recorded statements with placeholders.
	Redact bool `yaml:"redact"`
	// MaxStatementBytes bounds the statement text of one event; longer
	// text is cut and its length and SHA-256 recorded, so that a client
	// cannot fill the audit disk with huge statements.
	MaxStatementBytes ByteSize `yaml:"max_statement_bytes"`
	// QueueSize bounds the events waiting for the writer.
	QueueSize int `yaml:"queue_size"`
	// FlushInterval is the longest an allowed-statement event waits in the
	// buffer; decisions that must be durable are flushed before returning.
	FlushInterval Duration `yaml:"flush_interval"`
}

// Upstream is the parsed upstream URL.
type Upstream struct {
	Host        string
	Port        int
	SSLMode     string // disable, allow, prefer, require, verify-ca, verify-full
	SSLRootCert string
}

// Addr returns host:port.
func (u Upstream) Addr() string { return net.JoinHostPort(u.Host, strconv.Itoa(u.Port)) }

// Default returns the configuration used for every key the file leaves out.
func Default() Config {
	return Config{
		Listen:   "127.0.0.1:6432",
		Upstream: "postgres://127.0.0.1:5432?sslmode=prefer",
		Limits: Limits{
			MaxConnections: 1000,
			StartupTimeout: Duration(10 * time.Second),
			ConnectTimeout: Duration(5 * time.Second),
			MaxMessageSize: 64 << 20,
			MessageMemory:  256 << 20,
			DrainTimeout:   Duration(30 * time.Second),
			EventLoops:     EventLoopsAuto,
			// rules.DefaultLimits: about two seconds of CPU.
			AnalysisStatements: rules.DefaultLimits.MaxStatements,
			AnalysisTime:       Duration(rules.DefaultLimits.MaxTime),
		},
		Log:   Log{Level: "info", Format: "text"},
		Admin: Admin{Listen: "127.0.0.1:6433", SessionTTL: Duration(8 * time.Hour)},
		Holds: Holds{
			Timeout:              Duration(15 * time.Minute),
			ApprovalsRequired:    1,
			InTransaction:        "block",
			InTransactionTimeout: Duration(30 * time.Second),
		},
		State: State{
			Schema:       "pgmoat",
			Lease:        Duration(15 * time.Second),
			PollInterval: Duration(time.Second),
			Timeout:      Duration(5 * time.Second),
		},
		Audit: Audit{
			Path:              "-",
			Statements:        "decisions",
			MaxStatementBytes: 16 << 10,
			QueueSize:         4096,
			FlushInterval:     Duration(200 * time.Millisecond),
		},
	}
}

// Error is a configuration error: the file and the key it concerns.
type Error struct {
	File string // "" when the configuration did not come from a file
	Key  string // dotted path, e.g. "limits.startup_timeout"; "" for the whole file
	Err  error
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		b.WriteString(": ")
	}
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Err.Error())
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// LoadFile reads and validates a configuration file. Keys the file omits
// take their defaults; unknown keys and bad values are errors naming the
// file and the key.
func LoadFile(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &Error{File: path, Err: err}
	}
	return Load(path, data)
}

// ErrEmpty is the error for a configuration file with nothing in it. Such
// a file is far more often one cut short (an editor or a tool writing it in
// place, a full disk) than one meant to set every default, and a file of
// defaults protects nothing; `{}` says so explicitly.
var ErrEmpty = errors.New("the file is empty (probably truncated or still being written); write {} to run with every default")

// Load decodes and validates configuration bytes; name is used in errors.
// Bytes holding no YAML value (nothing, comments, null) are ErrEmpty.
func Load(name string, data []byte) (*Config, error) {
	cfg := Default()
	cfg.File = name
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, &Error{File: name, Err: err}
	}
	if isEmptyDocument(&doc) {
		return nil, &Error{File: name, Err: ErrEmpty}
	}
	if err := checkKeys(&doc, reflect.TypeOf(cfg), ""); err != nil {
		err.(*Error).File = name
		return nil, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return nil, &Error{File: name, Key: yamlErrorKey(err), Err: cleanYAMLError(err)}
	}
	cfg.stated = statedKeys(&doc)
	if err := cfg.Validate(); err != nil {
		var ce *Error
		if errors.As(err, &ce) {
			ce.File = name
			return nil, ce
		}
		return nil, &Error{File: name, Err: err}
	}
	return &cfg, nil
}

// Validate checks every section and fills in derived fields. Errors are
// *Error values naming the key.
func (c *Config) Validate() error {
	if err := validateHostPort(c.Listen); err != nil {
		return &Error{Key: "listen", Err: err}
	}
	up, err := ParseUpstream(c.Upstream)
	if err != nil {
		return &Error{Key: "upstream", Err: err}
	}
	c.UpstreamURL = up
	if (c.TLS.Cert == "") != (c.TLS.Key == "") {
		return &Error{Key: "tls", Err: errors.New("cert and key must be set together")}
	}
	if c.TLS.Enabled() {
		for key, p := range map[string]string{"tls.cert": c.TLS.Cert, "tls.key": c.TLS.Key} {
			if _, err := os.Stat(p); err != nil {
				return &Error{Key: key, Err: err}
			}
		}
	}
	if c.Limits.MaxConnections < 1 {
		return &Error{Key: "limits.max_connections", Err: fmt.Errorf("must be at least 1, got %d", c.Limits.MaxConnections)}
	}
	if c.Limits.AnalysisStatements < 1 {
		return &Error{Key: "limits.analysis_statements", Err: fmt.Errorf("must be at least 1, got %d", c.Limits.AnalysisStatements)}
	}
	for key, d := range map[string]Duration{
		"limits.startup_timeout": c.Limits.StartupTimeout,
		"limits.connect_timeout": c.Limits.ConnectTimeout,
		"limits.drain_timeout":   c.Limits.DrainTimeout,
		"limits.analysis_time":   c.Limits.AnalysisTime,
	} {
		if d <= 0 {
			return &Error{Key: key, Err: fmt.Errorf("must be positive, got %s", d)}
		}
	}
	if c.Limits.MaxMessageSize < 1024 {
		return &Error{Key: "limits.max_message_size", Err: fmt.Errorf("must be at least 1KiB, got %d bytes", c.Limits.MaxMessageSize)}
	}
	if c.Limits.MessageMemory < c.Limits.MaxMessageSize {
		return &Error{Key: "limits.message_memory", Err: fmt.Errorf("must be at least limits.max_message_size (%d bytes), got %d bytes: a message of the largest size must fit", c.Limits.MaxMessageSize, c.Limits.MessageMemory)}
	}
	if n := c.Limits.EventLoops; n < EventLoopsAuto || n > maxEventLoops {
		return &Error{Key: "limits.event_loops", Err: fmt.Errorf("must be auto or 0 to %d, got %d", maxEventLoops, n)}
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return &Error{Key: "log.level", Err: fmt.Errorf("unknown level %q (want debug, info, warn or error)", c.Log.Level)}
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		return &Error{Key: "log.format", Err: fmt.Errorf("unknown format %q (want text or json)", c.Log.Format)}
	}
	if c.Admin.Listen != "" {
		if err := validateHostPort(c.Admin.Listen); err != nil {
			return &Error{Key: "admin.listen", Err: err}
		}
	}
	if (c.Admin.TLS.Cert == "") != (c.Admin.TLS.Key == "") {
		return &Error{Key: "admin.tls", Err: errors.New("cert and key must be set together")}
	}
	if c.Admin.TLS.Enabled() {
		for key, p := range map[string]string{"admin.tls.cert": c.Admin.TLS.Cert, "admin.tls.key": c.Admin.TLS.Key} {
			if _, err := os.Stat(p); err != nil {
				return &Error{Key: key, Err: err}
			}
		}
	}
	if c.Admin.SessionTTL < Duration(time.Minute) {
		return &Error{Key: "admin.session_ttl", Err: fmt.Errorf("must be at least 1m, got %s", c.Admin.SessionTTL)}
	}
	if err := c.State.validate(); err != nil {
		return err
	}
	seen := map[string]bool{}
	for i, t := range c.Admin.Tokens {
		key := fmt.Sprintf("admin.tokens[%d]", i)
		switch {
		case t.Name == "":
			return &Error{Key: key + ".name", Err: errors.New("is required")}
		case seen[t.Name]:
			return &Error{Key: key + ".name", Err: fmt.Errorf("duplicate token name %q", t.Name)}
		case t.Role != RoleApprover && t.Role != RoleViewer:
			return &Error{Key: key + ".role", Err: fmt.Errorf("unknown role %q (want approver or viewer)", t.Role)}
		case (t.TokenEnv == "") == (t.TokenFile == ""):
			return &Error{Key: key, Err: errors.New("exactly one of token_env and token_file is required")}
		}
		seen[t.Name] = true
	}
	if c.Holds.Timeout <= 0 {
		return &Error{Key: "holds.timeout", Err: fmt.Errorf("must be positive, got %s", c.Holds.Timeout)}
	}
	if c.Holds.ApprovalsRequired < 1 {
		return &Error{Key: "holds.approvals_required", Err: fmt.Errorf("must be at least 1, got %d", c.Holds.ApprovalsRequired)}
	}
	switch c.Holds.InTransaction {
	case "block", "hold":
	default:
		return &Error{Key: "holds.in_transaction", Err: fmt.Errorf("unknown value %q (want block or hold)", c.Holds.InTransaction)}
	}
	if c.Holds.InTransactionTimeout <= 0 {
		return &Error{Key: "holds.in_transaction_timeout", Err: fmt.Errorf("must be positive, got %s", c.Holds.InTransactionTimeout)}
	}
	if c.Holds.PublicURL == "" && c.Admin.Listen != "" {
		scheme := "http://"
		if c.Admin.TLS.Enabled() {
			scheme = "https://"
		}
		c.Holds.PublicURL = scheme + c.Admin.Listen
	}
	if c.Holds.PublicURL != "" {
		if u, err := url.Parse(c.Holds.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return &Error{Key: "holds.public_url", Err: fmt.Errorf("not an http(s) URL: %q", c.Holds.PublicURL)}
		}
	}
	if c.Holds.Webhook != "" {
		if u, err := url.Parse(c.Holds.Webhook); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return &Error{Key: "holds.webhook", Err: fmt.Errorf("not an http(s) URL: %q", c.Holds.Webhook)}
		}
	}
	pol, err := rules.Compile(c.Policy)
	if err != nil {
		var pe *rules.PolicyError
		if errors.As(err, &pe) {
			return &Error{Key: pe.Key, Err: pe.Err}
		}
		return &Error{Key: "policy", Err: err}
	}
	c.CompiledPolicy = pol
	switch c.Audit.Statements {
	case "decisions", "all":
	default:
		return &Error{Key: "audit.statements", Err: fmt.Errorf("unknown value %q (want decisions or all)", c.Audit.Statements)}
	}
	if c.Audit.MaxStatementBytes < 256 {
		return &Error{Key: "audit.max_statement_bytes", Err: fmt.Errorf("must be at least 256B, got %d bytes", c.Audit.MaxStatementBytes)}
	}
	if c.Audit.QueueSize < 1 {
		return &Error{Key: "audit.queue_size", Err: fmt.Errorf("must be at least 1, got %d", c.Audit.QueueSize)}
	}
	if c.Audit.FlushInterval <= 0 {
		return &Error{Key: "audit.flush_interval", Err: fmt.Errorf("must be positive, got %s", c.Audit.FlushInterval)}
	}
	return nil
}

func (s *State) validate() error {
	if s.DSN != "" {
		if _, err := pgconn.ParseConfig(s.DSN); err != nil {
			return &Error{Key: "state.dsn", Err: err}
		}
	}
	if s.Schema == "" || len(s.Schema) > 48 || strings.Trim(strings.ToLower(s.Schema), "abcdefghijklmnopqrstuvwxyz0123456789_") != "" ||
		(s.Schema[0] >= '0' && s.Schema[0] <= '9') {
		return &Error{Key: "state.schema", Err: fmt.Errorf("want a name of letters, digits and _ (at most 48), got %q", s.Schema)}
	}
	if s.Lease < Duration(time.Second) {
		return &Error{Key: "state.lease", Err: fmt.Errorf("must be at least 1s, got %s", s.Lease)}
	}
	for key, d := range map[string]Duration{"state.poll_interval": s.PollInterval, "state.timeout": s.Timeout} {
		if d <= 0 {
			return &Error{Key: key, Err: fmt.Errorf("must be positive, got %s", d)}
		}
	}
	if len(s.InstanceID) > 100 {
		return &Error{Key: "state.instance_id", Err: errors.New("at most 100 characters")}
	}
	return nil
}

// ParseUpstream parses a libpq-style URL (postgres:// or postgresql://).
// User, password and database in it are rejected: they come from each
// client, and a password in a config file is a leak waiting to happen.
func ParseUpstream(s string) (Upstream, error) {
	u, err := url.Parse(s)
	if err != nil {
		return Upstream{}, fmt.Errorf("invalid URL: %w", err)
	}
	if u.Scheme != "postgres" && u.Scheme != "postgresql" {
		return Upstream{}, fmt.Errorf("scheme must be postgres:// or postgresql://, got %q", u.Scheme)
	}
	if u.User != nil {
		return Upstream{}, errors.New("must not contain a user or password: each client authenticates as itself")
	}
	if p := strings.Trim(u.Path, "/"); p != "" {
		return Upstream{}, fmt.Errorf("must not name a database (%q): each client chooses its own", p)
	}
	up := Upstream{Host: u.Hostname(), Port: 5432, SSLMode: "prefer"}
	if up.Host == "" {
		up.Host = "127.0.0.1"
	}
	if ps := u.Port(); ps != "" {
		p, err := strconv.Atoi(ps)
		if err != nil || p < 1 || p > 65535 {
			return Upstream{}, fmt.Errorf("invalid port %q", ps)
		}
		up.Port = p
	}
	for k, v := range u.Query() {
		switch k {
		case "sslmode":
			switch v[0] {
			case "disable", "allow", "prefer", "require", "verify-ca", "verify-full":
				up.SSLMode = v[0]
			default:
				return Upstream{}, fmt.Errorf("unknown sslmode %q", v[0])
			}
		case "sslrootcert":
			up.SSLRootCert = v[0]
		default:
			return Upstream{}, fmt.Errorf("unsupported parameter %q (supported: sslmode, sslrootcert)", k)
		}
	}
	if (up.SSLMode == "verify-ca" || up.SSLMode == "verify-full") && up.SSLRootCert != "" {
		if _, err := os.Stat(up.SSLRootCert); err != nil {
			return Upstream{}, fmt.Errorf("sslrootcert: %w", err)
		}
	}
	return up, nil
}

func validateHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("want host:port, got %q", s)
	}
	_ = host
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("invalid port in %q", s)
	}
	return nil
}
