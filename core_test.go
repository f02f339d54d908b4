package dockerpool

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"
)

// The actor is tested at three levels, as the design note says:
//
//  1. the pure core (this file): build a state, apply messages through the
//     owner as run does, look at the replies, the Docker work started and
//     the snapshot (harness, helpers_internal_test.go);
//  2. the public methods' routing (routing_test.go): what they send to the
//     owner's channels, with no owner running;
//  3. the whole pool (owner, workers, event watcher) against the in-memory
//     fake Docker, under testing/synctest (pool_fake_test.go): virtual time,
//     and Docker calls that fail or block until the test releases them.

func TestCoreRefillsToMinIdleOnItsOwn(t *testing.T) {
	is := is.New(t)
	h := newHarness(t, limits{minIdle: 3, maxIdle: 5})
	is.Equal(h.count(taskCreate), 3) // three creations started at once
	h.finishAll(taskCreate)
	is.Equal(len(h.c.idle), 3)
	is.Equal(h.count(taskCreate), 0) // and no more
}

func TestCoreHandsOutTheMostRecentlyReturnedContainerFirst(t *testing.T) {
	is := is.New(t)
	h := newHarness(t, limits{minIdle: 2, maxIdle: 5})
	h.finishAll(taskCreate)
	a := got(t, h.acquire()).c
	b := got(t, h.acquire()).c
	h.finishAll(taskCreate) // refill replaced them
	is.NoErr(h.release(a, false))
	is.NoErr(h.release(b, false))
	is.Equal(got(t, h.acquire()).c.ID(), b.ID()) // LIFO: b came back last
	is.Equal(got(t, h.acquire()).c.ID(), a.ID())
}

func TestCoreCreatesForACallerWhoFindsNothingIdle(t *testing.T) {
	is := is.New(t)
	h := newHarness(t, limits{minIdle: 1, maxIdle: 2})
	reply := h.acquire() // the refill creation is still running
	is.True(pending(reply))
	is.Equal(h.count(taskCreate), 2) // refill's, and one for the caller
	is.Equal(h.c.creating[laneAcquire], 1)
	h.finish(taskCreate, nil) // the first to finish serves the caller
	r := got(t, reply)
	is.NoErr(r.err)
	is.Equal(r.c.ID(), "c1")
	is.Equal(h.c.st.EmptyAcquireCount, int64(1))
}

func TestCoreRemovesAReturnAboveMaxIdle(t *testing.T) {
	is := is.New(t)
	h := newHarness(t, limits{minIdle: 1, maxIdle: 1})
	h.finishAll(taskCreate)
	a := got(t, h.acquire()).c
	h.finishAll(taskCreate) // refill: one idle again
	is.NoErr(h.release(a, false))
	is.Equal(len(h.c.idle), 1)
	is.Equal(h.count(taskRemove), 1)
	rm := h.finish(taskRemove, nil)
	is.Equal(rm.id, a.ID())
	is.Equal(h.c.removedBy[ReasonTrim], int64(1))
}

func TestCoreRefusesASecondReturnAndChangesNothing(t *testing.T) {
	is := is.New(t)
	h := newHarness(t, limits{minIdle: 1, maxIdle: 3})
	h.finishAll(taskCreate)
	a := got(t, h.acquire()).c
	h.finishAll(taskCreate)
	is.NoErr(h.release(a, false))
	before := h.c.snapshot()
	err := h.release(a, false)
	is.True(errors.Is(err, ErrContainerReleased))
	is.Equal(h.c.snapshot(), before)
	// Even if it reached the owner (two handles racing), the owner refuses.
	reply := make(chan error, 1)
	h.send(releaseReq{id: a.id, lease: a.lease, reply: reply})
	is.True(errors.Is(<-reply, ErrContainerReleased))
	is.Equal(h.c.snapshot(), before)
}

func TestCoreRefusesAStaleHandleOfAContainerHeldByAnother(t *testing.T) {
	is := is.New(t)
	h := newHarness(t, limits{minIdle: 1, maxIdle: 3})
	h.finishAll(taskCreate)
	old := got(t, h.acquire()).c
	is.NoErr(h.release(old, false))
	cur := got(t, h.acquire()).c
	is.Equal(cur.ID(), old.ID()) // same container, new holder
	reply := make(chan error, 1)
	h.send(releaseReq{id: old.id, lease: old.lease, reply: reply})
	is.True(errors.Is(<-reply, ErrContainerReleased))
	is.Equal(len(h.c.leased), 1) // still leased to cur
	is.NoErr(h.release(cur, false))
}

func TestCoreTakesBackTheContainerOfACallerWhoGaveUpAfterTheReply(t *testing.T) {
	is := is.New(t)
	h := newHarness(t, limits{minIdle: 1, maxIdle: 3})
	h.finishAll(taskCreate)
	reply := h.acquire()
	is.Equal(len(reply), 1) // answered, but the caller never reads it
	h.send(cancelReq{reply: reply})
	is.Equal(len(h.c.leased), 0)
	is.Equal(len(h.c.idle), 1)
	is.Equal(h.c.idle[0].uses, 0) // never used
	is.Equal(h.c.st.CanceledAcquireCount, int64(1))
	is.Equal(h.c.st.AcquireCount, int64(0))
}

func TestCoreKeepsTheCreationOfACallerWhoGaveUp(t *testing.T) {
	is := is.New(t)
	h := newHarness(t, limits{minIdle: 1, maxIdle: 3, workers: [numLanes]int{1, 1}})
	h.finishAll(taskCreate)
	got(t, h.acquire()) // takes the idle one; refill starts
	reply := h.acquire()
	is.Equal(h.c.creating[laneAcquire], 1)
	h.send(cancelReq{reply: reply})
	is.Equal(h.c.liveWaiters, 0)
	is.Equal(h.c.creating[laneAcquire], 1) // already running: not cancelled
	h.finishAll(taskCreate)
	is.Equal(len(h.c.idle), 2) // both became idle
	is.True(pending(reply))
}

func TestCoreDropsQueuedCreationsWhenTheirCallersLeave(t *testing.T) {
	is := is.New(t)
	h := newHarness(t, limits{minIdle: 1, maxIdle: 3, workers: [numLanes]int{1, 1}})
	h.finishAll(taskCreate)
	got(t, h.acquire())
	var replies []chan acquireReply
	for range 5 {
		replies = append(replies, h.acquire())
	}
	is.Equal(h.c.creating[laneAcquire], 5) // one running, four queued
	for _, r := range replies {
		h.send(cancelReq{reply: r})
	}
	is.Equal(h.c.creating[laneAcquire], 1) // only the running one is left
}

func TestCoreServesWaitersInArrivalOrder(t *testing.T) {
	is := is.New(t)
	h := newHarness(t, limits{minIdle: 1, maxIdle: 4, maxSize: 2})
	h.finishAll(taskCreate)
	a := got(t, h.acquire()).c
	h.finishAll(taskCreate)
	b := got(t, h.acquire()).c
	is.Equal(h.count(taskCreate), 0) // at MaxSize: nothing more is created
	var replies []chan acquireReply
	for range 3 {
		replies = append(replies, h.acquire())
	}
	is.Equal(h.count(taskCreate), 0)
	is.NoErr(h.release(b, false))
	is.Equal(got(t, replies[0]).c.ID(), b.ID())
	is.True(pending(replies[1]))
	is.NoErr(h.release(a, false))
	is.Equal(got(t, replies[1]).c.ID(), a.ID())
	is.True(pending(replies[2]))
	is.Equal(h.c.st.WaitCount, int64(3))
}

func TestCoreAnswersOneCallerPerFailedCreationAndBacksOff(t *testing.T) {
	is := is.New(t)
	h := newHarness(t, limits{minIdle: 1, maxIdle: 2})
	boom := errors.New("boom")
	h.finish(taskCreate, boom) // the refill fails
	is.True(h.c.failing)
	is.Equal(len(h.notes), 1) // reported once; see the pool-level test for OnError
	// While failing, a caller with nothing idle is answered at once.
	r := got(t, h.acquire())
	is.True(errors.Is(r.err, ErrDaemonUnavailable))
	is.True(errors.Is(r.err, boom))
	// No refill before the backoff ends...
	is.Equal(h.count(taskCreate), 0)
	h.now = h.now.Add(100 * time.Millisecond)
	h.step()
	is.Equal(h.count(taskCreate), 1) // ...then one attempt
	h.finish(taskCreate, boom)
	h.now = h.now.Add(100 * time.Millisecond)
	h.step()
	is.Equal(h.count(taskCreate), 0) // the second wait is longer: 200ms
	h.now = h.now.Add(100 * time.Millisecond)
	h.step()
	is.Equal(h.count(taskCreate), 1)
	h.finish(taskCreate, nil) // Docker is back
	is.True(!h.c.failing)
}

func TestCoreGivesACreationFailureToTheOldestWaiterOnly(t *testing.T) {
	is := is.New(t)
	h := newHarness(t, limits{minIdle: 1, maxIdle: 2})
	h.finishAll(taskCreate)
	got(t, h.acquire())
	h.finish(taskCreate, nil) // refill
	got(t, h.acquire())
	r1, r2 := h.acquire(), h.acquire()
	is.Equal(h.c.creating[laneAcquire], 2)
	// Fail the first acquire-lane creation.
	h.finishWhere(func(t task) bool {
		ct, ok := t.(createTask)
		return ok && ct.ln == laneAcquire
	}, "acquire-lane create", errors.New("no space"))
	is.True(got(t, r1).err != nil)
	is.True(pending(r2)) // still has its own creation coming
}

func TestCoreShutdownAnswersWaitersAndRemovesIdleThenFinishes(t *testing.T) {
	is := is.New(t)
	h := newHarness(t, limits{minIdle: 1, maxIdle: 3})
	h.finishAll(taskCreate)
	held := got(t, h.acquire()).c // the refill's creation stays in flight
	waiter := h.acquire()
	is.True(pending(waiter))
	h.send(shutdownReq{})
	is.True(errors.Is(got(t, waiter).err, ErrPoolShutdown))
	is.True(errors.Is(got(t, h.acquire()).err, ErrPoolShutdown))
	h.finishAll(taskCreate) // creations in flight are removed when they land
	h.finishAll(taskRemove)
	is.Equal(h.c.phase, phaseDraining) // held is still out
	is.NoErr(h.release(held, false))
	h.finishAll(taskRemove)
	is.Equal(h.count(taskFinalize), 1)
	h.finish(taskFinalize, nil)
	is.Equal(h.c.phase, phaseStopped)
	is.Equal(len(h.c.known), 0)
}

func TestCoreForcedShutdownRemovesLeasedContainersAndRevokesHandles(t *testing.T) {
	is := is.New(t)
	h := newHarness(t, limits{minIdle: 1, maxIdle: 3})
	h.finishAll(taskCreate)
	held := got(t, h.acquire()).c
	h.send(shutdownReq{})
	h.finishAll(taskCreate)
	h.send(forceReq{})
	_, err := held.markReleased()
	is.True(errors.Is(err, ErrPoolShutdown))
	is.True(errors.Is(held.beginOp(), ErrPoolShutdown))
	h.finishAll(taskRemove)
	h.finish(taskFinalize, nil)
	is.Equal(h.c.phase, phaseStopped)
}

func TestCoreDropsAnIdleContainerThatDiesAndReplacesIt(t *testing.T) {
	is := is.New(t)
	h := newHarness(t, limits{minIdle: 1, maxIdle: 3})
	h.finishAll(taskCreate)
	id := h.c.idle[0].id
	h.send(eventMsg{id: id, action: "die", exitCode: "137"})
	is.Equal(len(h.c.idle), 0)
	is.Equal(h.count(taskCreate), 1) // replacement
	rm := h.finish(taskRemove, nil)
	is.Equal(rm.reason, ReasonDied)
}

func TestCoreMarksALeasedContainerThatDiesAndDiscardsItOnReturn(t *testing.T) {
	is := is.New(t)
	h := newHarness(t, limits{minIdle: 1, maxIdle: 3})
	h.finishAll(taskCreate)
	c := got(t, h.acquire()).c
	h.send(eventMsg{id: c.ID(), action: "die", exitCode: "137"})
	is.True(errors.Is(c.beginOp(), ErrContainerDead))
	is.NoErr(h.release(c, false))
	rm := h.finish(taskRemove, nil)
	is.Equal(rm.reason, ReasonDied)
}

func TestCoreRetiresALeasedContainerWhereAProcessWasOOMKilledForThatReason(t *testing.T) {
	is := is.New(t)
	h := newHarness(t, limits{minIdle: 1, maxIdle: 3})
	h.finishAll(taskCreate)
	c := got(t, h.acquire()).c
	h.send(eventMsg{id: c.ID(), action: "oom"}) // Podman says "died" and "remove"; Docker "oom"
	is.NoErr(c.beginOp())                       // the container still runs: its holder may go on
	c.endOp()
	is.True(c.Tainted())
	is.NoErr(h.release(c, false))
	is.Equal(h.finish(taskRemove, nil).reason, ReasonOutOfMemory) // but it is not reused, and Stats says why
	h.finishAll(taskCreate)
	h.send(eventMsg{id: h.c.idle[0].id, action: "died", exitCode: "137"})
	is.Equal(len(h.c.idle), 0) // Podman's name for die
}

func TestCoreTreatsAContainerThatExitsRightAfterItStartsAsAFailedCreation(t *testing.T) {
	is := is.New(t)
	h := newHarness(t, limits{minIdle: 1, maxIdle: 3})
	h.finishAll(taskCreate)
	// Killed from outside (SIGKILL, exit 137): an accident, not a crash loop.
	h.send(eventMsg{id: h.c.idle[0].id, action: "die", exitCode: "137"})
	is.True(!h.c.failing)
	h.finishAll(taskRemove)
	h.finishAll(taskCreate)
	// Exits on its own within seconds, never used: Cmd does not stay up.
	h.now = h.now.Add(time.Second)
	h.send(eventMsg{id: h.c.idle[0].id, action: "die", exitCode: "0"})
	is.True(h.c.failing)
	is.Equal(len(h.notes), 1)        // reported once
	is.Equal(h.count(taskCreate), 0) // refill backs off
	h.now = h.now.Add(100 * time.Millisecond)
	h.step()
	is.Equal(h.count(taskCreate), 1)
	h.finish(taskCreate, nil)
	is.True(h.c.failing) // a creation that succeeds proves nothing yet
	// It stays up for the crash window: the loop is over.
	h.now = h.now.Add(crashWindow)
	h.send(tickMsg{})
	is.True(!h.c.failing)
}

func TestCoreRemembersTheDeathOfAContainerWhoseCreationIsStillReporting(t *testing.T) {
	is := is.New(t)
	h := newHarness(t, limits{minIdle: 1, maxIdle: 3})
	h.send(eventMsg{id: "c1", action: "die", exitCode: "137"}) // before its create result
	h.finish(taskCreate, nil)                                  // c1
	is.Equal(len(h.c.idle), 0)
	is.Equal(h.finish(taskRemove, nil).reason, ReasonDied)
	is.Equal(h.count(taskCreate), 1) // replaced
}

func TestCoreChecksAContainerIdleLongEnoughToBeSuspect(t *testing.T) {
	is := is.New(t)
	h := newHarness(t, limits{minIdle: 1, maxIdle: 3, suspectIdle: time.Second})
	h.finishAll(taskCreate)
	h.now = h.now.Add(2 * time.Second)
	reply := h.acquire()
	is.True(pending(reply))
	is.Equal(h.count(taskCheck), 1)
	h.finish(taskCheck, fmt.Errorf("%w: exited", ErrContainerDead)) // it died unseen
	is.True(pending(reply))
	is.Equal(h.count(taskCreate) >= 1, true) // a creation for the caller
	h.finishAll(taskCreate)
	is.NoErr(got(t, reply).err)
}

func TestCoreHandsOutAnOldIdleContainerAtOnceWhenTheCheckIsOff(t *testing.T) {
	is := is.New(t)
	h := newHarness(t, limits{minIdle: 1, maxIdle: 3}) // suspectIdle 0: off
	h.finishAll(taskCreate)
	h.now = h.now.Add(time.Hour)
	is.NoErr(got(t, h.acquire()).err)
	is.Equal(h.count(taskCheck), 0)
}

func TestCoreKeepsASuspectContainerWhenOnlyTheDaemonFailedToAnswer(t *testing.T) {
	is := is.New(t)
	h := newHarness(t, limits{minIdle: 1, maxIdle: 3, suspectIdle: time.Second})
	h.finishAll(taskCreate)
	h.now = h.now.Add(2 * time.Second)
	reply := h.acquire()
	h.finish(taskCheck, errors.New("Cannot connect to the Docker daemon"))
	is.True(errors.Is(got(t, reply).err, ErrDaemonUnavailable)) // the caller hears the truth
	is.Equal(len(h.c.idle), 1)                                  // and the warm container is kept
	is.Equal(h.count(taskRemove), 0)
}

func TestCoreRecyclesByUsesLifetimeAndIdleTime(t *testing.T) {
	is := is.New(t)
	h := newHarness(t, limits{minIdle: 1, maxIdle: 3, maxUses: 2, maxIdleTime: time.Minute})
	h.finishAll(taskCreate)
	for i := range 2 {
		c := got(t, h.acquire()).c
		is.Equal(c.ID(), "c1")
		h.finishAll(taskCreate)
		is.NoErr(h.release(c, false))
		if i == 0 {
			// c1 is on top again; remove the refill's spare so c1 is next.
			is.Equal(h.c.idle[len(h.c.idle)-1].id, "c1")
		}
	}
	rm := h.finish(taskRemove, nil)
	is.Equal(rm.reason, ReasonMaxUses)
	// Idle time: nothing used for a minute is removed on the tick.
	h.now = h.now.Add(time.Minute)
	h.send(tickMsg{})
	is.Equal(len(h.c.idle), 0)
	for h.count(taskRemove) > 0 {
		is.Equal(h.finish(taskRemove, nil).reason, ReasonIdleTime)
	}
	h.finishAll(taskCreate)

	// Lifetime, with its jitter of at most 10%.
	h = newHarness(t, limits{minIdle: 3, maxIdle: 3, maxLifetime: time.Hour})
	h.finishAll(taskCreate)
	h.now = h.now.Add(53 * time.Minute)
	h.send(tickMsg{})
	is.Equal(len(h.c.idle), 3) // not yet: 53 min < 60 min - 10%
	h.now = h.now.Add(7 * time.Minute)
	h.send(tickMsg{})
	is.Equal(len(h.c.idle), 0)
	for range 3 {
		is.Equal(h.finish(taskRemove, nil).reason, ReasonLifetime)
	}
	// One that is in use when it expires goes at Return.
	h.finishAll(taskCreate)
	c := got(t, h.acquire()).c
	h.now = h.now.Add(time.Hour)
	is.NoErr(h.release(c, false))
	is.Equal(h.finish(taskRemove, nil).reason, ReasonLifetime)
}

func TestCoreTakingBackAWaitedGrantUndoesEveryCounterItMoved(t *testing.T) {
	is := is.New(t)
	h := newHarness(t, limits{minIdle: 1, maxIdle: 3})
	h.finishAll(taskCreate)
	got(t, h.acquire()) // takes the idle one at once
	before := h.c.snapshot()
	reply := h.acquire() // nothing idle: waits for a creation
	h.now = h.now.Add(50 * time.Millisecond)
	h.finish(taskCreate, nil) // served after 50ms of waiting; never read
	is.Equal(h.c.st.EmptyAcquireCount, before.EmptyAcquireCount+1)
	is.Equal(h.c.st.WaitDuration, before.WaitDuration+50*time.Millisecond)
	h.send(cancelReq{reply: reply})
	after := h.c.snapshot()
	is.Equal(after.AcquireCount, before.AcquireCount)
	is.Equal(after.AcquireDuration, before.AcquireDuration)
	is.Equal(after.EmptyAcquireCount, before.EmptyAcquireCount)
	is.Equal(after.WaitDuration, before.WaitDuration)
	is.Equal(after.CanceledAcquireCount, before.CanceledAcquireCount+1)
	is.Equal(after.WaitCount, before.WaitCount+1) // it did wait
}

func TestCoreAdoptsThroughTheOwnerWithTheSameLifetimeJitterAsCreations(t *testing.T) {
	is := is.New(t)
	c := newCore(limits{minIdle: 1, maxIdle: 4, maxLifetime: time.Hour, workers: [numLanes]int{10, 10}, refillInterval: time.Second}, 1, nil)
	h := &harness{t: t, c: c, now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	h.o = newOwner(c, h, nil)
	created := h.now.Add(-time.Minute)
	reply := make(chan struct{})
	h.send(adoptReq{reply: reply, found: []adoptee{
		{id: "a", created: created, ok: true},
		{id: "b", created: created, ok: true},
		{id: "c", created: created, ok: true},
		{id: "used", created: created, ok: false},
	}})
	<-reply // answered by the owner
	is.Equal(len(c.idle), 3)
	is.Equal(c.st.Adopted, int64(3))
	is.Equal(h.count(taskRemove), 1) // the used one
	is.Equal(h.count(taskCreate), 0) // MinIdle met by adoption
	expires := map[time.Time]bool{}
	for _, s := range c.idle {
		is.True(!s.expires.Before(created.Add(54*time.Minute)) && !s.expires.After(created.Add(time.Hour)))
		expires[s.expires] = true
	}
	is.True(len(expires) > 1) // they do not all expire together
}

func TestOwnerPanicsWhenUsedOffItsGoroutineInDebugBuilds(t *testing.T) {
	is := is.New(t)
	h := newHarness(t, limits{minIdle: 1, maxIdle: 2})
	recovered := make(chan any, 1)
	go func() {
		defer func() { recovered <- recover() }()
		h.o.handle(nudge{}, h.now)
	}()
	select {
	case r := <-recovered:
		is.True(r != nil && strings.Contains(fmt.Sprint(r), "off the owner goroutine"))
	case <-time.After(10 * time.Second):
		t.Fatal("the goroutine using the owner never finished")
	}
}
