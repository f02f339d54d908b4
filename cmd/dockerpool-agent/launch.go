package main

import (
	"fmt"
	"os"
	"strconv"
	"syscall"

	"github.com/dockerpool/dockerpool/internal/agentproto"
)

// launchArg, as the first argument, makes the agent a launcher: it lowers
// its resource limits and executes a command, which inherits them (and so
// does every process it starts). The agent runs it, as the command's user,
// for an Exec with MaxFileSize or MaxOpenFiles.
//
//	dockerpool-agent -launch <fsize> <nofile> <path> <argv...>
const launchArg = "-dockerpool-launch"

// selfPath is the agent's own executable, for the launcher.
var selfPath = "/proc/self/exe"

func init() {
	if p, err := os.Executable(); err == nil {
		selfPath = p
	}
}

// launch is the launcher's whole life; it never returns.
func launch(args []string) {
	if len(args) < 4 {
		fmt.Fprintln(os.Stderr, "dockerpool-agent: launcher: missing arguments")
		os.Exit(126)
	}
	for _, l := range []struct {
		resource int
		value    string
	}{{syscall.RLIMIT_FSIZE, args[0]}, {syscall.RLIMIT_NOFILE, args[1]}} {
		n, err := strconv.ParseUint(l.value, 10, 64)
		if err != nil || n == 0 {
			continue
		}
		if err := syscall.Setrlimit(l.resource, &syscall.Rlimit{Cur: n, Max: n}); err != nil {
			fmt.Fprintf(os.Stderr, "dockerpool-agent: set limit %d to %d: %v\n", l.resource, n, err)
			os.Exit(126)
		}
	}
	err := syscall.Exec(args[2], args[3:], os.Environ())
	fmt.Fprintf(os.Stderr, "exec: %q: %v\n", args[3], err)
	if err == syscall.ENOENT {
		os.Exit(127)
	}
	os.Exit(126)
}

// checkLimits refuses limits above what the container allows: they could
// only be raised with privileges the agent lacks, and lowering them is the
// point.
func checkLimits(m agentproto.ExecMsg) *startError {
	for _, l := range []struct {
		name     string
		resource int
		want     uint64
	}{{"MaxFileSize", syscall.RLIMIT_FSIZE, uint64(max(m.MaxFileSize, 0))}, {"MaxOpenFiles", syscall.RLIMIT_NOFILE, uint64(max(m.MaxOpenFiles, 0))}} {
		var cur syscall.Rlimit
		if l.want == 0 || syscall.Getrlimit(l.resource, &cur) != nil {
			continue
		}
		if l.want > cur.Max {
			return &startError{code: -1, msg: fmt.Sprintf("%s %d is above the container's hard limit %d: it can only be lowered", l.name, l.want, cur.Max)}
		}
	}
	return nil
}
