package main

import (
	"strings"
	"testing"
)

func TestHugePagesSetting(t *testing.T) {
	for _, c := range []struct {
		free, size int64
		want       string
		why        string
	}{
		{0, 0, "off", "offers none"},
		{10, 2048, "off", "20 MiB of huge pages free, 512 needed"},
		{255, 2048, "off", "510 MiB"},
		{256, 2048, "try", "on (2048 kB pages)"},
		{1, 1048576, "try", "on (1048576 kB pages)"},
	} {
		got, why := hugePagesSetting(c.free, c.size)
		if got != c.want || !strings.Contains(why, c.why) {
			t.Errorf("hugePagesSetting(%d, %d) = %q, %q; want %q and a reason with %q", c.free, c.size, got, why, c.want, c.why)
		}
	}
}
