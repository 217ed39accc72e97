package pgtest

import (
	"os/exec"
	"runtime"
	"syscall"
)

// StartTied starts cmd in its own process group (a terminal's Ctrl-C goes
// to us, and we stop it) and asks Linux to send it deathSig if we die, so
// that a crashed test or bench leaves nothing behind. It returns a channel
// closed once cmd has exited; *waitErr then holds cmd.Wait's result.
//
// Linux sends the parent-death signal when the thread that forked the
// child exits, not the process, so one OS thread is kept locked until the
// child is gone.
func StartTied(cmd *exec.Cmd, deathSig syscall.Signal, waitErr *error) (exited <-chan struct{}, err error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = deathSig
	done := make(chan struct{})
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		*waitErr = cmd.Wait()
		close(done)
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return done, nil
}
