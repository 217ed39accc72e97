package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadGood(t *testing.T) {
	cfg, err := LoadFile("testdata/good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:7432" {
		t.Errorf("listen = %q", cfg.Listen)
	}
	want := Upstream{Host: "db.internal", Port: 5433, SSLMode: "require"}
	if cfg.UpstreamURL != want {
		t.Errorf("upstream = %+v, want %+v", cfg.UpstreamURL, want)
	}
	if cfg.Limits.MaxConnections != 200 || cfg.Limits.StartupTimeout.Std() != 5*time.Second || cfg.Limits.MaxMessageSize != 16<<20 || cfg.Limits.EventLoops != 3 {
		t.Errorf("limits = %+v", cfg.Limits)
	}
	// Keys the file leaves out keep their defaults, even inside a section it sets.
	def := Default()
	if cfg.Limits.ConnectTimeout != def.Limits.ConnectTimeout || cfg.Limits.DrainTimeout != def.Limits.DrainTimeout {
		t.Errorf("unset limits lost their defaults: %+v", cfg.Limits)
	}
	if cfg.Holds.PublicURL != "http://127.0.0.1:7433" {
		t.Errorf("holds.public_url default = %q", cfg.Holds.PublicURL)
	}
	if cfg.Holds.Timeout.Std() != 30*time.Minute || cfg.Holds.ApprovalsRequired != 2 || cfg.Holds.InTransaction != "block" {
		t.Errorf("holds = %+v", cfg.Holds)
	}
	if len(cfg.Admin.Tokens) != 2 || cfg.Admin.Tokens[1].TokenFile != "/run/secrets/pgmoat-viewer" {
		t.Errorf("tokens = %+v", cfg.Admin.Tokens)
	}
	if got := cfg.Policy.Rules[0].Match.Applications; len(got) != 2 || got[1] != "migrate" {
		t.Errorf("policy rule match = %v", got)
	}
	if cfg.Audit.Statements != "all" || cfg.Audit.QueueSize != def.Audit.QueueSize {
		t.Errorf("audit = %+v", cfg.Audit)
	}
}

// TestLoadEmptyMappingIsDefault: {} runs with every default (an empty
// file is refused: TestEmptyFileRefused).
func TestLoadEmptyMappingIsDefault(t *testing.T) {
	for _, data := range []string{"{}\n", "# every default, on purpose\n{}\n"} {
		cfg, err := Load("empty.yaml", []byte(data))
		if err != nil {
			t.Fatalf("%q: %v", data, err)
		}
		if cfg.Listen != "127.0.0.1:6432" || cfg.Admin.Listen != "127.0.0.1:6433" || cfg.UpstreamURL.Port != 5432 || cfg.UpstreamURL.SSLMode != "prefer" ||
			cfg.Limits.EventLoops != EventLoopsAuto {
			t.Errorf("%q: defaults not applied: %+v", data, cfg)
		}
	}
}

// TestLoadBad loads every testdata/bad-*.yaml and requires an error that
// names the file and contains the text of the matching .err file (which
// names the key).
func TestLoadBad(t *testing.T) {
	files, _ := filepath.Glob("testdata/bad-*.yaml")
	if len(files) == 0 {
		t.Fatal("no fixtures")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			want, err := os.ReadFile(strings.TrimSuffix(f, ".yaml") + ".err")
			if err != nil {
				t.Fatal(err)
			}
			_, err = LoadFile(f)
			if err == nil {
				t.Fatal("no error")
			}
			var ce *Error
			if !errors.As(err, &ce) || ce.File != f {
				t.Errorf("error %v does not name the file %s", err, f)
			}
			if !strings.Contains(err.Error(), strings.TrimSpace(string(want))) {
				t.Errorf("error:\n  %v\nwant it to contain:\n  %s", err, want)
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := LoadFile("testdata/nope.yaml")
	if err == nil || !strings.Contains(err.Error(), "testdata/nope.yaml") {
		t.Fatalf("err = %v", err)
	}
}

func TestParseUpstream(t *testing.T) {
	for in, want := range map[string]Upstream{
		"postgres://127.0.0.1:5432?sslmode=prefer":                {Host: "127.0.0.1", Port: 5432, SSLMode: "prefer"},
		"postgresql://db":                                         {Host: "db", Port: 5432, SSLMode: "prefer"},
		"postgres://[::1]:6000?sslmode=disable":                   {Host: "::1", Port: 6000, SSLMode: "disable"},
		"postgres://h/?sslmode=require&sslrootcert=/tmp/none.pem": {Host: "h", Port: 5432, SSLMode: "require", SSLRootCert: "/tmp/none.pem"},
	} {
		got, err := ParseUpstream(in)
		if err != nil {
			t.Errorf("%s: %v", in, err)
			continue
		}
		if got != want {
			t.Errorf("%s: got %+v, want %+v", in, got, want)
		}
	}
	for _, in := range []string{"postgres://h:0", "postgres://h:99999", "postgres://h?application_name=x", "postgres://h?sslmode=verify-full&sslrootcert=/nonexistent"} {
		if _, err := ParseUpstream(in); err == nil {
			t.Errorf("%s: no error", in)
		}
	}
}

// TestExampleConfigLoads keeps the shipped example valid: it is what
// `make run` and the Docker image start with.
func TestExampleConfigLoads(t *testing.T) {
	cfg, err := LoadFile("../examples/pgmoat.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.CompiledPolicy == nil || !cfg.CompiledPolicy.ProtectsAnything() {
		t.Fatal("example policy protects nothing")
	}
}

func TestEventLoops(t *testing.T) {
	for _, c := range []struct {
		yaml  string
		want  EventLoops
		procs int
		n     int
	}{
		{"auto", EventLoopsAuto, 8, 4},
		{"auto", EventLoopsAuto, 1, 1},
		{"0", 0, 8, 0},
		{"2", 2, 8, 2},
	} {
		cfg, err := Load("loops.yaml", []byte("limits:\n  event_loops: "+c.yaml+"\n"))
		if err != nil {
			t.Fatalf("%s: %v", c.yaml, err)
		}
		if got := cfg.Limits.EventLoops; got != c.want || got.Threads(c.procs) != c.n || got.String() != c.yaml {
			t.Errorf("event_loops: %s = %v, %d threads on %d CPUs; want %v, %d", c.yaml, got, got.Threads(c.procs), c.procs, c.want, c.n)
		}
	}
}
