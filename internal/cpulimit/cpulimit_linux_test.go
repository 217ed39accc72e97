package cpulimit

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// fakeRoot lays out files under a temporary directory as they would be
// under /.
func fakeRoot(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, content := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

const (
	mountsV2 = "24 1 0:21 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
	mountsV1 = "25 24 0:22 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n" +
		"26 24 0:23 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct\n"
)

func TestQuota(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  float64
	}{
		{"v2 container limit", map[string]string{
			"/proc/self/cgroup":                        "0::/kubepods/pod1/ctr\n",
			"/proc/self/mountinfo":                     mountsV2,
			"/sys/fs/cgroup/kubepods/pod1/ctr/cpu.max": "150000 100000\n",
			"/sys/fs/cgroup/kubepods/pod1/cpu.max":     "max 100000\n",
		}, 1.5},
		{"v2 limit on a parent, a looser one below", map[string]string{
			"/proc/self/cgroup":          "0::/a/b\n",
			"/proc/self/mountinfo":       mountsV2,
			"/sys/fs/cgroup/a/b/cpu.max": "800000 100000\n",
			"/sys/fs/cgroup/a/cpu.max":   "400000 100000\n",
			"/sys/fs/cgroup/cpu.max":     "max 100000\n",
		}, 4},
		{"v2 no limit", map[string]string{
			"/proc/self/cgroup":      "0::/\n",
			"/proc/self/mountinfo":   mountsV2,
			"/sys/fs/cgroup/cpu.max": "max 100000\n",
		}, 0},
		{"v2 namespaced: the mount's root is the cgroup", map[string]string{
			"/proc/self/cgroup":      "0::/docker/abc\n",
			"/proc/self/mountinfo":   "30 1 0:21 /docker/abc /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
			"/sys/fs/cgroup/cpu.max": "200000 100000\n",
		}, 2},
		{"v1 quota", map[string]string{
			"/proc/self/cgroup":                              "5:memory:/x\n4:cpu,cpuacct:/x\n0::/\n",
			"/proc/self/mountinfo":                           mountsV1,
			"/sys/fs/cgroup/cpu,cpuacct/x/cpu.cfs_quota_us":  "250000\n",
			"/sys/fs/cgroup/cpu,cpuacct/x/cpu.cfs_period_us": "100000\n",
		}, 2.5},
		{"v1 no quota (-1), as on this machine", map[string]string{
			"/proc/self/cgroup":                            "4:cpu,cpuacct:/\n",
			"/proc/self/mountinfo":                         mountsV1,
			"/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us":  "-1\n",
			"/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n",
		}, 0},
		{"no cgroup files", map[string]string{}, 0},
		{"a cgroup outside the mount", map[string]string{
			"/proc/self/cgroup":    "0::/elsewhere\n",
			"/proc/self/mountinfo": "30 1 0:21 /docker/abc /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
		}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := quota(fakeRoot(t, tc.files)); got != tc.want {
				t.Errorf("quota = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestCPUs(t *testing.T) {
	for _, tc := range []struct {
		l    Limits
		want int
	}{
		{Limits{Affinity: 16}, 16},
		{Limits{Affinity: 16, Quota: 2}, 2},
		{Limits{Affinity: 16, Quota: 2.1}, 3},
		{Limits{Affinity: 2, Quota: 8}, 2},
		{Limits{Affinity: 4, Quota: 0.5}, 1},
		{Limits{}, 1},
	} {
		if got := tc.l.CPUs(); got != tc.want {
			t.Errorf("%+v: CPUs = %d, want %d", tc.l, got, tc.want)
		}
	}
}

// TestReadAffinity: the affinity is the mask taskset sets, not the
// machine's CPU count.
func TestReadAffinity(t *testing.T) {
	l := Read()
	if l.Affinity < 1 || l.Affinity > runtime.NumCPU() {
		t.Errorf("affinity %d on a machine with %d CPUs", l.Affinity, runtime.NumCPU())
	}
	if l.Affinity < 2 {
		t.Skip("one CPU: nothing to narrow")
	}
	// The mask is per thread (taskset sets every thread's): narrow this
	// one's to a single CPU while it reads.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var old, one unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		t.Fatal(err)
	}
	for cpu := 0; cpu < 1024; cpu++ {
		if old.IsSet(cpu) {
			one.Set(cpu)
			break
		}
	}
	if err := unix.SchedSetaffinity(0, &one); err != nil {
		t.Fatal(err)
	}
	defer unix.SchedSetaffinity(0, &old)
	if got := Read(); got.Affinity != 1 || got.CPUs() != 1 {
		t.Errorf("under a one-CPU mask: %+v, %d CPUs", got, got.CPUs())
	}
}

func TestUnescape(t *testing.T) {
	if got := unescape(`/sys/fs/cgroup/a\040b`); got != "/sys/fs/cgroup/a b" {
		t.Errorf("unescape = %q", got)
	}
}
