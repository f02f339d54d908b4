package dockerpool

import (
	"strings"

	"github.com/docker/docker/api/types/container"
)

// SandboxUser is the user ("uid:gid") that untrusted commands should run as:
// nobody and nogroup on Debian, Alpine and busybox images. Being numeric it
// needs no /etc/passwd entry, so it works in any image, though files the
// image only lets root read or execute stay out of reach, and a working
// directory owned by root is not writable. Set it on the containers with
// Config.ContainerConfig.User (the main process and every Exec then run as
// it), or per command with ExecOptions.User.
//
// Root in a container is root on the host's kernel unless the daemon remaps
// users (userns-remap, rootless Docker or Podman): with the capabilities the
// preset drops it is much weaker, but it still owns every root-owned file it
// can reach. A non-root user removes that too.
const SandboxUser = "65534:65534"

// Defaults of SandboxOptions, applied to its zero fields.
const (
	DefaultSandboxMemory    = 256 << 20     // bytes, swap included
	DefaultSandboxNanoCPUs  = 1_000_000_000 // one CPU
	DefaultSandboxPidsLimit = 128
	DefaultSandboxTmpfsSize = "64m"
)

// SandboxOptions sizes the limits of SandboxHostConfig. The zero value gives
// the defaults; a negative number turns that limit off (not advised).
type SandboxOptions struct {
	// Memory caps the container's memory in bytes: every process, the page
	// cache it dirties and the files it writes to /tmp (a tmpfs is memory).
	// Swap is not allowed on top (MemorySwap is set equal). A command that
	// goes over is killed by the kernel's OOM killer (exit code 137); the
	// container and its main process, which are tiny, normally survive, but
	// Docker reports an "oom" event on which the pool retires the container.
	// Before the kill, the kernel first evicts the programs' pages and reads
	// them back, which can stall the command for seconds (up to half a
	// minute was seen on cgroup v1): bound it with ExecOptions.Timeout.
	// Default DefaultSandboxMemory (256 MiB).
	Memory int64
	// NanoCPUs caps the CPU time, in billionths of a CPU: 1e9 is one CPU,
	// 5e8 half of one. The command is throttled, not killed: bound run time
	// with ExecOptions.Timeout. Needs the kernel's CFS bandwidth control.
	// Default DefaultSandboxNanoCPUs (one CPU).
	NanoCPUs int64
	// PidsLimit caps the processes and threads that exist at once in the
	// container, the init process, the main process and zombies included,
	// which defuses fork bombs: past it fork fails with EAGAIN. Keep some
	// room above what a command needs: when a command leaves the container
	// full, the pool may be unable to start its kill script after a timeout,
	// and then removes the container instead of reusing it
	// (Container.Tainted). Runtimes that start many threads (the JVM, Go,
	// .NET) need a few hundred.
	// Default DefaultSandboxPidsLimit (128).
	PidsLimit int64
	// TmpfsSize is the size of the writable /tmp, in the tmpfs size= syntax:
	// bytes with an optional k, m or g suffix ("64m"), or a percentage of the
	// host's memory ("10%"). It counts against Memory.
	// Default DefaultSandboxTmpfsSize (64 MiB).
	TmpfsSize string
	// Runtime is the OCI runtime of the containers, for a stronger kernel
	// boundary than runc's: "runsc" is gVisor, which puts a kernel of its own
	// (in user space) between the untrusted code and the host's. The daemon
	// must have it registered (daemon.json "runtimes"; with NetworkMode
	// "none", runsc needs runtimeArgs ["--network=none"]): New checks, and
	// names the runtimes the daemon has when it is missing. Default: the
	// daemon's default runtime (runc).
	//
	// Under gVisor (a Runtime whose name contains "runsc" or "gvisor") the
	// host's PIDs limit cannot count the sandbox's processes: it counts
	// gVisor's own threads and stub processes, about a dozen per sandboxed
	// process on its ptrace platform, and gVisor crashes, taking the whole
	// container, when the host refuses it one (gVisor issue 2490). The
	// preset then enforces PidsLimit inside the sandbox, as an RLIMIT_NPROC
	// of that size, which gVisor's kernel counts per sandbox (fork fails
	// with EAGAIN, as under runc), and sets the host's PIDs limit to
	// RunscHostPids(PidsLimit), a backstop with room for gVisor itself.
	Runtime string
	// TmpfsNoExec mounts /tmp noexec. The default allows running files from
	// /tmp, since the root is read-only and judges commonly compile there;
	// noexec only stops direct execution (sh /tmp/x or an interpreter still
	// run it), so it is defence in depth, not a boundary.
	TmpfsNoExec bool
}

// SandboxHostConfig returns a HostConfig for containers that run untrusted
// code; put it in Config.HostConfig, and pair it with SandboxUser:
//
//	cfg := dockerpool.Config{
//		Name:            "judge",
//		Network:         dockerpool.NetworkConfig{Name: "none"},
//		Image:           dockerpool.ImageConfig{Name: "judge-image:1"},
//		ContainerConfig: &container.Config{User: dockerpool.SandboxUser},
//		HostConfig:      dockerpool.SandboxHostConfig(dockerpool.SandboxOptions{}),
//		MaxUses:         1,
//	}
//
// The result is a fresh value that the caller may adjust (another
// NetworkMode, a Runtime, more mounts). It sets:
//
//   - CapDrop ALL: no Linux capability, even for root in the container: no
//     chown or setuid, no raw sockets, no mounts, no bypassing of file
//     permissions, no kill of other users' processes.
//   - SecurityOpt no-new-privileges: execve never raises privileges (set-uid
//     binaries, file capabilities); /proc/self/status shows NoNewPrivs 1.
//   - The daemon's default seccomp profile is left in force.
//   - ReadonlyRootfs, with a writable tmpfs on /tmp (mode 1777, nosuid,
//     nodev, exec allowed unless TmpfsNoExec, sized TmpfsSize): nothing
//     written can outlive the container or change the image's programs.
//     /dev/shm (64 MiB, noexec) and /dev/mqueue stay writable, as Docker
//     mounts them.
//   - PidsLimit, Memory with MemorySwap equal to it (no swap), NanoCPUs: see
//     SandboxOptions.
//   - A core size limit of zero: a crashing command writes no core file, and
//     host core handlers that honour the limit (systemd-coredump) keep none.
//   - NetworkMode "none": the container has a loopback interface only; any
//     other address is unreachable at once. The pool's network is then not
//     attached, but Config.Network.Name is still required: "none" does.
//   - IpcMode "private": System V IPC and /dev/shm are the container's own.
//   - Init true: an init process (docker-init, tini) runs as PID 1 and reaps
//     the zombies that orphaned processes become, which would otherwise pile
//     up against PidsLimit while the container is reused.
//
// Not set: a user (it belongs to the container.Config: see SandboxUser), a
// disk quota other than the tmpfs size (the root is read-only), the process
// count per user (RLIMIT_NPROC counts the user's processes in every container
// of the host, so it would couple unrelated containers; except under gVisor,
// whose kernel counts them per sandbox: see Runtime), time limits (use
// ExecOptions.Timeout) and output limits (ExecOptions.Limit).
//
// What the preset is not: a virtual machine. It asks the daemon for
// restrictions that the Linux kernel enforces, and the container shares the
// host's kernel, so a kernel bug reachable through an allowed system call is
// a way out. The default seccomp profile, which the preset keeps (it never
// sets seccomp=unconfined), blocks a few dozen rarely needed system calls,
// which narrows that surface without closing it. For hostile code, run the
// daemon itself in a VM, or add gVisor (SandboxOptions.Runtime "runsc") on
// top of the preset.
//
// Reuse: containers serve one Acquire after another unless Config.MaxUses
// is 1, and between two holders the pool kills and wipes nothing by itself
// unless asked: a background process that a finished command left behind
// (its output redirected, so that the command could end), files in /tmp and
// /dev/shm, and System V IPC objects would all stay for the next holder.
// When the holders do not trust each other, set Config.VerifiedReset (every
// Return kills, empties and checks, and a container it cannot vouch for is
// removed) or MaxUses 1 (each caller gets a fresh warm container).
func SandboxHostConfig(opts SandboxOptions) *container.HostConfig {
	memory := orDefault(opts.Memory, DefaultSandboxMemory)
	pids := orDefault(opts.PidsLimit, DefaultSandboxPidsLimit)
	tmpfsSize := opts.TmpfsSize
	if tmpfsSize == "" {
		tmpfsSize = DefaultSandboxTmpfsSize
	}
	tmpfs := "rw,exec,nosuid,nodev,size=" + tmpfsSize + ",mode=1777"
	if opts.TmpfsNoExec {
		tmpfs = "rw,noexec,nosuid,nodev,size=" + tmpfsSize + ",mode=1777"
	}
	yes := true
	hc := &container.HostConfig{
		NetworkMode:    "none",
		IpcMode:        "private",
		CapDrop:        []string{"ALL"},
		SecurityOpt:    []string{"no-new-privileges"},
		ReadonlyRootfs: true,
		Tmpfs:          map[string]string{"/tmp": tmpfs},
		Init:           &yes,
		Runtime:        opts.Runtime,
		Resources: container.Resources{
			Memory:     memory,
			MemorySwap: memory,
			NanoCPUs:   orDefault(opts.NanoCPUs, DefaultSandboxNanoCPUs),
			Ulimits:    []*container.Ulimit{{Name: "core", Soft: 0, Hard: 0}},
		},
	}
	switch {
	case pids > 0 && isGVisor(opts.Runtime):
		hc.Ulimits = append(hc.Ulimits, &container.Ulimit{Name: "nproc", Soft: pids, Hard: pids})
		host := RunscHostPids(pids)
		hc.PidsLimit = &host
	case pids > 0:
		hc.PidsLimit = &pids
	}
	return hc
}

// RunscHostPids is the host's PIDs limit SandboxHostConfig sets under
// gVisor for a PidsLimit of pids: gVisor's own tasks (about forty) and about
// a dozen host tasks per sandboxed process, with room to spare, so that the
// limit inside the sandbox is reached first.
func RunscHostPids(pids int64) int64 { return 64 + 16*pids }

// isGVisor says whether the runtime is gVisor's, by its registered name.
func isGVisor(runtime string) bool {
	r := strings.ToLower(runtime)
	return strings.Contains(r, "runsc") || strings.Contains(r, "gvisor")
}

// orDefault returns v, def when v is zero, or 0 (no limit) when v is
// negative.
func orDefault(v, def int64) int64 {
	switch {
	case v == 0:
		return def
	case v < 0:
		return 0
	}
	return v
}
