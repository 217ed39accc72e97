package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestConfigCheckValidFile(t *testing.T) {
	out, errOut, code := runCLI(t, "", "config", "check", exampleConfig)
	if code != 0 || !strings.Contains(out, "pgmoat.yaml: valid; policy ") || !strings.Contains(out, "protects public.users, billing.*") {
		t.Errorf("exit %d\n%s%s", code, out, errOut)
	}
}

func TestConfigCheckRefusesEmptyAndInvalidFiles(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"empty.yaml":   "",
		"comment.yaml": "# policy: {protect: [public.users]}\n",
		"typo.yaml":    "policy:\n  protekt: [public.users]\n",
	} {
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		out, errOut, code := runCLI(t, "", "config", "check", f)
		if code != 2 || !strings.Contains(errOut, f) || out != "" {
			t.Errorf("%s: exit %d, want 2 naming the file\nstdout: %s\nstderr: %s", name, code, out, errOut)
		}
	}
}

func TestConfigCheckJSONAndUsage(t *testing.T) {
	out, _, code := runCLI(t, "", "config", "check", exampleConfig, "--format", "json")
	var rep configReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 0 || !rep.Valid || len(rep.Hash) != 16 {
		t.Errorf("exit %d, %v: %s", code, err, out)
	}
	for _, args := range [][]string{{"config"}, {"config", "lint"}, {"config", "check"}, {"config", "check", "a", "b"}, {"config", "check", exampleConfig, "--format", "xml"}} {
		if _, _, code := runCLI(t, "", args...); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
	// Nothing listens on port 1: the comparison cannot be made.
	if _, errOut, code := runCLI(t, "", "config", "check", exampleConfig, "--against", "http://127.0.0.1:1"); code != 3 || !strings.Contains(errOut, "cannot compare") {
		t.Errorf("--against an unreachable instance: exit %d, want 3\n%s", code, errOut)
	}
}
