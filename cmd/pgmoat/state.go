package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/pgmoat/pgmoat/config"
	"github.com/pgmoat/pgmoat/metrics"
	"github.com/pgmoat/pgmoat/state"
)

// instanceID is state.instance_id, or the host name, with state.dsn; ""
// without (one instance, nothing to tell apart).
func instanceID(c config.State) string {
	if !c.Shared() {
		return ""
	}
	if c.InstanceID != "" {
		return c.InstanceID
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return fmt.Sprintf("pgmoat-%d", os.Getpid())
}

// openState connects to the control database and returns it with the
// console's session key, which every instance shares.
func openState(cfg *config.Config, instance string, log *slog.Logger, m *metrics.Metrics) (*state.Backend, []byte, error) {
	s := cfg.State
	// Long enough to wait out the lease of a crashed process with this id.
	ctx, cancel := context.WithTimeout(context.Background(), 2*s.Lease.Std()+s.Timeout.Std()+10*time.Second)
	defer cancel()
	b, err := state.Open(ctx, state.Options{
		DSN:          s.DSN,
		Schema:       s.Schema,
		Instance:     instance,
		Lease:        s.Lease.Std(),
		PollInterval: s.PollInterval.Std(),
		Timeout:      s.Timeout.Std(),
		Version:      version,
		Logger:       log,
		Metrics:      m,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("state: %w", err)
	}
	key, err := b.SessionKey(ctx, "console_session_key")
	if err != nil {
		b.Close()
		return nil, nil, fmt.Errorf("state: reading the console session key: %w", err)
	}
	raw, err := hex.DecodeString(key)
	if err != nil {
		b.Close()
		return nil, nil, fmt.Errorf("state: the console session key in the control database is not hex: %w", err)
	}
	return b, raw, nil
}

// stateSummary says where holds live, for the start-up log line.
func stateSummary(cfg *config.Config, instance string) string {
	if !cfg.State.Shared() {
		return "memory (one instance)"
	}
	return fmt.Sprintf("control database, schema %s, instance %s", cfg.State.Schema, instance)
}
