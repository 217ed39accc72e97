package state

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// migrations are the schema's versions, in order: migrations[i] takes the
// schema from version i to i+1. "{s}" is the schema, quoted. Never edit a
// released one; append.
var migrations = []string{
	// 1: instances, holds, pre-approvals, settings.
	`
CREATE TABLE {s}.instances (
	id          text PRIMARY KEY,
	token       text NOT NULL,
	hostname    text NOT NULL DEFAULT '',
	pid         int NOT NULL DEFAULT 0,
	version     text NOT NULL DEFAULT '',
	started_at  timestamptz NOT NULL,
	renewed_at  timestamptz NOT NULL,
	lease_until timestamptz NOT NULL
);
CREATE TABLE {s}.holds (
	id                 text PRIMARY KEY,
	status             text NOT NULL,
	statement          text NOT NULL,
	fingerprints       text[] NOT NULL DEFAULT '{}',
	user_name          text NOT NULL DEFAULT '',
	database_name      text NOT NULL DEFAULT '',
	application        text NOT NULL DEFAULT '',
	client             text NOT NULL DEFAULT '',
	session_id         text NOT NULL DEFAULT '',
	rule               text NOT NULL DEFAULT '',
	reason             text NOT NULL DEFAULT '',
	blast_radius       text NOT NULL DEFAULT '',
	instance_id        text NOT NULL,
	instance_token     text NOT NULL,
	created_at         timestamptz NOT NULL,
	expires_at         timestamptz NOT NULL,
	approvals_required int NOT NULL,
	approvals          jsonb NOT NULL DEFAULT '[]',
	resolved_at        timestamptz,
	resolved_by        text NOT NULL DEFAULT '',
	resolution         text NOT NULL DEFAULT ''
);
CREATE INDEX holds_pending ON {s}.holds (instance_id) WHERE status = 'pending';
CREATE INDEX holds_resolved_at ON {s}.holds (resolved_at);
CREATE TABLE {s}.preapprovals (
	id            text PRIMARY KEY,
	sql           text NOT NULL,
	fingerprints  text[] NOT NULL,
	approver      text NOT NULL,
	reason        text NOT NULL,
	database_name text NOT NULL DEFAULT '',
	user_name     text NOT NULL DEFAULT '',
	max_uses      int NOT NULL DEFAULT 0,
	uses          int NOT NULL DEFAULT 0,
	created_at    timestamptz NOT NULL,
	expires_at    timestamptz NOT NULL,
	last_used_at  timestamptz,
	revoked_at    timestamptz,
	revoked_by    text NOT NULL DEFAULT ''
);
CREATE INDEX preapprovals_fingerprints ON {s}.preapprovals USING gin (fingerprints);
CREATE TABLE {s}.settings (
	name  text PRIMARY KEY,
	value text NOT NULL
);
`,
}

// SchemaVersion is the schema version this pgmoat writes.
var SchemaVersion = len(migrations)

// TooNewError: the control database's schema was migrated by a newer
// pgmoat.
type TooNewError struct {
	Schema       string
	Found, Known int
}

func (e *TooNewError) Error() string {
	return fmt.Sprintf("the control database schema %s is at version %d, newer than this pgmoat knows (%d): "+
		"upgrade this pgmoat to the version the other instances run, or give it its own state.schema",
		e.Schema, e.Found, e.Known)
}

// migrate creates the schema or brings it to SchemaVersion. Instances
// starting together take turns on an advisory lock named after the
// schema, so each migration runs once.
func migrate(ctx context.Context, conn *pgx.Conn, schema string) (from int, err error) {
	q := pgx.Identifier{schema}.Sanitize()
	tx, err := conn.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtext($1))", "pgmoat.state."+schema); err != nil {
		return 0, err
	}
	if _, err := tx.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+q); err != nil {
		return 0, fmt.Errorf("creating schema %s: %w", schema, err)
	}
	if _, err := tx.Exec(ctx, "CREATE TABLE IF NOT EXISTS "+q+".schema_version (version int NOT NULL)"); err != nil {
		return 0, err
	}
	var v int
	err = tx.QueryRow(ctx, "SELECT version FROM "+q+".schema_version").Scan(&v)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		if _, err := tx.Exec(ctx, "INSERT INTO "+q+".schema_version VALUES (0)"); err != nil {
			return 0, err
		}
	case err != nil:
		return 0, err
	}
	if v > SchemaVersion {
		return v, &TooNewError{Schema: schema, Found: v, Known: SchemaVersion}
	}
	for i := v; i < SchemaVersion; i++ {
		if _, err := tx.Exec(ctx, strings.ReplaceAll(migrations[i], "{s}", q)); err != nil {
			return v, fmt.Errorf("migrating schema %s to version %d: %w", schema, i+1, err)
		}
	}
	if _, err := tx.Exec(ctx, "UPDATE "+q+".schema_version SET version = $1", SchemaVersion); err != nil {
		return v, err
	}
	return v, tx.Commit(ctx)
}
