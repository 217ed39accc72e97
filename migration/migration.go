package migration

import (
	"fmt"
	"path/filepath"
	"strings"
)

// Direction is which way a section of a migration runs.
type Direction int

const (
	Up Direction = iota
	Down
	Verify
)

func (d Direction) String() string {
	switch d {
	case Down:
		return "down"
	case Verify:
		return "verify"
	}
	return "up"
}

// Format is a migration tool's file format.
type Format string

const (
	Auto          Format = "auto"
	Plain         Format = "plain"
	Goose         Format = "goose"
	GolangMigrate Format = "golang-migrate"
	Dbmate        Format = "dbmate"
	Flyway        Format = "flyway"
	Sqitch        Format = "sqitch"
	Liquibase     Format = "liquibase"
)

// Formats lists the formats a user may name.
var Formats = []Format{Auto, Plain, Goose, GolangMigrate, Dbmate, Flyway, Sqitch, Liquibase}

// ParseFormat returns the Format named s.
func ParseFormat(s string) (Format, error) {
	for _, f := range Formats {
		if string(f) == s {
			return f, nil
		}
	}
	names := make([]string, len(Formats))
	for i, f := range Formats {
		names[i] = string(f)
	}
	return "", fmt.Errorf("unknown migration format %q (want %s)", s, strings.Join(names, ", "))
}

// Section is the SQL one direction of a file runs: the file's text with
// everything else blanked, so that offsets are the file's.
type Section struct {
	Direction Direction
	SQL       string
}

// File is a migration file split by direction.
type File struct {
	Format   Format
	Sections []Section
}

// Section returns the section of direction d, and whether the file has
// one.
func (f *File) Section(d Direction) (Section, bool) {
	for _, s := range f.Sections {
		if s.Direction == d {
			return s, true
		}
	}
	return Section{}, false
}

// Read splits the text of the migration file at path (whose name and
// directories matter for some formats) in format (Auto: Detect).
func Read(path, text string, format Format) (*File, error) {
	if format == Auto || format == "" {
		format = Detect(path, text)
	}
	lines := splitLines(text)
	var dirs []Direction // per line
	switch format {
	case Plain:
		dirs = fill(len(lines), Up)
	case GolangMigrate:
		d := Up
		if strings.HasSuffix(strings.ToLower(filepath.Base(path)), ".down.sql") {
			d = Down
		}
		dirs = fill(len(lines), d)
	case Flyway:
		d := Up
		if strings.HasPrefix(filepath.Base(path), "U") {
			d = Down
		}
		dirs = fill(len(lines), d)
	case Sqitch:
		dirs = fill(len(lines), sqitchDirection(path))
	case Goose:
		dirs = annotated(lines, gooseMarker)
	case Dbmate:
		dirs = annotated(lines, dbmateMarker)
	case Liquibase:
		return readLiquibase(lines), nil
	default:
		return nil, fmt.Errorf("unknown migration format %q", format)
	}
	f := &File{Format: format}
	for _, d := range []Direction{Up, Down, Verify} {
		if sql, ok := keep(lines, dirs, d); ok {
			f.Sections = append(f.Sections, Section{Direction: d, SQL: cleanPsql(sql)})
		}
	}
	return f, nil
}

// Detect names the format of the file at path from its name, its
// directory and its annotations.
func Detect(path, text string) Format {
	base := filepath.Base(path)
	lower := strings.ToLower(base)
	switch {
	case strings.HasSuffix(lower, ".up.sql") || strings.HasSuffix(lower, ".down.sql"):
		return GolangMigrate
	case isFlywayName(base):
		return Flyway
	case sqitchDirection(path) != noDirection:
		return Sqitch
	}
	for _, l := range splitLines(text) {
		t := strings.TrimSpace(l)
		if _, ok := gooseMarker(t); ok {
			return Goose
		}
		if _, ok := dbmateMarker(t); ok {
			return Dbmate
		}
	}
	for _, l := range splitLines(text) {
		if t := strings.TrimSpace(l); t != "" {
			if isLiquibaseHeader(t) {
				return Liquibase
			}
			break
		}
	}
	return Plain
}

const noDirection Direction = -1

// sqitchDirection returns the direction of a sqitch script from the
// directory it is in (deploy, revert, verify), or noDirection.
func sqitchDirection(path string) Direction {
	switch filepath.Base(filepath.Dir(filepath.Clean(path))) {
	case "deploy":
		return Up
	case "revert":
		return Down
	case "verify":
		return Verify
	}
	return noDirection
}

// isFlywayName reports whether base is a Flyway SQL migration name:
// V<version>__<desc>.sql, U<version>__<desc>.sql or R__<desc>.sql.
func isFlywayName(base string) bool {
	if !strings.HasSuffix(strings.ToLower(base), ".sql") || len(base) < 4 {
		return false
	}
	switch base[0] {
	case 'R':
		return strings.HasPrefix(base, "R__")
	case 'V', 'U':
		ver, _, ok := strings.Cut(base[1:], "__")
		if !ok || ver == "" {
			return false
		}
		for _, c := range ver {
			if (c < '0' || c > '9') && c != '.' && c != '_' {
				return false
			}
		}
		return true
	}
	return false
}

// annotated assigns each line the direction of the last marker above it
// (lines before the first marker run in no direction; the tools ignore
// them). Marker lines themselves are comments and run nowhere.
func annotated(lines []string, marker func(string) (Direction, bool)) []Direction {
	dirs := make([]Direction, len(lines))
	cur := noDirection
	for i, l := range lines {
		if d, ok := marker(strings.TrimSpace(l)); ok {
			cur = d
			dirs[i] = noDirection
			continue
		}
		dirs[i] = cur
	}
	return dirs
}

// gooseMarker recognises goose's -- +goose Up and -- +goose Down.
func gooseMarker(t string) (Direction, bool) {
	rest, ok := strings.CutPrefix(t, "--")
	if !ok {
		return 0, false
	}
	f := strings.Fields(rest)
	if len(f) < 2 || !strings.EqualFold(f[0], "+goose") {
		return 0, false
	}
	switch strings.ToLower(f[1]) {
	case "up":
		return Up, true
	case "down":
		return Down, true
	}
	return 0, false
}

// dbmateMarker recognises dbmate's -- migrate:up and -- migrate:down
// (options such as transaction:false may follow).
func dbmateMarker(t string) (Direction, bool) {
	rest, ok := strings.CutPrefix(t, "--")
	if !ok {
		return 0, false
	}
	f := strings.Fields(rest)
	if len(f) == 0 {
		return 0, false
	}
	switch f[0] {
	case "migrate:up":
		return Up, true
	case "migrate:down":
		return Down, true
	}
	return 0, false
}

func fill(n int, d Direction) []Direction {
	out := make([]Direction, n)
	for i := range out {
		out[i] = d
	}
	return out
}

// splitLines splits text after each newline (the last line may lack one).
func splitLines(text string) []string {
	return strings.SplitAfter(text, "\n")
}

// keep returns the text with every line whose direction is not d blanked,
// and whether any line is d's.
func keep(lines []string, dirs []Direction, d Direction) (string, bool) {
	var b strings.Builder
	any := false
	for i, l := range lines {
		if dirs[i] == d {
			b.WriteString(l)
			if strings.TrimSpace(l) != "" {
				any = true
			}
			continue
		}
		b.WriteString(blank(l))
	}
	return b.String(), any
}

// blank replaces every byte of s but newlines with a space, so that what
// follows keeps its line, column and offset.
func blank(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c != '\n' && c != '\r' {
			b[i] = ' '
		}
	}
	return string(b)
}
