// Command ipctool makes and removes System V IPC objects and POSIX message
// queues, for the tests of the verified reset: the busybox test image has
// no ipcmk or ipcrm. Run as "ipcrm" it removes objects as ipcrm does
// (ipcrm -m|-q|-s <id>); as "ipctool make" it makes one of each kind and a
// message queue /dockerpool-test; "ipctool nnp" prints the process's
// no_new_privs bit.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"unsafe"
)

const (
	ipcCreat = 0o1000
	ipcRmid  = 0
	ipcPriv  = 0

	prGetNoNewPrivs = 39
)

func main() {
	if filepath.Base(os.Args[0]) == "ipcrm" {
		os.Exit(ipcrm(os.Args[1:]))
	}
	if len(os.Args) == 2 && os.Args[1] == "nnp" {
		// gVisor's /proc/self/status has no NoNewPrivs line: ask prctl.
		r, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, prGetNoNewPrivs, 0, 0)
		if e != 0 {
			fmt.Fprintln(os.Stderr, "ipctool: prctl(PR_GET_NO_NEW_PRIVS):", e)
			os.Exit(1)
		}
		fmt.Println(r)
		return
	}
	if len(os.Args) != 2 || os.Args[1] != "make" {
		fmt.Fprintln(os.Stderr, "usage: ipctool make|nnp")
		os.Exit(2)
	}
	if err := mk(); err != nil {
		fmt.Fprintln(os.Stderr, "ipctool:", err)
		os.Exit(1)
	}
}

func mk() error {
	if _, _, e := syscall.Syscall(syscall.SYS_SHMGET, ipcPriv, 4096, ipcCreat|0o666); e != 0 {
		return fmt.Errorf("shmget: %v", e)
	}
	q, _, e := syscall.Syscall(syscall.SYS_MSGGET, ipcPriv, ipcCreat|0o666, 0)
	if e != 0 {
		return fmt.Errorf("msgget: %v", e)
	}
	msg := struct {
		mtype int64
		text  [16]byte
	}{mtype: 1}
	copy(msg.text[:], "a secret")
	if _, _, e := syscall.Syscall6(syscall.SYS_MSGSND, q, uintptr(unsafe.Pointer(&msg)), 16, 0, 0, 0); e != 0 {
		return fmt.Errorf("msgsnd: %v", e)
	}
	if _, _, e := syscall.Syscall(syscall.SYS_SEMGET, ipcPriv, 1, ipcCreat|0o666); e != 0 {
		return fmt.Errorf("semget: %v", e)
	}
	name, _ := syscall.BytePtrFromString("dockerpool-test")
	fd, _, e := syscall.Syscall6(syscall.SYS_MQ_OPEN, uintptr(unsafe.Pointer(name)), syscall.O_CREAT|syscall.O_RDWR, 0o666, 0, 0, 0)
	if e != 0 {
		return fmt.Errorf("mq_open: %v", e)
	}
	return syscall.Close(int(fd))
}

func ipcrm(args []string) int {
	if len(args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: ipcrm -m|-q|-s id")
		return 2
	}
	id, err := strconv.Atoi(args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "ipcrm:", err)
		return 2
	}
	ctl := map[string]uintptr{"-m": syscall.SYS_SHMCTL, "-q": syscall.SYS_MSGCTL, "-s": syscall.SYS_SEMCTL}[args[0]]
	if ctl == 0 {
		fmt.Fprintln(os.Stderr, "ipcrm: unknown kind", args[0])
		return 2
	}
	if _, _, e := syscall.Syscall(ctl, uintptr(id), ipcRmid, 0); e != 0 {
		fmt.Fprintln(os.Stderr, "ipcrm:", e)
		return 1
	}
	return 0
}
