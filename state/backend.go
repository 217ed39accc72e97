package state

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgmoat/pgmoat/approvals"
	"github.com/pgmoat/pgmoat/metrics"
)

// Defaults for Options.
const (
	DefaultSchema       = "pgmoat"
	DefaultLease        = 15 * time.Second
	DefaultPollInterval = time.Second
	DefaultTimeout      = 5 * time.Second
)

// Options configure a Backend.
type Options struct {
	// DSN is the control database (state.dsn), a libpq URL or key=value
	// string; a password may also come from PGPASSWORD or a passfile.
	DSN string
	// Schema holds pgmoat's tables (state.schema, default "pgmoat").
	Schema string
	// Instance names this pgmoat (state.instance_id); required.
	Instance string
	// Lease, PollInterval and Timeout: state.lease, state.poll_interval,
	// state.timeout.
	Lease        time.Duration
	PollInterval time.Duration
	Timeout      time.Duration
	// KeepEndedFor is how long ended holds and pre-approvals stay before
	// they are deleted (default approvals.DefaultKeepEndedFor).
	KeepEndedFor time.Duration
	// Version is this pgmoat's version, shown in the instances table.
	Version string
	Logger  *slog.Logger
	Metrics *metrics.Metrics
}

// Backend is an approvals.Backend in a control database. Open it, hand it
// to approvals.New (which calls Watch and, at the end, Close).
type Backend struct {
	o       Options
	pool    *pgxpool.Pool
	q       string // the schema, quoted
	channel string
	token   string // this process's incarnation of o.Instance
	log     *slog.Logger
	m       *metrics.Metrics

	watch     func(approvals.Change)
	watchOnce sync.Once
	up        atomic.Bool

	leaseMu    sync.Mutex
	leaseUntil time.Time // local (monotonic) end of the lease last renewed
	leaseLost  bool      // told the Store, not yet renewed since

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

var _ approvals.Backend = (*Backend)(nil)

// Open connects to the control database, creates or migrates its schema,
// and takes this instance's lease (waiting for the lease of an earlier
// process with the same instance id to run out). ctx bounds the whole.
func Open(ctx context.Context, o Options) (*Backend, error) {
	if o.Instance == "" {
		return nil, errors.New("state: an instance id is required")
	}
	if o.Schema == "" {
		o.Schema = DefaultSchema
	}
	if o.Lease <= 0 {
		o.Lease = DefaultLease
	}
	if o.PollInterval <= 0 {
		o.PollInterval = DefaultPollInterval
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.KeepEndedFor <= 0 {
		o.KeepEndedFor = approvals.DefaultKeepEndedFor
	}
	b := &Backend{
		o:       o,
		q:       pgx.Identifier{o.Schema}.Sanitize(),
		channel: "pgmoat_" + o.Schema,
		token:   randomHex(8),
		log:     o.Logger,
		m:       o.Metrics,
		watch:   func(approvals.Change) {},
	}
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	b.log = b.log.With("instance", o.Instance)
	if b.m == nil {
		b.m = metrics.New(nil)
	}
	cfg, err := pgxpool.ParseConfig(o.DSN)
	if err != nil {
		return nil, fmt.Errorf("state.dsn: %w", err)
	}
	cfg.ConnConfig.ConnectTimeout = o.Timeout
	if cfg.ConnConfig.RuntimeParams == nil {
		cfg.ConnConfig.RuntimeParams = map[string]string{}
	}
	cfg.ConnConfig.RuntimeParams["application_name"] = "pgmoat " + o.Instance
	// A lock held by a stuck transaction must not hold up a decision for
	// longer than an operation may take.
	cfg.ConnConfig.RuntimeParams["lock_timeout"] = fmt.Sprint(o.Timeout.Milliseconds())
	cfg.MaxConns = 8
	b.pool, err = pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		return nil, fmt.Errorf("state.dsn: %w", err)
	}
	if err := b.start(ctx); err != nil {
		b.pool.Close()
		b.m.StateUp.Set(0)
		return nil, err
	}
	b.up.Store(true)
	b.m.StateUp.Set(1)
	b.ctx, b.cancel = context.WithCancel(context.Background())
	return b, nil
}

func (b *Backend) start(ctx context.Context) error {
	conn, err := b.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("connecting to the control database: %w", err)
	}
	from, err := migrate(ctx, conn.Conn(), b.o.Schema)
	conn.Release()
	if err != nil {
		return err
	}
	if from < SchemaVersion {
		b.log.Info("control database schema migrated", "schema", b.o.Schema, "from", from, "to", SchemaVersion)
	}
	return b.claim(ctx)
}

// Instance returns the instance id.
func (b *Backend) Instance() string { return b.o.Instance }

// Watch implements approvals.Backend; it starts the lease keeper and the
// listener.
func (b *Backend) Watch(f func(approvals.Change)) {
	b.watchOnce.Do(func() {
		b.watch = f
		b.wg.Add(2)
		go b.keepLease()
		go b.listen()
	})
}

// Close stops the background work and gives up the lease, so that a
// restart with the same instance id need not wait for it. The Store has
// withdrawn this instance's holds before.
func (b *Backend) Close() error {
	if b.cancel != nil {
		b.cancel()
	}
	b.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), b.o.Timeout)
	defer cancel()
	_, err := b.pool.Exec(ctx, "DELETE FROM "+b.q+".instances WHERE id = $1 AND token = $2", b.o.Instance, b.token)
	b.pool.Close()
	return err
}

// SessionKey returns the secret named name shared by every instance of the
// control database, creating it (32 random bytes, hex) the first time: the
// console's session cookies are signed with it, so a session works on any
// instance behind a load balancer.
func (b *Backend) SessionKey(ctx context.Context, name string) (string, error) {
	var v string
	err := b.pool.QueryRow(ctx, `
INSERT INTO `+b.q+`.settings (name, value) VALUES ($1, $2)
ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name
RETURNING value`, name, randomHex(32)).Scan(&v)
	return v, err
}

// op returns a context for one operation on the control database.
func (b *Backend) op() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), b.o.Timeout)
}

// fail counts and wraps an error reaching the control database.
func (b *Backend) fail(op, what string, err error) error {
	b.m.StateErrors.WithLabelValues(op).Inc()
	b.setUp(false)
	return &approvals.UnavailableError{Op: what, Err: err}
}

// ok notes that an operation succeeded.
func (b *Backend) ok() { b.setUp(true) }

func (b *Backend) setUp(up bool) {
	if b.up.Swap(up) != up {
		if up {
			b.log.Info("control database reachable again")
		} else {
			b.log.Error("control database unreachable: new holds, approvals and pre-approvals are refused until it is back")
		}
	}
	v := 0.0
	if up && !b.lapsed() {
		v = 1
	}
	b.m.StateUp.Set(v)
}

func randomHex(n int) string {
	buf := make([]byte, n)
	_, _ = rand.Read(buf)
	return hex.EncodeToString(buf)
}

func hostname() string {
	h, _ := os.Hostname()
	return h
}
