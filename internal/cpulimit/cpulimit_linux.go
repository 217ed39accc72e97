package cpulimit

import (
	"bufio"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// affinity is the number of CPUs in the process's scheduler affinity
// mask; 0 if it cannot be read.
func affinity() int {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return 0
	}
	return set.Count()
}

// quota is the smallest CPU bandwidth quota, in CPUs, of the process's CPU
// cgroup and its ancestors up to the root of the hierarchy's mount; 0 when
// none has one. root prefixes every path read (tests give a directory
// laid out like /).
func quota(root string) float64 {
	dir, version, ok := cgroupDir(root)
	if !ok {
		return 0
	}
	q := 0.0
	for {
		if v := readQuota(filepath.Join(root, dir.mount, dir.rel), version); v > 0 && (q == 0 || v < q) {
			q = v
		}
		if dir.rel == "/" || dir.rel == "" {
			return q
		}
		dir.rel = path.Dir(dir.rel)
	}
}

// cgroupPath is a cgroup directory: where its hierarchy is mounted, and
// its path below that mount.
type cgroupPath struct{ mount, rel string }

// cgroupDir finds the process's CPU cgroup: the cgroup v1 hierarchy with
// the cpu controller if there is one, else the v2 (unified) hierarchy.
func cgroupDir(root string) (cgroupPath, int, bool) {
	f, err := os.Open(filepath.Join(root, "/proc/self/cgroup"))
	if err != nil {
		return cgroupPath{}, 0, false
	}
	defer f.Close()
	var v1, v2 string
	haveV1, haveV2 := false, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// hierarchy-ID:controller-list:cgroup-path
		id, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		ctrls, p, ok := strings.Cut(rest, ":")
		if !ok {
			continue
		}
		switch {
		case id == "0" && ctrls == "":
			v2, haveV2 = p, true
		case hasWord(ctrls, ",", "cpu"):
			v1, haveV1 = p, true
		}
	}
	if haveV1 {
		if m, ok := mountOf(root, "cgroup", v1); ok {
			return m, 1, true
		}
	}
	if haveV2 {
		if m, ok := mountOf(root, "cgroup2", v2); ok {
			return m, 2, true
		}
	}
	return cgroupPath{}, 0, false
}

// mountOf finds where the hierarchy of fstype (cgroup with the cpu
// controller, or cgroup2) holding cgroup p is mounted, and p's path below
// it.
func mountOf(root, fstype, p string) (cgroupPath, bool) {
	f, err := os.Open(filepath.Join(root, "/proc/self/mountinfo"))
	if err != nil {
		return cgroupPath{}, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root mount-point options [optional...] - fstype source super-options
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		a, b := strings.Fields(pre), strings.Fields(post)
		if len(a) < 5 || len(b) < 3 || b[0] != fstype {
			continue
		}
		if fstype == "cgroup" && !hasWord(b[2], ",", "cpu") {
			continue
		}
		mroot, mpoint := unescape(a[3]), unescape(a[4])
		switch {
		case mroot == "/":
			return cgroupPath{mount: mpoint, rel: p}, true
		case p == mroot:
			return cgroupPath{mount: mpoint, rel: "/"}, true
		case strings.HasPrefix(p, mroot+"/"):
			return cgroupPath{mount: mpoint, rel: p[len(mroot):]}, true
		}
	}
	return cgroupPath{}, false
}

// readQuota reads a cgroup directory's quota in CPUs; 0 for none (or
// unreadable).
func readQuota(dir string, version int) float64 {
	if version == 2 {
		b, err := os.ReadFile(filepath.Join(dir, "cpu.max"))
		if err != nil {
			return 0
		}
		f := strings.Fields(string(b)) // "max 100000" or "150000 100000"
		if len(f) != 2 || f[0] == "max" {
			return 0
		}
		q, err1 := strconv.ParseFloat(f[0], 64)
		p, err2 := strconv.ParseFloat(f[1], 64)
		if err1 != nil || err2 != nil || q <= 0 || p <= 0 {
			return 0
		}
		return q / p
	}
	q, err1 := readInt(filepath.Join(dir, "cpu.cfs_quota_us"))
	p, err2 := readInt(filepath.Join(dir, "cpu.cfs_period_us"))
	if err1 != nil || err2 != nil || q <= 0 || p <= 0 {
		return 0 // -1: no quota
	}
	return float64(q) / float64(p)
}

func readInt(file string) (int64, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

func hasWord(list, sep, w string) bool {
	for _, x := range strings.Split(list, sep) {
		if x == w {
			return true
		}
	}
	return false
}

// unescape undoes mountinfo's octal escapes of spaces, tabs, newlines and
// backslashes in paths.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
