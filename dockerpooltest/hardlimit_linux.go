package dockerpooltest

import "golang.org/x/sys/unix"

// hardLimit returns this process's hard limit of the resource named as in
// a Docker ulimit ("nofile", "nproc").
func hardLimit(name string) (int64, bool) {
	res := map[string]int{"nofile": unix.RLIMIT_NOFILE, "nproc": unix.RLIMIT_NPROC}[name]
	var rl unix.Rlimit
	if res == 0 || unix.Getrlimit(res, &rl) != nil || rl.Max > 1<<62 {
		return 0, false
	}
	return int64(rl.Max), true
}
