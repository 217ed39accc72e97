package pgtest

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"strings"
	"syscall"
)

// serverUser is the OS identity initdb and postgres run as. PostgreSQL
// refuses to run as root, so a root test process runs them as the postgres
// OS user; otherwise they run as the current user and cred is nil.
type serverUser struct {
	cred     *syscall.Credential
	uid, gid int
}

func currentServerUser() (serverUser, error) {
	if os.Geteuid() != 0 {
		return serverUser{uid: os.Geteuid(), gid: os.Getegid()}, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		// A fresh machine with the binaries unpacked but no postgres
		// account: make one rather than fail; it is what the Debian
		// package would have done.
		out, uerr := exec.Command("useradd", "--system", "--user-group", "--no-create-home",
			"--home-dir", "/var/lib/postgresql", "--shell", "/bin/sh", "postgres").CombinedOutput()
		if uerr != nil {
			return serverUser{}, fmt.Errorf("running as root needs the postgres OS user, and useradd failed: %v: %s",
				uerr, strings.TrimSpace(string(out)))
		}
		if u, err = user.Lookup("postgres"); err != nil {
			return serverUser{}, fmt.Errorf("looking up the postgres OS user after useradd: %w", err)
		}
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return serverUser{}, fmt.Errorf("postgres OS user has a non-numeric uid %q", u.Uid)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return serverUser{}, fmt.Errorf("postgres OS user has a non-numeric gid %q", u.Gid)
	}
	return serverUser{
		cred: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}},
		uid:  uid,
		gid:  gid,
	}, nil
}

// command returns a command that runs as the server user, in dir, with an
// environment that carries nothing from the caller's PG* or locale settings.
func (s serverUser) command(dir, name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "LC_ALL=C", "TZ=UTC"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	return cmd
}

// chown gives path to the server user; a no-op when not running as root.
func (s serverUser) chown(path string) error {
	if s.cred == nil {
		return nil
	}
	return os.Chown(path, s.uid, s.gid)
}
