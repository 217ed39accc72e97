package proxy

import (
	"context"
	"encoding/binary"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// cancelKey identifies a session by its server's BackendKeyData: the
// backend pid followed by the secret (4 bytes in protocol 3.0, up to 256 in
// 3.2). pgmoat hands the server's key to the client unchanged, so a
// CancelRequest carries exactly this key.
type cancelKey string

func makeCancelKey(pid uint32, secret []byte) cancelKey {
	b := make([]byte, 4+len(secret))
	binary.BigEndian.PutUint32(b, pid)
	copy(b[4:], secret)
	return cancelKey(b)
}

// register records sess under its server's cancel key. A key already in
// use (which the server never hands out twice at once) keeps its session.
func (s *Server) register(sess *ClientSession, key cancelKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, taken := s.keys[key]; taken {
		return
	}
	s.keys[key] = sess
	sess.key, sess.keyed = key, true
}

func (s *Server) lookup(key cancelKey) *ClientSession {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.keys[key]
}

// cancelTimeout bounds forwarding one CancelRequest to the upstream.
const cancelTimeout = 10 * time.Second

// handleCancel routes a CancelRequest that arrived on its own connection to
// the session whose key it carries. The secret is never logged. As in
// PostgreSQL, the requesting client learns nothing: its connection is just
// closed.
func (s *Server) handleCancel(req *pgproto3.CancelRequest, from string) {
	sess := s.lookup(makeCancelKey(req.ProcessID, req.SecretKey))
	if sess == nil {
		s.log.Info("cancel request for no known session", "client", from, "backend_pid", req.ProcessID)
		return
	}
	if hook := sess.cancelHook.Load(); hook != nil && (*hook)() {
		sess.log.Info("cancel request handled by pgmoat", "client", from)
		return
	}
	ctx, cancel := context.WithTimeout(sess.ctx, cancelTimeout)
	defer cancel()
	if err := s.upstream.cancel(ctx, req); err != nil {
		s.met.UpstreamConnectErrors.Inc()
		sess.log.Warn("forwarding cancel request failed", "client", from, "err", err)
		return
	}
	sess.log.Info("cancel request forwarded", "client", from)
}
