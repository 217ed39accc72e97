// Package cpulimit says how many CPUs this process may keep busy: the CPUs
// its scheduler affinity allows (taskset, cpusets), capped by the CPU
// bandwidth quota of its cgroup and of the cgroups above it (cgroup v2
// cpu.max, v1 cpu.cfs_quota_us over cpu.cfs_period_us: a container's CPU
// limit). pgmoat sizes its event loops by it rather than by
// runtime.NumCPU, which sees only the affinity, or by GOMAXPROCS, which an
// operator may set for other reasons.
//
// On other systems, and where the files cannot be read, the affinity (or
// runtime.NumCPU) is the answer and there is no quota.
package cpulimit
