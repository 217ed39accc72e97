package main

import (
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/pgmoat/pgmoat/internal/pgtest"
)

func main() {
	port := flag.Int("port", 0, "TCP port on 127.0.0.1 (0: a free one)")
	dir := flag.String("dir", "", "directory for the cluster (default: a new temporary directory)")
	keep := flag.Bool("keep", false, "keep the directory at exit (and shut down cleanly)")
	envFile := flag.String("env-file", "", "also write the PGTMP_* lines, shell-quoted, to this file once ready; removed at exit")
	flag.StringVar(envFile, "print-env-file", "", "same as -env-file")
	settings := map[string]string{}
	flag.Func("set", "extra postgresql.conf `name=value` (repeatable; quote strings: -set \"work_mem='64MB'\")", func(s string) error {
		k, v, ok := strings.Cut(s, "=")
		if !ok || strings.TrimSpace(k) == "" {
			return fmt.Errorf("want name=value, got %q", s)
		}
		settings[strings.TrimSpace(k)] = strings.TrimSpace(v)
		return nil
	})
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "pgtmp: unexpected arguments %q\n", flag.Args())
		os.Exit(2)
	}
	os.Exit(run(pgtest.Options{Port: *port, Dir: *dir, Keep: *keep, Settings: settings}, *envFile))
}

func run(opts pgtest.Options, envFile string) int {
	// Subscribe before starting, so that a signal during the start-up
	// still stops the cluster.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)

	c, err := pgtest.Start(opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgtmp: %v\n", err)
		return 1
	}
	code := 0
	lines := envLines(c)
	// The file first: a reader of stdout may go straight for it.
	if envFile != "" {
		if err := writeEnvFile(envFile, lines); err != nil {
			fmt.Fprintf(os.Stderr, "pgtmp: %v\n", err)
			c.Stop()
			return 1
		}
	}
	for _, l := range lines {
		fmt.Printf("%s=%s\n", l[0], l[1])
	}
	fmt.Fprintf(os.Stderr, "pgtmp: PostgreSQL ready on %s (log: %s); Ctrl-C stops it\n", c.Addr(), c.LogFile)

	sig := <-sigs
	fmt.Fprintf(os.Stderr, "pgtmp: %v: stopping\n", sig)
	if envFile != "" {
		_ = os.Remove(envFile)
	}
	if err := c.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "pgtmp: stopping: %v\n", err)
		code = 1
	}
	return code
}

// envLines are the values pgtmp announces, in a stable order.
func envLines(c *pgtest.Cluster) [][2]string {
	ca := c.CAFile
	if strings.Trim(ca, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-") != "" {
		ca = url.QueryEscape(ca) // keep the usual path readable
	}
	up := url.URL{Scheme: "postgres", Host: c.Addr(), RawQuery: "sslmode=verify-full&sslrootcert=" + ca}
	return [][2]string{
		// For clients: the superuser, TLS if the client prefers it.
		{"PGTMP_DSN", c.SuperConnString("postgres")},
		// For pgmoat's --upstream: address and verified TLS only; user
		// and database come from each client.
		{"PGTMP_UPSTREAM", up.String()},
		{"PGTMP_HOST", c.Host},
		{"PGTMP_PORT", strconv.Itoa(c.Port)},
		{"PGTMP_USER", c.Superuser},
		{"PGTMP_PASSWORD", c.SuperPassword},
		{"PGTMP_CAFILE", c.CAFile},
		{"PGTMP_CERTFILE", c.ServerCertFile},
		{"PGTMP_KEYFILE", c.ServerKeyFile},
		{"PGTMP_DIR", c.Dir},
		{"PGTMP_LOG", c.LogFile},
		{"PGTMP_BINDIR", c.BinDir},
		{"PGTMP_PID", strconv.Itoa(os.Getpid())},
	}
}

// writeEnvFile writes lines as a POSIX shell fragment. It writes a
// temporary file and renames it so a reader never sees half of it.
func writeEnvFile(path string, lines [][2]string) error {
	var b strings.Builder
	for _, l := range lines {
		fmt.Fprintf(&b, "%s='%s'\n", l[0], strings.ReplaceAll(l[1], "'", `'\''`))
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".pgtmp-env-*")
	if err != nil {
		return err
	}
	if _, err := tmp.WriteString(b.String()); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), path)
}
