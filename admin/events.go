package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/pgmoat/pgmoat/approvals"
)

// heartbeat is how often an idle event stream gets a comment line, so
// that proxies keep it open and a dead client is noticed.
const heartbeat = 25 * time.Second

// events is GET /api/v1/events: a server-sent event stream of every change
// to holds and pre-approvals, on any instance.
//
//	event: hold          data: the hold as GET /api/v1/holds/{id} returns it
//	event: hold_gone     data: {"id": "…"} (forgotten: ended long ago)
//	event: preapproval   data: the pre-approval
//	event: resync        data: {} — changes may have been missed: read the lists again
//	event: signed_out    data: {} — the session or token is no longer valid
//
// Changes are merged per record and a stream that falls behind gets one
// resync, so a burst of hundreds of holds costs the reader at most one
// event per record.
func (s *Server) events(w http.ResponseWriter, r *http.Request, who identity) {
	rc := http.NewResponseController(w)
	sub := s.store.Subscribe()
	defer sub.Close()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	send := func(event string, v any) bool {
		data, err := json.Marshal(v)
		if err != nil {
			return false
		}
		_ = rc.SetWriteDeadline(time.Now().Add(30 * time.Second))
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, data); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	_ = rc.SetWriteDeadline(time.Now().Add(30 * time.Second))
	if _, err := fmt.Fprint(w, "retry: 2000\n: pgmoat events\n\n"); err != nil || rc.Flush() != nil {
		return
	}
	tick := time.NewTicker(heartbeat)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-s.stopping:
			return
		case <-tick.C:
			if !s.stillValid(r, who) {
				send("signed_out", struct{}{})
				return
			}
			_ = rc.SetWriteDeadline(time.Now().Add(30 * time.Second))
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil || rc.Flush() != nil {
				return
			}
		case _, open := <-sub.C:
			if !open {
				return
			}
			for _, c := range sub.Next() {
				if !s.sendChange(c, send) {
					return
				}
			}
		}
	}
}

func (s *Server) sendChange(c approvals.Change, send func(string, any) bool) bool {
	switch c.Kind {
	case approvals.ChangeHold:
		info, err := s.store.Get(c.ID)
		switch {
		case errors.Is(err, approvals.ErrNotFound):
			return send("hold_gone", map[string]string{"id": c.ID})
		case err != nil:
			return send("resync", struct{}{})
		}
		return send("hold", info)
	case approvals.ChangePreApproval:
		p, err := s.store.GetPreApproval(c.ID)
		if err != nil {
			return send("resync", struct{}{})
		}
		return send("preapproval", p)
	}
	return send("resync", struct{}{})
}

// stillValid reports whether the credentials of a long-lived request are
// still good: the session has not expired and its token not changed.
func (s *Server) stillValid(r *http.Request, who identity) bool {
	if tok, ok := bearer(r); ok {
		got, ok := lookup(*s.tokens.Load(), tok)
		return ok && got == who
	}
	ses, ok := s.sessionOf(r)
	return ok && ses.identity == who
}
