package config

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Duration is a time.Duration written in YAML as a Go duration string
// ("30s", "15m").
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: invalid duration %q (want e.g. 30s, 5m)", n.Line, s)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// String returns the duration in Go notation.
func (d Duration) String() string { return time.Duration(d).String() }

// Std returns d as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// ByteSize is a size in bytes, written in YAML as an integer or with a unit
// ("64MiB", "1MB", "512KiB").
type ByteSize int64

var byteUnits = map[string]int64{
	"": 1, "b": 1,
	"kb": 1000, "mb": 1000 * 1000, "gb": 1000 * 1000 * 1000,
	"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30,
	"k": 1 << 10, "m": 1 << 20, "g": 1 << 30,
}

var byteSizeRE = regexp.MustCompile(`^\s*([0-9]+)\s*([A-Za-z]*)\s*$`)

// UnmarshalYAML implements yaml.Unmarshaler.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	m := byteSizeRE.FindStringSubmatch(s)
	if m == nil {
		return fmt.Errorf("line %d: invalid size %q (want e.g. 1048576, 64MiB)", n.Line, s)
	}
	mult, ok := byteUnits[strings.ToLower(m[2])]
	if !ok {
		return fmt.Errorf("line %d: invalid size unit %q (want B, KiB, MiB, GiB, KB, MB or GB)", n.Line, m[2])
	}
	v, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil || v > (1<<62)/mult {
		return fmt.Errorf("line %d: size %q out of range", n.Line, s)
	}
	*b = ByteSize(v * mult)
	return nil
}

// EventLoops is a number of event loop threads, written in YAML as a
// number or as "auto".
type EventLoops int

// EventLoopsAuto is the default number of event loops: one thread per two
// processors (GOMAXPROCS), at least one. A loop thread relays tens of
// thousands of turns a second, and the processors it leaves free run the
// analysis of new statements, holds, the audit log and PostgreSQL itself
// when it shares the machine; on pgbench -S through pgmoat on 2 cores, one
// loop spent 10% less CPU per transaction than two (bench/README.md).
const EventLoopsAuto EventLoops = -1

// maxEventLoops bounds limits.event_loops: far more threads than any
// machine has processors only cost descriptors and wake-ups.
const maxEventLoops = 1024

// ParseEventLoops parses "auto" or a number of threads (0: the loop off).
func ParseEventLoops(s string) (EventLoops, error) {
	if s == "auto" {
		return EventLoopsAuto, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > maxEventLoops {
		return 0, fmt.Errorf("invalid event loop count %q (want auto, or 0 to %d threads; 0 turns the event loop off)", s, maxEventLoops)
	}
	return EventLoops(n), nil
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (e *EventLoops) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := ParseEventLoops(s)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*e = v
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (e EventLoops) MarshalYAML() (any, error) {
	if e == EventLoopsAuto {
		return "auto", nil
	}
	return int(e), nil
}

// String returns "auto" or the number.
func (e EventLoops) String() string {
	if e == EventLoopsAuto {
		return "auto"
	}
	return strconv.Itoa(int(e))
}

// Threads returns the number of loop threads to run on procs processors.
func (e EventLoops) Threads(procs int) int {
	if e == EventLoopsAuto {
		return max(1, procs/2)
	}
	return int(e)
}

// yamlFieldRE extracts the key from yaml.v3's "field X not found in type Y".
var yamlFieldRE = regexp.MustCompile(`field (\S+) not found in type`)

// yamlErrorKey returns the offending key of a strict-decoding error, when the
// decoder names one.
func yamlErrorKey(err error) string {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		for _, e := range te.Errors {
			if m := yamlFieldRE.FindStringSubmatch(e); m != nil {
				return m[1]
			}
		}
	}
	return ""
}

// cleanYAMLError turns yaml.v3's multi-error text into one readable sentence.
func cleanYAMLError(err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs := make([]string, 0, len(te.Errors))
		for _, e := range te.Errors {
			if m := yamlFieldRE.FindStringSubmatch(e); m != nil {
				e = strings.Replace(e, m[0], "unknown key "+strconv.Quote(m[1])+" in", 1)
			}
			msgs = append(msgs, e)
		}
		return errors.New(strings.Join(msgs, "; "))
	}
	return err
}
