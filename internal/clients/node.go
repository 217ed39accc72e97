package clients

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pgmoat/pgmoat/internal/pgtest"
)

// NodeConfig is what node/run.js connects with and runs.
type NodeConfig struct {
	Host     string `json:"host"`
	Port     int    `json:"port"`
	User     string `json:"user"`
	Password string `json:"password,omitempty"`
	Database string `json:"database"`
	// SSL nil means no TLS (node-postgres never asks for it then).
	SSL *NodeSSL `json:"ssl,omitempty"`
	// Scenario is "full" (default: every step), "connect" (log in,
	// report the session, leave) or "error" (run Query, which must fail,
	// and report the error's fields under "error").
	Scenario string `json:"scenario,omitempty"`
	Query    string `json:"query,omitempty"`
}

// NodeSSL is node-postgres's ssl option. CA is a PEM file's path.
type NodeSSL struct {
	RejectUnauthorized bool   `json:"rejectUnauthorized"`
	CA                 string `json:"ca,omitempty"`
}

// NodeConfigFor returns a NodeConfig for c's address; with tls it verifies
// the server's certificate against c.CAFile.
func NodeConfigFor(c *pgtest.Cluster, user, password, db string, tls bool) NodeConfig {
	cfg := NodeConfig{Host: c.Host, Port: c.Port, User: user, Password: password, Database: db}
	if tls {
		cfg.SSL = &NodeSSL{RejectUnauthorized: true, CA: c.CAFile}
	}
	return cfg
}

// NodeError is a run of node/run.js that did not succeed.
type NodeError struct {
	ExitCode int
	// Code and Message come from the error run.js reported; Code is the
	// SQLSTATE when the server sent the error.
	Code, Message string
	Stderr        string
}

func (e *NodeError) Error() string {
	if e.Code != "" {
		return fmt.Sprintf("node client exited %d: %s (SQLSTATE %s)", e.ExitCode, e.Message, e.Code)
	}
	if e.Message != "" {
		return fmt.Sprintf("node client exited %d: %s", e.ExitCode, e.Message)
	}
	return fmt.Sprintf("node client exited %d: %s", e.ExitCode, e.Stderr)
}

// NodeDir is the node client's directory in the source tree.
func NodeDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "node")
}

var (
	npmOnce sync.Once
	npmErr  error
)

// EnsureNode makes sure node is installed and the client's dependencies
// are, running `npm ci` when node_modules is missing or older than
// package-lock.json. Concurrent test binaries serialise on a lock file.
func EnsureNode() error {
	npmOnce.Do(func() { npmErr = ensureNode(NodeDir()) })
	return npmErr
}

const stampFile = ".pgmoat-lock-sha256"

func ensureNode(dir string) error {
	if _, err := exec.LookPath("node"); err != nil {
		return fmt.Errorf("node is not installed (scripts/ensure-deps.sh installs it): %w", err)
	}
	lock, err := os.ReadFile(filepath.Join(dir, "package-lock.json"))
	if err != nil {
		return err
	}
	sum := sha256.Sum256(lock)
	want := hex.EncodeToString(sum[:])
	stamp := filepath.Join(dir, "node_modules", stampFile)
	if b, err := os.ReadFile(stamp); err == nil && string(b) == want {
		return nil
	}

	lf, err := os.OpenFile(filepath.Join(dir, ".npm-ci.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	defer lf.Close()
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX); err != nil {
		return err
	}
	defer syscall.Flock(int(lf.Fd()), syscall.LOCK_UN)
	if b, err := os.ReadFile(stamp); err == nil && string(b) == want {
		return nil // another test binary did it while we waited
	}
	if _, err := exec.LookPath("npm"); err != nil {
		return fmt.Errorf("npm is not installed (scripts/ensure-deps.sh installs it): %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund", "--loglevel=error")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("npm ci in %s: %v\n%s", dir, err, out)
	}
	return os.WriteFile(stamp, []byte(want), 0o644)
}

// RunNodeContext runs node/run.js with cfg and returns its stdout (the
// results document) and stderr. A run that does not exit 0 returns a
// *NodeError.
func RunNodeContext(ctx context.Context, cfg NodeConfig) (stdout, stderr []byte, err error) {
	if err := EnsureNode(); err != nil {
		return nil, nil, err
	}
	arg, err := json.Marshal(cfg)
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.CommandContext(ctx, "node", "run.js", string(arg))
	cmd.Dir = NodeDir()
	cmd.Env = cleanEnv()
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	if err == nil {
		return out.Bytes(), errOut.Bytes(), nil
	}
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		return out.Bytes(), errOut.Bytes(), fmt.Errorf("running node: %w", err)
	}
	ne := &NodeError{ExitCode: exit.ExitCode(), Stderr: errOut.String()}
	var report struct {
		Error struct {
			Code    *string `json:"code"`
			Message string  `json:"message"`
		} `json:"error"`
	}
	if line := lastLine(errOut.Bytes()); json.Unmarshal(line, &report) == nil {
		ne.Message = report.Error.Message
		if report.Error.Code != nil {
			ne.Code = *report.Error.Code
		}
	}
	return out.Bytes(), errOut.Bytes(), ne
}

// RunNode runs node/run.js with cfg and returns its results document;
// anything but success fails t.
func RunNode(t testing.TB, cfg NodeConfig) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, _, err := RunNodeContext(ctx, cfg)
	if err != nil {
		t.Fatalf("node client (%s@%s:%d/%s, ssl=%v): %v", cfg.User, cfg.Host, cfg.Port, cfg.Database, cfg.SSL != nil, err)
	}
	return out
}

func lastLine(b []byte) []byte {
	b = bytes.TrimRight(b, "\n")
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		return b[i+1:]
	}
	return b
}

// DbmatePath returns the dbmate CLI, which the node client's packages
// install from npm (@dbmate/linux-x64, the package of dbmate's prebuilt
// binary, an optional dependency so that npm skips it elsewhere),
// installing them first if needed.
func DbmatePath() (string, error) {
	if err := EnsureNode(); err != nil {
		return "", err
	}
	p := filepath.Join(NodeDir(), "node_modules", "@dbmate", runtime.GOOS+"-"+map[string]string{"amd64": "x64", "arm64": "arm64"}[runtime.GOARCH], "bin", "dbmate")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("dbmate is not installed for %s/%s in %s (package.json pins @dbmate/linux-x64): %w", runtime.GOOS, runtime.GOARCH, NodeDir(), err)
	}
	return p, nil
}
