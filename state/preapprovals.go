package state

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgmoat/pgmoat/approvals"
)

const preColumns = `id, sql, fingerprints, approver, reason, database_name, user_name, max_uses, uses,
	created_at, expires_at, last_used_at, revoked_at, revoked_by`

func scanPre(r pgx.Row) (approvals.PreApproval, error) {
	var (
		p                 approvals.PreApproval
		lastUsed, revoked *time.Time
	)
	err := r.Scan(&p.ID, &p.SQL, &p.Fingerprints, &p.Approver, &p.Reason, &p.Database, &p.User, &p.MaxUses, &p.Uses,
		&p.CreatedAt, &p.ExpiresAt, &lastUsed, &revoked, &p.RevokedBy)
	if lastUsed != nil {
		p.LastUsedAt = *lastUsed
	}
	if revoked != nil {
		p.RevokedAt = *revoked
	}
	return p, err
}

// CreatePreApproval implements approvals.Backend.
func (b *Backend) CreatePreApproval(p approvals.PreApproval, record func() error) error {
	ctx, cancel := b.op()
	defer cancel()
	tx, err := b.pool.Begin(ctx)
	if err != nil {
		return b.fail("preapproval", "store the pre-approval", err)
	}
	defer tx.Rollback(context.Background())
	_, err = tx.Exec(ctx, `INSERT INTO `+b.q+`.preapprovals (`+preColumns+`)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`,
		p.ID, p.SQL, p.Fingerprints, p.Approver, p.Reason, p.Database, p.User, p.MaxUses, p.Uses,
		p.CreatedAt, p.ExpiresAt, nullTime(p.LastUsedAt), nullTime(p.RevokedAt), p.RevokedBy)
	if err == nil {
		err = b.notify(ctx, tx, approvals.ChangePreApproval, p.ID)
	}
	if err != nil {
		return b.fail("preapproval", "store the pre-approval", err)
	}
	if err := record(); err != nil {
		return err
	}
	cctx, ccancel := b.op()
	defer ccancel()
	if err := tx.Commit(cctx); err != nil {
		return b.fail("preapproval", "store the pre-approval", err)
	}
	b.ok()
	return nil
}

// UpdatePreApproval implements approvals.Backend. The row lock makes a use
// with a limit count exactly once across instances.
func (b *Backend) UpdatePreApproval(id string, fn func(*approvals.PreApproval) (bool, error)) (approvals.PreApproval, error) {
	ctx, cancel := b.op()
	defer cancel()
	tx, err := b.pool.Begin(ctx)
	if err != nil {
		return approvals.PreApproval{}, b.fail("preapproval", "change the pre-approval", err)
	}
	defer tx.Rollback(context.Background())
	cur, err := scanPre(tx.QueryRow(ctx, `SELECT `+preColumns+` FROM `+b.q+`.preapprovals WHERE id = $1 FOR UPDATE`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		b.ok()
		return cur, fmt.Errorf("pre-approval %s: %w", id, approvals.ErrNotFound)
	}
	if err != nil {
		return cur, b.fail("preapproval", "change the pre-approval", err)
	}
	b.ok()
	next := cur
	next.Fingerprints = append([]string(nil), cur.Fingerprints...)
	changed, ferr := fn(&next)
	if !changed {
		return cur, ferr
	}
	wctx, wcancel := b.op()
	defer wcancel()
	_, err = tx.Exec(wctx, `UPDATE `+b.q+`.preapprovals SET uses = $2, last_used_at = $3, revoked_at = $4, revoked_by = $5
WHERE id = $1`, id, next.Uses, nullTime(next.LastUsedAt), nullTime(next.RevokedAt), next.RevokedBy)
	if err == nil {
		err = b.notify(wctx, tx, approvals.ChangePreApproval, id)
	}
	if err == nil {
		err = tx.Commit(wctx)
	}
	if err != nil {
		b.log.Error("a change to a pre-approval was recorded in the audit log but could not be stored; it is unchanged",
			"preapproval", id, "err", err)
		return cur, b.fail("preapproval", "store the change to the pre-approval", err)
	}
	return next, ferr
}

// MatchPreApproval implements approvals.Backend.
func (b *Backend) MatchPreApproval(fingerprint, user, database string, now time.Time) (approvals.PreApproval, bool, error) {
	ctx, cancel := b.op()
	defer cancel()
	p, err := scanPre(b.pool.QueryRow(ctx, `SELECT `+preColumns+` FROM `+b.q+`.preapprovals
WHERE fingerprints @> ARRAY[$1]::text[] AND revoked_at IS NULL AND expires_at > $2
	AND (max_uses = 0 OR uses < max_uses)
	AND (user_name = '' OR user_name = $3) AND (database_name = '' OR database_name = $4)
ORDER BY expires_at DESC LIMIT 1`, fingerprint, now, user, database))
	if errors.Is(err, pgx.ErrNoRows) {
		b.ok()
		return p, false, nil
	}
	if err != nil {
		return p, false, b.fail("preapproval", "read the pre-approvals", err)
	}
	b.ok()
	return p, true, nil
}

// GetPreApproval implements approvals.Backend.
func (b *Backend) GetPreApproval(id string) (approvals.PreApproval, error) {
	ctx, cancel := b.op()
	defer cancel()
	p, err := scanPre(b.pool.QueryRow(ctx, `SELECT `+preColumns+` FROM `+b.q+`.preapprovals WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		b.ok()
		return p, fmt.Errorf("pre-approval %s: %w", id, approvals.ErrNotFound)
	}
	if err != nil {
		return p, b.fail("read", "read the pre-approval", err)
	}
	b.ok()
	return p, nil
}

// ListPreApprovals implements approvals.Backend.
func (b *Backend) ListPreApprovals(endedSince time.Time) ([]approvals.PreApproval, error) {
	ctx, cancel := b.op()
	defer cancel()
	rows, err := b.pool.Query(ctx, `SELECT `+preColumns+` FROM `+b.q+`.preapprovals
WHERE least(expires_at, coalesce(revoked_at, expires_at),
	CASE WHEN max_uses > 0 AND uses >= max_uses THEN coalesce(last_used_at, expires_at) ELSE expires_at END) > $1`, endedSince)
	if err != nil {
		return nil, b.fail("read", "list the pre-approvals", err)
	}
	ps, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (approvals.PreApproval, error) { return scanPre(r) })
	if err != nil {
		return nil, b.fail("read", "list the pre-approvals", err)
	}
	b.ok()
	return ps, nil
}
