package main

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestMain lets the test binary act as pgtmp, so the test can run it as a
// separate process and signal it as make run and the bench script do.
func TestMain(m *testing.M) {
	if os.Getenv("PGTMP_TEST_BE_MAIN") == "1" {
		os.Args = append([]string{"pgtmp"}, strings.Fields(os.Getenv("PGTMP_TEST_ARGS"))...)
		main()
		return
	}
	os.Exit(m.Run())
}

// TestRunAndStop starts pgtmp in the background, waits for its env file,
// connects with the announced DSN over verified TLS, checks a -set setting, sends SIGTERM and
// checks that the server, its directory and the env file are gone.
func TestRunAndStop(t *testing.T) {
	envFile := filepath.Join(t.TempDir(), "pgtmp.env")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "PGTMP_TEST_BE_MAIN=1", "PGTMP_TEST_ARGS=-set max_connections=345 -env-file "+envFile)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()

	printed := map[string]string{}
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		printed[k] = v
		if k == "PGTMP_PID" {
			break
		}
	}
	if printed["PGTMP_DSN"] == "" {
		cmd.Wait()
		t.Fatalf("no PGTMP_DSN printed; stderr:\n%s", stderr.String())
	}
	file, err := os.ReadFile(envFile)
	if err != nil {
		t.Fatalf("env file not written once ready: %v", err)
	}
	for _, k := range []string{"PGTMP_DSN", "PGTMP_PORT", "PGTMP_UPSTREAM", "PGTMP_CAFILE"} {
		if !strings.Contains(string(file), k+"='"+printed[k]+"'\n") {
			t.Errorf("env file lacks %s='%s':\n%s", k, printed[k], file)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, printed["PGTMP_DSN"]+"?sslmode=verify-full&sslrootcert="+printed["PGTMP_CAFILE"])
	if err != nil {
		t.Fatalf("connecting with PGTMP_DSN: %v", err)
	}
	var one int
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("SELECT 1: %d, %v", one, err)
	}
	// -set reaches postgresql.conf (the bench needs more connections).
	var maxConns string
	if err := conn.QueryRow(ctx, "SHOW max_connections").Scan(&maxConns); err != nil || maxConns != "345" {
		t.Errorf("max_connections = %q, %v; want 345 from -set", maxConns, err)
	}
	conn.Close(ctx)

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("pgtmp exited with %v after SIGTERM; stderr:\n%s", err, stderr.String())
	}
	if _, err := os.Stat(printed["PGTMP_DIR"]); !os.IsNotExist(err) {
		t.Errorf("cluster directory %s left behind: %v", printed["PGTMP_DIR"], err)
	}
	if _, err := os.Stat(envFile); !os.IsNotExist(err) {
		t.Errorf("env file left behind: %v", err)
	}
	if _, err := pgx.Connect(ctx, printed["PGTMP_DSN"]+"?sslmode=disable&connect_timeout=2"); err == nil {
		t.Errorf("server still accepts connections after pgtmp stopped")
	}
}
