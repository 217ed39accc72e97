//go:build !linux

package proxy

// The event loop (loop.go) uses epoll; elsewhere every session uses the
// goroutine relay.

type loopConn struct{}

func (*loopConn) kick() {}

func (s *ClientSession) enterLoop(*clientToServer, *serverToClient) *loopConn { return nil }

func (s *ClientSession) leaveLoop(*loopConn) *copyEnd { return nil }
