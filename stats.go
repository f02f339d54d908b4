package dockerpool

import "time"

// RemoveReason says why the pool removed a container.
type RemoveReason int

// The reasons a container leaves the pool.
const (
	// ReasonTrim: returned or created while MaxIdle containers were idle.
	ReasonTrim RemoveReason = iota
	// ReasonMaxUses: handed out Config.MaxUses times.
	ReasonMaxUses
	// ReasonLifetime: older than Config.MaxLifetime.
	ReasonLifetime
	// ReasonIdleTime: idle longer than Config.MaxIdleTime.
	ReasonIdleTime
	// ReasonDied: stopped, OOM-killed or removed behind the pool's back.
	ReasonDied
	// ReasonTainted: an exec timed out, hit its limit or was still running at
	// Return, and the pool could not prove that nothing of it survived.
	ReasonTainted
	// ReasonResetFailed: Config.OnReturn returned an error.
	ReasonResetFailed
	// ReasonUser: the holder called Remove.
	ReasonUser
	// ReasonShutdown: removed by Shutdown.
	ReasonShutdown
	// ReasonStale: found at New from an earlier process, but stopped, made
	// from another configuration, already used, or beyond MaxIdle.
	ReasonStale
	// ReasonFailedStart: created, but it could not be started.
	ReasonFailedStart
	// ReasonOutOfMemory: the kernel's OOM killer killed a process in it (the
	// container's memory limit).
	ReasonOutOfMemory
	// ReasonResetUnverified: Config.VerifiedReset could not prove it as
	// good as new (a process or file of another user, a write to the
	// layer...).
	ReasonResetUnverified
	// ReasonEvicted: idle in a Group's member, removed to make room for a
	// template that needed a container (or warmth) at the group's MaxSize.
	ReasonEvicted
	numReasons
)

var reasonNames = [numReasons]string{
	"trim", "max-uses", "lifetime", "idle-time", "died", "tainted",
	"reset-failed", "user", "shutdown", "stale", "failed-start", "out-of-memory",
	"reset-unverified", "evicted",
}

// RemoveReasons returns every reason a container leaves a pool for, in the
// order of their values: the keys of Stats.RemovedBy.
func RemoveReasons() []RemoveReason {
	rs := make([]RemoveReason, numReasons)
	for i := range rs {
		rs[i] = RemoveReason(i)
	}
	return rs
}

// String returns the reason's short name, as used in logs.
func (r RemoveReason) String() string {
	if r >= 0 && r < numReasons {
		return reasonNames[r]
	}
	return "unknown"
}

// Stats is a snapshot of a pool, in the spirit of sql.DBStats. Counters are
// cumulative since New.
type Stats struct {
	Idle     int // containers ready on the idle stack
	InUse    int // containers held by callers
	Creating int // creations queued or running
	Removing int // removals queued or running
	Checking int // idle containers being checked or reset before reuse
	Waiting  int // Acquire calls waiting for a container
	Total    int // Idle + InUse + Creating + Removing + Checking

	AcquireCount         int64         // successful Acquire calls
	AcquireDuration      time.Duration // their total time in the pool
	EmptyAcquireCount    int64         // successful Acquires that had to wait (nothing was idle)
	ColdAcquireCount     int64         // successful Acquires served by a container made for them (a cold start)
	CanceledAcquireCount int64         // Acquires whose ctx ended while they waited
	WaitCount            int64         // Acquires that found nothing idle and waited
	WaitDuration         time.Duration // total time waited by the successful ones

	Created      int64 // containers created and started
	CreateErrors int64 // creations that failed
	Adopted      int64 // containers taken over from an earlier process at New
	Removed      int64 // containers removed, all reasons together
	// RemovedBy counts the removals by reason. Every reason of
	// RemoveReasons is a key, with zero when nothing was removed for it.
	RemovedBy map[RemoveReason]int64
	// RemoveErrors counts removal attempts that failed (they are retried).
	RemoveErrors int64

	// DaemonHealthy is false while Docker calls fail; Acquire then fails fast
	// with ErrDaemonUnavailable when nothing is idle.
	DaemonHealthy bool
}
