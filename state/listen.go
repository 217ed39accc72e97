package state

import (
	"context"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgmoat/pgmoat/approvals"
)

// listen keeps a connection LISTENing on the schema's channel and turns
// notifications into Changes. While it has no connection it asks the
// Store to read again every PollInterval, and once more when it is back.
func (b *Backend) listen() {
	defer b.wg.Done()
	lost := false
	for {
		err := b.listenOnce(func() {
			if lost {
				b.log.Info("notifications from the control database restored")
				lost = false
			}
			// What was committed before the LISTEN took effect was
			// not notified: the first time too, since Open returns
			// before it does.
			b.watch(approvals.Change{Kind: approvals.ChangeResync})
		})
		if b.ctx.Err() != nil {
			return
		}
		if !lost {
			b.log.Warn("lost notifications from the control database; polling every "+b.o.PollInterval.String()+" until they are back", "err", err)
			lost = true
		}
		b.fail("listen", "listen for changes", err)
		b.watch(approvals.Change{Kind: approvals.ChangeResync})
		select {
		case <-b.ctx.Done():
			return
		case <-time.After(b.o.PollInterval):
		}
	}
}

// listenOnce connects, LISTENs, calls ready, and relays notifications
// until the connection fails or the Backend closes.
func (b *Backend) listenOnce(ready func()) error {
	ctx, cancel := context.WithTimeout(b.ctx, b.o.Timeout)
	conn, err := b.pool.Acquire(ctx)
	if err != nil {
		cancel()
		return err
	}
	_, err = conn.Exec(ctx, "LISTEN "+pgx.Identifier{b.channel}.Sanitize())
	cancel()
	if err != nil {
		conn.Release()
		return err
	}
	// The connection is spent for the pool once it has listened.
	pc := conn.Hijack()
	defer pc.Close(context.Background())
	ready()
	for {
		// Wake up now and then to notice a dead connection (a server
		// gone without a FIN) within the poll interval's order.
		wctx, wcancel := context.WithTimeout(b.ctx, 30*time.Second)
		n, err := pc.WaitForNotification(wctx)
		wcancel()
		if err != nil {
			if b.ctx.Err() != nil {
				return err
			}
			if wctx.Err() != nil {
				// Quiet for 30s: check the connection is alive.
				pctx, pcancel := context.WithTimeout(b.ctx, b.o.Timeout)
				err = pc.Ping(pctx)
				pcancel()
				if err == nil {
					continue
				}
			}
			return err
		}
		kind, id, ok := strings.Cut(n.Payload, ":")
		if !ok {
			continue
		}
		switch approvals.ChangeKind(kind) {
		case approvals.ChangeHold, approvals.ChangePreApproval:
			b.watch(approvals.Change{Kind: approvals.ChangeKind(kind), ID: id})
		}
	}
}
