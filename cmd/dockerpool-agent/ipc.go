package main

import (
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"unsafe"
)

// A kernel without /proc/sysvipc (gVisor) still has System V IPC: the
// objects cannot be listed, but the *_INFO calls count them, and their ids
// are small numbers given out in order. The reset removes what it finds by
// trying ids and trusts only the counts: an object it did not find is
// reported, and the container is not reused.

// The ctl commands that count a kind's objects (linux/ipc.h, shm.h, msg.h,
// sem.h).
const (
	shmInfo = 14 // SHM_INFO: struct shm_info, shm_tot (pages) at byte 8
	msgInfo = 12 // MSG_INFO: struct msginfo, msgpool (queues) at byte 0
	semInfo = 19 // SEM_INFO: struct seminfo, semusz (sets) at byte 28
)

// maxProbedID bounds the ids tried: an object beyond it is reported.
const maxProbedID = 1 << 16

// ipcCount says how many objects of the kind exist (for shm, the pages
// they hold: zero exactly when there is none, since a segment has at least
// one). An error means the kernel cannot tell.
func ipcCount(kind string) (int64, error) {
	var buf [256]byte
	p := uintptr(unsafe.Pointer(&buf[0]))
	var e syscall.Errno
	switch kind {
	case "shm":
		_, _, e = syscall.Syscall(syscall.SYS_SHMCTL, 0, shmInfo, p)
		return int64(binary.LittleEndian.Uint64(buf[8:])), errnoErr(e)
	case "msg":
		_, _, e = syscall.Syscall(syscall.SYS_MSGCTL, 0, msgInfo, p)
		return int64(int32(binary.LittleEndian.Uint32(buf[0:]))), errnoErr(e)
	default:
		_, _, e = syscall.Syscall6(syscall.SYS_SEMCTL, 0, 0, semInfo, p, 0, 0)
		return int64(int32(binary.LittleEndian.Uint32(buf[28:]))), errnoErr(e)
	}
}

func errnoErr(e syscall.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

// removeUnlistedIPC removes the objects of a kernel without /proc/sysvipc
// by trying ids in order, and reports what it could not remove or count.
func removeUnlistedIPC() []string {
	var left []string
	for _, k := range sysvIPC {
		n, err := ipcCount(k.kind)
		for id := 0; err == nil && n > 0 && id < maxProbedID; id++ {
			_, _, _ = syscall.Syscall(k.ctl, uintptr(id), ipcRmid, 0)
			if id%64 == 63 {
				n, err = ipcCount(k.kind)
			}
		}
		if err == nil {
			n, err = ipcCount(k.kind)
		}
		switch {
		case err != nil:
			left = append(left, fmt.Sprintf("System V IPC %s objects cannot be listed or counted: %v", k.kind, err))
		case n > 0:
			left = append(left, fmt.Sprintf("System V IPC %s objects with ids the reset could not find", k.kind))
		}
	}
	return left
}

// unlistedQueues reports when POSIX message queues can exist but cannot be
// listed: without an mqueue mount (gVisor has none) mq_open still works.
func unlistedQueues(mqueueMounted bool) []string {
	if mqueueMounted {
		return nil
	}
	name, _ := syscall.BytePtrFromString("dockerpool-agent-probe-" + strconv.Itoa(os.Getpid()))
	fd, _, e := syscall.Syscall6(syscall.SYS_MQ_OPEN, uintptr(unsafe.Pointer(name)), syscall.O_CREAT|syscall.O_EXCL|syscall.O_RDWR, 0o600, 0, 0, 0)
	if e == syscall.ENOSYS {
		return nil // no message queues in this kernel
	}
	if e == 0 {
		_ = syscall.Close(int(fd))
		_, _, _ = syscall.Syscall(syscall.SYS_MQ_UNLINK, uintptr(unsafe.Pointer(name)), 0, 0)
	}
	return []string{"POSIX message queues cannot be listed: the container has no mqueue mount (gVisor has none)"}
}
