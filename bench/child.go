package main

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/pgmoat/pgmoat/internal/pgtest"
)

// child is a process the bench started and must stop: PgBouncer or pgmoat.
type child struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	exited  <-chan struct{}
	waitErr error
}

// startChild starts argv with its output in logPath. The child gets SIGKILL
// if the bench dies, so that an interrupted run leaves nothing listening.
// cred, when not nil, runs it as another OS user; env is added to the
// bench's own environment.
func startChild(name, logPath string, cred *syscall.Credential, env []string, argv ...string) (*child, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o666)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	c := &child{name: name, cmd: cmd, logPath: logPath}
	if c.exited, err = pgtest.StartTied(cmd, syscall.SIGKILL, &c.waitErr); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	return c, nil
}

// pid is the child's process id.
func (c *child) pid() int { return c.cmd.Process.Pid }

// alive reports whether the child is still running.
func (c *child) alive() bool {
	select {
	case <-c.exited:
		return false
	default:
		return true
	}
}

// gone is nil while the child runs, and afterwards says how it ended,
// with the end of its log. A child that stops on its own in the middle of
// a run (a crash, or another process's kill) must stop the bench rather
// than turn every later run into a failure.
func (c *child) gone() error {
	if c.alive() {
		return nil
	}
	return fmt.Errorf("%s (pid %d) exited during the run (%v); the end of its log (%s):\n%s",
		c.name, c.pid(), exitDescription(c.waitErr), c.logPath, c.logTail(5))
}

// exitDescription says how a process ended; a clean exit of a server that
// was not told to stop means someone else signalled it.
func exitDescription(err error) string {
	if err == nil {
		return "exit status 0: it was told to stop (SIGTERM or SIGINT), not by the bench"
	}
	return err.Error()
}

// stop sends SIGTERM, and SIGKILL if the child is still there after grace.
func (c *child) stop(grace time.Duration) {
	if !c.alive() {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(grace):
		_ = syscall.Kill(-c.pid(), syscall.SIGKILL)
		<-c.exited
	}
}

// logTail is the end of the child's output, for error messages.
func (c *child) logTail(n int) string {
	b, err := os.ReadFile(c.logPath)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// waitReady polls probe until it succeeds, the child exits or timeout.
func (c *child) waitReady(timeout time.Duration, probe func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := probe()
		if err == nil {
			return nil
		}
		if !c.alive() {
			return fmt.Errorf("%s exited (%v) before it was ready; its log:\n%s", c.name, c.waitErr, c.logTail(20))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %v: %v; its log:\n%s", c.name, timeout, err, c.logTail(20))
		}
		time.Sleep(100 * time.Millisecond)
	}
}
