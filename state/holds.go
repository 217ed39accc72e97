package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgmoat/pgmoat/approvals"
)

const holdColumns = `id, status, statement, fingerprints, user_name, database_name, application, client, session_id,
	rule, reason, blast_radius, instance_id, created_at, expires_at, approvals_required, approvals,
	resolved_at, resolved_by, resolution`

func scanHold(r pgx.Row) (approvals.HoldInfo, error) {
	var (
		h          approvals.HoldInfo
		status     string
		approvalsJ []byte
		resolvedAt *time.Time
	)
	err := r.Scan(&h.ID, &status, &h.Statement, &h.Fingerprints, &h.User, &h.Database, &h.Application, &h.Client,
		&h.SessionID, &h.Rule, &h.Reason, &h.BlastRadius, &h.Instance, &h.CreatedAt, &h.ExpiresAt,
		&h.ApprovalsRequired, &approvalsJ, &resolvedAt, &h.ResolvedBy, &h.Resolution)
	if err != nil {
		return h, err
	}
	h.Status = approvals.Status(status)
	if err := json.Unmarshal(approvalsJ, &h.Approvals); err != nil {
		return h, fmt.Errorf("hold %s: approvals: %w", h.ID, err)
	}
	if h.Approvals == nil {
		h.Approvals = []approvals.Approval{}
	}
	if h.Fingerprints == nil {
		h.Fingerprints = []string{}
	}
	if resolvedAt != nil {
		h.ResolvedAt = *resolvedAt
	}
	return h, nil
}

func nullTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// notify queues a notification of the change, sent when tx commits.
func (b *Backend) notify(ctx context.Context, tx pgx.Tx, kind approvals.ChangeKind, id string) error {
	_, err := tx.Exec(ctx, "SELECT pg_notify($1, $2)", b.channel, string(kind)+":"+id)
	return err
}

// CreateHold implements approvals.Backend.
func (b *Backend) CreateHold(h approvals.HoldInfo, record func() error) error {
	ctx, cancel := b.op()
	defer cancel()
	tx, err := b.pool.Begin(ctx)
	if err != nil {
		return b.fail("create_hold", "store the hold", err)
	}
	defer tx.Rollback(context.Background())
	apj, _ := json.Marshal(h.Approvals)
	_, err = tx.Exec(ctx, `INSERT INTO `+b.q+`.holds (`+holdColumns+`, instance_token)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)`,
		h.ID, string(h.Status), h.Statement, h.Fingerprints, h.User, h.Database, h.Application, h.Client, h.SessionID,
		h.Rule, h.Reason, h.BlastRadius, b.o.Instance, h.CreatedAt, h.ExpiresAt, h.ApprovalsRequired, apj,
		nullTime(h.ResolvedAt), h.ResolvedBy, h.Resolution, b.token)
	if err == nil {
		err = b.notify(ctx, tx, approvals.ChangeHold, h.ID)
	}
	if err != nil {
		return b.fail("create_hold", "store the hold", err)
	}
	if err := record(); err != nil {
		return err
	}
	// The audit write may have taken a while: commit on a fresh deadline.
	cctx, ccancel := b.op()
	defer ccancel()
	if err := tx.Commit(cctx); err != nil {
		return b.fail("create_hold", "store the hold", err)
	}
	b.ok()
	return nil
}

// UpdateHold implements approvals.Backend: the row stays locked while fn
// runs, audit write included.
func (b *Backend) UpdateHold(id string, fn func(*approvals.HoldInfo) (bool, error)) (approvals.HoldInfo, error) {
	ctx, cancel := b.op()
	defer cancel()
	tx, err := b.pool.Begin(ctx)
	if err != nil {
		return approvals.HoldInfo{}, b.fail("update_hold", "change the hold", err)
	}
	defer tx.Rollback(context.Background())
	cur, err := scanHold(tx.QueryRow(ctx, `SELECT `+holdColumns+` FROM `+b.q+`.holds WHERE id = $1 FOR UPDATE`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		b.ok()
		return approvals.HoldInfo{}, fmt.Errorf("hold %s: %w", id, approvals.ErrNotFound)
	}
	if err != nil {
		return approvals.HoldInfo{}, b.fail("update_hold", "change the hold", err)
	}
	b.ok()
	next := cur
	next.Approvals = append([]approvals.Approval{}, cur.Approvals...)
	changed, ferr := fn(&next)
	if !changed {
		return cur, ferr
	}
	wctx, wcancel := b.op()
	defer wcancel()
	apj, _ := json.Marshal(next.Approvals)
	_, err = tx.Exec(wctx, `UPDATE `+b.q+`.holds SET status = $2, approvals = $3, resolved_at = $4, resolved_by = $5, resolution = $6
WHERE id = $1`, id, string(next.Status), apj, nullTime(next.ResolvedAt), next.ResolvedBy, next.Resolution)
	if err == nil {
		err = b.notify(wctx, tx, approvals.ChangeHold, id)
	}
	if err == nil {
		err = tx.Commit(wctx)
	}
	if err != nil {
		b.log.Error("a change to a hold was recorded in the audit log but could not be stored; the hold is unchanged",
			"hold", id, "status", next.Status, "err", err)
		return cur, b.fail("update_hold", "store the change to the hold", err)
	}
	return next, ferr
}

// GetHold implements approvals.Backend.
func (b *Backend) GetHold(id string) (approvals.HoldInfo, error) {
	ctx, cancel := b.op()
	defer cancel()
	h, err := scanHold(b.pool.QueryRow(ctx, `SELECT `+holdColumns+` FROM `+b.q+`.holds WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		b.ok()
		return h, fmt.Errorf("hold %s: %w", id, approvals.ErrNotFound)
	}
	if err != nil {
		return h, b.fail("read", "read the hold", err)
	}
	b.ok()
	return h, nil
}

// GetHolds implements approvals.Backend.
func (b *Backend) GetHolds(ids []string) ([]approvals.HoldInfo, error) {
	return b.queryHolds("read the holds", `SELECT `+holdColumns+` FROM `+b.q+`.holds WHERE id = ANY($1)`, ids)
}

// ListHolds implements approvals.Backend.
func (b *Backend) ListHolds(endedSince time.Time, maxEnded int) ([]approvals.HoldInfo, error) {
	return b.queryHolds("list the holds", `
(SELECT `+holdColumns+` FROM `+b.q+`.holds WHERE status = 'pending')
UNION ALL
(SELECT `+holdColumns+` FROM `+b.q+`.holds WHERE status <> 'pending' AND resolved_at > $1
	ORDER BY resolved_at DESC LIMIT $2)`, endedSince, maxEnded)
}

func (b *Backend) queryHolds(what, sql string, args ...any) ([]approvals.HoldInfo, error) {
	ctx, cancel := b.op()
	defer cancel()
	rows, err := b.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, b.fail("read", what, err)
	}
	hs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (approvals.HoldInfo, error) { return scanHold(r) })
	if err != nil {
		return nil, b.fail("read", what, err)
	}
	b.ok()
	return hs, nil
}
