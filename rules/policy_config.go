package rules

// PolicyConfig is the `policy` section of pgmoat's configuration file, as
// decoded from YAML. Compile validates it and turns it into a Policy. Its
// JSON form is what the admin API's GET /api/v1/policy shows.
type PolicyConfig struct {
	// Protect lists object patterns ("schema.table", with * globs).
	Protect []string `yaml:"protect" json:"protect"`
	// Rules is the ordered rule list; the first rule that matches wins.
	Rules []RuleConfig `yaml:"rules" json:"rules"`
	// Limits bound the rows one statement run under guard may delete or
	// update in a protected table, by protect pattern ("default" for the
	// rest).
	Limits map[string]LimitsConfig `yaml:"limits" json:"limits,omitempty"`
}

// LimitsConfig is one entry of policy.limits. Unset fields take the
// default entry's value, or the built-in default.
type LimitsConfig struct {
	MaxRows     *int64   `yaml:"max_rows" json:"max_rows,omitempty"`
	MaxFraction *float64 `yaml:"max_fraction" json:"max_fraction,omitempty"`
}

// RuleConfig is one entry of policy.rules.
type RuleConfig struct {
	Name       string      `yaml:"name" json:"name"`
	Match      MatchConfig `yaml:"match" json:"match"`
	Operations []string    `yaml:"operations" json:"operations"`
	Action     string      `yaml:"action" json:"action"`
}

// MatchConfig selects the sessions a rule applies to. Empty lists match
// everything; within a list any entry may match; all non-empty lists must match.
type MatchConfig struct {
	Users        []string `yaml:"users" json:"users,omitempty"`
	Databases    []string `yaml:"databases" json:"databases,omitempty"`
	Applications []string `yaml:"applications" json:"applications,omitempty"`
	Clients      []string `yaml:"clients" json:"clients,omitempty"`
}
