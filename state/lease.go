package state

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgmoat/pgmoat/approvals"
)

// InUseError: another running pgmoat renews the lease of this instance id.
type InUseError struct {
	Instance string
	Hostname string
	PID      int
}

func (e *InUseError) Error() string {
	return fmt.Sprintf("instance id %q is in use by another running pgmoat (host %s, pid %d), which keeps renewing its lease: "+
		"give each instance its own state.instance_id", e.Instance, e.Hostname, e.PID)
}

// claim takes this instance's lease. A live lease under the same id
// (another token) is waited out: it belongs to a process that crashed
// (its lease runs out) or to a second instance with the same id (it is
// renewed, and claim fails with *InUseError).
func (b *Backend) claim(ctx context.Context) error {
	var (
		firstUntil time.Time
		waited     bool
	)
	for {
		start := time.Now()
		var (
			claimed bool
			until   time.Time
			host    string
			pid     int
		)
		err := b.pool.QueryRow(ctx, `
WITH claim AS (
	INSERT INTO `+b.q+`.instances AS i (id, token, hostname, pid, version, started_at, renewed_at, lease_until)
	VALUES ($1, $2, $3, $4, $5, clock_timestamp(), clock_timestamp(), clock_timestamp() + $6 * interval '1 millisecond')
	ON CONFLICT (id) DO UPDATE SET token = EXCLUDED.token, hostname = EXCLUDED.hostname, pid = EXCLUDED.pid,
		version = EXCLUDED.version, started_at = EXCLUDED.started_at, renewed_at = EXCLUDED.renewed_at,
		lease_until = EXCLUDED.lease_until
	WHERE i.lease_until < clock_timestamp() OR i.token = EXCLUDED.token
	RETURNING true
)
SELECT EXISTS (SELECT FROM claim),
	coalesce((SELECT lease_until FROM `+b.q+`.instances WHERE id = $1), 'epoch'),
	coalesce((SELECT hostname FROM `+b.q+`.instances WHERE id = $1), ''),
	coalesce((SELECT pid FROM `+b.q+`.instances WHERE id = $1), 0)`,
			b.o.Instance, b.token, hostname(), os.Getpid(), b.o.Version, b.o.Lease.Milliseconds()).Scan(&claimed, &until, &host, &pid)
		if err != nil {
			return fmt.Errorf("taking the lease of instance %s in the control database: %w", b.o.Instance, err)
		}
		if claimed {
			b.renewed(start)
			if waited {
				b.log.Info("lease taken over from an earlier process with this instance id")
			}
			return nil
		}
		if !waited {
			firstUntil = until
			waited = true
			b.log.Warn("another process holds the lease of this instance id; waiting for it to run out (a restart after a crash), or for it to be renewed (two instances with one id)",
				"lease_until", until, "hostname", host, "pid", pid)
		} else if until.After(firstUntil) {
			return &InUseError{Instance: b.o.Instance, Hostname: host, PID: pid}
		}
		wait := time.Until(until) + 100*time.Millisecond
		wait = min(max(wait, 100*time.Millisecond), b.o.Lease)
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the lease of instance %s: %w", b.o.Instance, ctx.Err())
		case <-time.After(wait):
		}
	}
}

// renewed notes a lease renewed by a statement that started at start.
func (b *Backend) renewed(start time.Time) {
	b.leaseMu.Lock()
	b.leaseUntil = start.Add(b.o.Lease)
	was := b.leaseLost
	b.leaseLost = false
	b.leaseMu.Unlock()
	if was {
		b.log.Info("lease renewed again")
	}
}

// lapsed reports whether this instance's lease may have run out.
func (b *Backend) lapsed() bool {
	b.leaseMu.Lock()
	defer b.leaseMu.Unlock()
	return !b.leaseUntil.IsZero() && !time.Now().Before(b.leaseUntil)
}

// keepLease renews the lease every third of it, withdraws the holds of
// instances whose lease ran out, and deletes records past their keep time.
func (b *Backend) keepLease() {
	defer b.wg.Done()
	every := b.o.Lease / 3
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-t.C:
		}
		if err := b.renew(); err != nil {
			b.fail("lease", "renew the lease", err)
			b.log.Warn("could not renew the lease", "err", err)
		} else {
			b.ok()
			b.sweep()
			b.prune()
		}
		b.checkLapsed()
	}
}

func (b *Backend) renew() error {
	ctx, cancel := b.op()
	defer cancel()
	start := time.Now()
	tag, err := b.pool.Exec(ctx, `
UPDATE `+b.q+`.instances SET renewed_at = clock_timestamp(),
	lease_until = clock_timestamp() + $3 * interval '1 millisecond'
WHERE id = $1 AND token = $2`, b.o.Instance, b.token, b.o.Lease.Milliseconds())
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		// The row is gone or someone took it over after our lease ran
		// out: claim it again (that fails while another process renews it).
		if err := b.claim(ctx); err != nil {
			return err
		}
		return nil
	}
	b.renewed(start)
	return nil
}

// checkLapsed tells the Store once when the lease has run out.
func (b *Backend) checkLapsed() {
	if !b.lapsed() {
		return
	}
	b.leaseMu.Lock()
	tell := !b.leaseLost
	b.leaseLost = true
	until := b.leaseUntil
	b.leaseMu.Unlock()
	b.m.StateUp.Set(0)
	if tell {
		b.watch(approvals.Change{Kind: approvals.ChangeLeaseLost,
			Reason: fmt.Sprintf("instance %s could not renew its lease in the control database (it ran out at %s), so other instances may withdraw its holds",
				b.o.Instance, until.UTC().Format(time.RFC3339))})
	}
}

// sweep finds pending holds whose instance's lease has run out (or whose
// instance started again since) and hands them to the Store to withdraw.
func (b *Backend) sweep() {
	ctx, cancel := b.op()
	defer cancel()
	rows, err := b.pool.Query(ctx, `
SELECT h.id, h.instance_id, i.lease_until, i.token IS DISTINCT FROM h.instance_token AND i.id IS NOT NULL
FROM `+b.q+`.holds h LEFT JOIN `+b.q+`.instances i ON i.id = h.instance_id
WHERE h.status = 'pending'
	AND (i.id IS NULL OR i.token <> h.instance_token OR i.lease_until < clock_timestamp())`)
	if err != nil {
		b.fail("read", "look for holds of stopped instances", err)
		return
	}
	type orphan struct {
		id, instance string
		until        *time.Time
		restarted    bool
	}
	orphans, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (orphan, error) {
		var o orphan
		err := r.Scan(&o.id, &o.instance, &o.until, &o.restarted)
		return o, err
	})
	if err != nil {
		b.fail("read", "look for holds of stopped instances", err)
		return
	}
	for _, o := range orphans {
		var why string
		switch {
		case o.restarted:
			why = fmt.Sprintf("instance %s restarted, and the client connection it held is gone", o.instance)
		case o.until == nil:
			why = fmt.Sprintf("instance %s stopped without withdrawing it, and the client connection it held is gone", o.instance)
		default:
			why = fmt.Sprintf("instance %s stopped renewing its lease (it ran out at %s), and the client connection it held is gone with it",
				o.instance, o.until.UTC().Format(time.RFC3339))
		}
		if o.instance == b.o.Instance && !o.restarted && o.until != nil {
			continue // our own lease is live: not ours to sweep
		}
		b.watch(approvals.Change{Kind: approvals.ChangeOrphaned, ID: o.id, Reason: why})
	}
}

// prune deletes ended records older than KeepEndedFor.
func (b *Backend) prune() {
	ctx, cancel := b.op()
	defer cancel()
	cutoff := time.Now().Add(-b.o.KeepEndedFor)
	_, err := b.pool.Exec(ctx, `DELETE FROM `+b.q+`.holds WHERE status <> 'pending' AND resolved_at < $1`, cutoff)
	if err == nil {
		_, err = b.pool.Exec(ctx, `DELETE FROM `+b.q+`.preapprovals
WHERE least(expires_at, coalesce(revoked_at, expires_at),
	CASE WHEN max_uses > 0 AND uses >= max_uses THEN coalesce(last_used_at, expires_at) ELSE expires_at END) < $1`, cutoff)
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		b.log.Warn("could not delete old records", "err", err)
	}
}
