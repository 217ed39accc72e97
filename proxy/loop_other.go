//go:build !linux

package proxy

import "github.com/pgmoat/pgmoat/config"

// The event loop (loop_linux.go) uses epoll; elsewhere every session uses
// the goroutine relay, whatever limits.event_loops says.

type eventLoops struct{}

func newEventLoops(config.EventLoops) *eventLoops { return &eventLoops{} }

func (*eventLoops) stop() {}

type loopConn struct{}

func (*loopConn) kick() {}

func (s *ClientSession) enterLoop(*clientToServer, *serverToClient) *loopConn { return nil }

func (s *ClientSession) leaveLoop(*loopConn) *copyEnd { return nil }
