package config

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// running is a complete configuration, as pgmoat would be running it.
const running = `listen: 127.0.0.1:6432
admin:
  listen: 127.0.0.1:6433
  tokens:
    - {name: oncall, role: approver, token_env: PGMOAT_TOKEN_ONCALL}
    - {name: dashboards, role: viewer, token_env: PGMOAT_TOKEN_VIEWER}
policy:
  protect:
    - public.users
    - billing.*
  rules:
    - name: migrations-need-approval
      match:
        applications: [goose, migrate]
      operations: [destructive]
      action: hold
    - name: analytics-refresh
      match:
        users: [analytics]
      operations: [truncate]
      action: log
holds:
  timeout: 15m
  approvals_required: 2
`

func mustLoad(t *testing.T, yaml string) *Config {
	t.Helper()
	cfg, err := Load("pgmoat.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestEmptyFileRefused: a file with nothing in it is an error everywhere
// (start, reload, check), not a configuration that protects nothing.
func TestEmptyFileRefused(t *testing.T) {
	for _, data := range []string{"", "\n\n", "# only a comment\n", "~\n", "null\n", "---\n"} {
		_, err := Load("pgmoat.yaml", []byte(data))
		if !errors.Is(err, ErrEmpty) || !strings.Contains(err.Error(), "pgmoat.yaml: ") {
			t.Errorf("%q: err = %v, want ErrEmpty naming the file", data, err)
		}
	}
	if _, err := Load("pgmoat.yaml", []byte("{}\n")); err != nil {
		t.Errorf("{} (every default, on purpose): %v", err)
	}
}

// TestReloadRefusesTruncatedFiles cuts the running file after each of its
// lines. Every cut that loses a guarded section is refused, naming it.
// A cut inside the last section keeps every section, so no rule on the
// file's shape can tell it from an edit: its diff must then say that it
// lowers protection (here, the approvals it loses).
func TestReloadRefusesTruncatedFiles(t *testing.T) {
	run := mustLoad(t, running).Protection()
	lines := strings.SplitAfter(strings.TrimSuffix(running, "\n"), "\n")
	refused := 0
	for n := 1; n < len(lines); n++ {
		cut := strings.Join(lines[:n], "")
		next, err := Load("pgmoat.yaml", []byte(cut))
		if err != nil {
			refused++ // not a valid configuration at all
			continue
		}
		changes, err := CheckReload(run, next.Protection())
		var te *TruncatedError
		switch {
		case err == nil && !Lowers(changes):
			t.Errorf("file cut after line %d accepted without lowering protection (changes %v):\n%s", n, changes, cut)
		case err == nil:
			if len(next.Protection().Stated) != len(GuardedSections) {
				t.Errorf("file cut after line %d accepted without every guarded section:\n%s", n, cut)
			}
		case !errors.As(err, &te) || !slices.Contains(GuardedSections, te.Key):
			t.Errorf("cut after line %d: err = %v, want a TruncatedError naming a guarded section", n, err)
		default:
			refused++
		}
	}
	if refused < len(lines)-2 {
		t.Errorf("only %d of %d cuts refused", refused, len(lines)-1)
	}
}

func TestReloadRule(t *testing.T) {
	run := mustLoad(t, running).Protection()
	for _, tc := range []struct {
		name    string
		next    string
		missing string   // the TruncatedError's key; "" when accepted
		changes []string // with " (lowers protection)" where it does
	}{
		{name: "same file", next: running},
		{
			name:    "no policy section",
			next:    running[:strings.Index(running, "policy:")] + "holds: {}\n",
			missing: "policy",
		},
		{
			name:    "policy cut after its key",
			next:    running[:strings.Index(running, "policy:")] + "policy:\n",
			missing: "policy",
		},
		{
			name:    "protect key with nothing after it",
			next:    running[:strings.Index(running, "    - public.users")],
			missing: "policy.protect",
		},
		{
			name:    "tokens dropped",
			next:    strings.Replace(running, "  tokens:\n    - {name: oncall, role: approver, token_env: PGMOAT_TOKEN_ONCALL}\n    - {name: dashboards, role: viewer, token_env: PGMOAT_TOKEN_VIEWER}\n", "", 1),
			missing: "admin.tokens",
		},
		{
			name: "protection turned off on purpose",
			next: running[:strings.Index(running, "policy:")] + "policy: {protect: [], rules: []}\nholds:\n  timeout: 15m\n  approvals_required: 2\n",
			changes: []string{
				"protection removed: public.users (lowers protection)",
				"protection removed: billing.* (lowers protection)",
				"rule migrations-need-approval removed (was: hold destructive for applications [goose, migrate])",
				"rule analytics-refresh removed (was: log truncate for users [analytics])",
			},
		},
		{
			name: "hold turned into allow, approvals lowered, approver added",
			next: strings.NewReplacer(
				"      action: hold", "      action: allow",
				"approvals_required: 2", "approvals_required: 1",
				"    - {name: dashboards, role: viewer, token_env: PGMOAT_TOKEN_VIEWER}\n",
				"    - {name: dashboards, role: viewer, token_env: PGMOAT_TOKEN_VIEWER}\n    - {name: intern, role: approver, token_env: X}\n",
			).Replace(running),
			changes: []string{
				"rule migrations-need-approval: hold → allow (lowers protection)",
				"holds.approvals_required: 2 → 1 (lowers protection)",
				"admin token intern (approver) added (lowers protection)",
			},
		},
		{
			name: "stronger: a table added, log turned into block, a token removed",
			next: strings.NewReplacer(
				"    - billing.*\n", "    - billing.*\n    - public.orders\n",
				"      action: log", "      action: block",
				"    - {name: dashboards, role: viewer, token_env: PGMOAT_TOKEN_VIEWER}\n", "",
			).Replace(running),
			changes: []string{
				"protection added: public.orders",
				"rule analytics-refresh: log → block",
				"admin token dashboards (viewer) removed",
			},
		},
		{
			name: "a weak rule widened and moved ahead",
			next: strings.NewReplacer(
				"    - name: migrations-need-approval\n      match:\n        applications: [goose, migrate]\n      operations: [destructive]\n      action: hold\n", "",
				"      action: log\n", "      action: log\n    - name: migrations-need-approval\n      match:\n        applications: [goose, migrate, psql]\n      operations: [destructive]\n      action: hold\n",
			).Replace(running),
			changes: []string{
				"rule analytics-refresh moved ahead of rule migrations-need-approval (lowers protection)",
				"rule migrations-need-approval: match applications [goose, migrate] → applications [goose, migrate, psql] (lowers protection)",
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			next := mustLoad(t, tc.next).Protection()
			changes, err := CheckReload(run, next)
			if tc.missing != "" {
				var te *TruncatedError
				if !errors.As(err, &te) || te.Key != tc.missing {
					t.Fatalf("err = %v, want a TruncatedError for %s", err, tc.missing)
				}
				if !strings.Contains(err.Error(), EmptyForm[tc.missing]) {
					t.Errorf("error %q does not say how to remove %s on purpose", err, tc.missing)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, c := range changes {
				got = append(got, c.String())
			}
			slices.Sort(got)
			want := slices.Clone(tc.changes)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("changes:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
			}
			if (run.Hash() == next.Hash()) != (len(changes) == 0) {
				t.Errorf("hash %s → %s with %d changes", run.Hash(), next.Hash(), len(changes))
			}
		})
	}
}

// TestHashIgnoresHowTheFileIsWritten: absent and empty lists, defaults
// written out or left out, token order: the same protection, the same hash.
func TestHashIgnoresHowTheFileIsWritten(t *testing.T) {
	a := mustLoad(t, "policy: {protect: [public.users]}\n").Protection()
	b := mustLoad(t, "policy:\n  protect:\n    - public.users\n  rules: []\nholds:\n  timeout: 15m\nadmin: {tokens: []}\n").Protection()
	if a.Hash() != b.Hash() {
		t.Errorf("hash %s != %s for the same protection", a.Hash(), b.Hash())
	}
	c := mustLoad(t, "policy: {protect: [public.users, billing.*]}\n").Protection()
	if a.Hash() == c.Hash() {
		t.Error("a protect pattern more did not change the hash")
	}
}
