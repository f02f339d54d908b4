package dockerpool

import (
	"cmp"
	"fmt"
	"slices"
	"time"
)

// budgetCore is the group's pure decision maker, as core is a pool's: it
// holds the accounting of one budget (MaxSize) over the member pools,
// takes their reports and the time, and returns what to send them
// (permits, evictions, warm targets). It does no I/O and touches no channel;
// the group owner (group_owner.go) carries its effects out. It knows members
// by number, not by template, so that one budgetCore per Docker host can
// share the same members' bookkeeping when a group spans hosts.
type budgetCore struct {
	maxSize  int
	maxMake  int // creations under way at a time (GroupConfig.MaxCreating)
	adaptive bool
	members  map[uint64]*groupMember
	ids      []uint64 // members in the order they were added: decisions are deterministic
	lastTick time.Time
	fx       []budgetFx

	evictWait, evictWarm int64 // evictions asked for a waiting caller, for warmth
}

// groupMember is the group's view of one member pool.
type groupMember struct {
	id               uint64
	template         string
	minIdle, maxIdle int
	retired          bool // replaced (Update) or removed: gets nothing more, leaves when stopped

	rep        budgetReport // the latest report
	granted    int64        // permits sent
	evictsSent int64        // evictions asked
	target     int          // warm target in force
	sentTarget int          // the last one sent

	// Demand, for adaptive warmth (group_warmth.go).
	rate    float64 // acquires per second, smoothed over rateTau
	load    float64 // containers in use plus callers waiting, smoothed over loadTau
	share   int     // the containers the budget gives it, in use and idle
	seenAcq int64

	evictedWait, evictedWarm int64 // its containers evicted for others
}

// budgetFx is one thing to send to member id.
type budgetFx struct {
	id      uint64
	permits int  // > 0: a permitMsg
	evict   bool // an evictMsg
	warm    int  // >= 0: a warmMsg
}

func newBudgetCore(maxSize, maxMake int, adaptive bool) *budgetCore {
	return &budgetCore{maxSize: maxSize, maxMake: maxMake, adaptive: adaptive, members: map[uint64]*groupMember{}}
}

func (b *budgetCore) add(id uint64, template string, minIdle, maxIdle int) {
	m := &groupMember{id: id, template: template, minIdle: minIdle, maxIdle: maxIdle, target: minIdle, sentTarget: minIdle, share: minIdle}
	b.members[id] = m
	b.ids = append(b.ids, id)
}

// retire stops giving member id anything; it leaves once it has stopped
// and holds nothing.
func (b *budgetCore) retire(id uint64) {
	if m := b.members[id]; m != nil {
		m.retired = true
	}
}

func (m *groupMember) inflight() int { return int(m.granted - m.rep.grants) }
func (m *groupMember) held() int     { return m.rep.held + m.inflight() }
func (m *groupMember) pending() int  { return int(m.evictsSent - m.rep.evicts) }

// making counts the creations under way, and the permits on their way
// that will start one.
func (b *budgetCore) making() int {
	n := 0
	for _, m := range b.members {
		n += m.rep.creating + max(0, m.inflight())
	}
	return n
}

// used counts the permits out: the containers the members may have.
func (b *budgetCore) used() int {
	n := 0
	for _, m := range b.members {
		n += m.held()
	}
	return n
}

// claimed counts, in one pass, the permits out (used) and the creations
// the members' waiting callers asked for that no permit on its way covers
// yet: what a host's room is taken by.
func (b *budgetCore) claimed() int {
	n := 0
	for _, m := range b.members {
		n += m.held()
		if !m.retired {
			n += max(0, m.rep.wantWait-m.inflight())
		}
	}
	return n
}

// report takes a member's news and decides.
func (b *budgetCore) report(id uint64, r budgetReport, now time.Time) []budgetFx {
	b.fx = b.fx[:0]
	m := b.members[id]
	if m == nil {
		return nil
	}
	m.rep = r
	if m.retired && r.stopped && m.held() == 0 {
		delete(b.members, id)
		b.ids = slices.DeleteFunc(b.ids, func(x uint64) bool { return x == id })
	}
	b.decide()
	return b.fx
}

// tick updates the demand estimates and the warm targets, then decides.
func (b *budgetCore) tick(now time.Time) []budgetFx {
	b.fx = b.fx[:0]
	if !b.lastTick.IsZero() && now.After(b.lastTick) {
		dt := now.Sub(b.lastTick)
		for _, id := range b.ids {
			b.estimate(b.members[id], dt)
		}
		if b.adaptive {
			b.allocate()
		}
	}
	b.lastTick = now
	b.decide()
	return b.fx
}

// unit is one creation a waiting caller needs, with the caller's arrival.
type unit struct {
	m     *groupMember
	since time.Time
}

// decide hands out the room: first to waiting callers in arrival order,
// across members, evicting the least recently used idle container of
// another member when there is no room; then to warmth, from free room or
// from another member's idle containers above its own target.
func (b *budgetCore) decide() {
	if b.adaptive {
		b.retarget()
	}
	free := b.maxSize - b.used()
	coming := 0
	for _, id := range b.ids {
		coming += b.members[id].pending()
	}
	busy := b.making() + coming // creations under way or on their way
	for _, u := range b.waitUnits() {
		switch {
		case free > 0 && busy < b.maxMake:
			b.grant(u.m)
			free--
			busy++
		case coming > 0:
			coming-- // an eviction on its way frees room for this one
		case busy >= b.maxMake:
			// The daemon has its hands full: more creations at once would
			// only slow each one, and at the cap each costs a removal too,
			// while the callers' own returns may come first.
			if debugChecks {
				b.check()
			}
			return
		default:
			v := b.victim(u.m, true) // idle above its template's target first...
			if v == nil {
				v = b.victim(u.m, false) // ...then any
			}
			if v == nil {
				if debugChecks {
					b.check()
				}
				return // everything is in use: room comes with a Return
			}
			b.evict(v)
			v.evictedWait++
			b.evictWait++
			busy++
		}
	}
	if coming == 0 {
		b.warmUp(free, b.maxMake-busy)
	}
	if debugChecks {
		b.check()
	}
}

// check: the permits out never exceed the budget.
func (b *budgetCore) check() {
	if n := b.used(); n > b.maxSize {
		panic(fmt.Sprintf("internal error: group: %d permits out of %d", n, b.maxSize))
	}
}

// waitUnits lists the creations waiting callers need beyond the permits on
// their way, oldest caller first.
func (b *budgetCore) waitUnits() []unit {
	var us []unit
	for _, id := range b.ids {
		m := b.members[id]
		if m.retired {
			continue
		}
		for k := m.inflight(); k < m.rep.wantWait; k++ {
			var since time.Time
			if n := len(m.rep.waitSince); n > 0 {
				since = m.rep.waitSince[min(k, n-1)]
			}
			us = append(us, unit{m: m, since: since})
		}
	}
	slices.SortStableFunc(us, func(a, b unit) int { return a.since.Compare(b.since) })
	return us
}

// warmUp gives free room to the members below their warm target, the
// busiest first; with no free room, one member's idle container above its
// target goes for a member below its own.
func (b *budgetCore) warmUp(free, starts int) {
	var ms []*groupMember
	for _, id := range b.ids {
		if m := b.members[id]; !m.retired && m.wantWarm() > 0 {
			ms = append(ms, m)
		}
	}
	slices.SortStableFunc(ms, func(x, y *groupMember) int { return cmp.Compare(y.rate, x.rate) })
	for _, m := range ms {
		for k := m.wantWarm(); k > 0; k-- {
			if starts <= 0 {
				return
			}
			starts--
			if free == 0 {
				if v := b.warmVictim(m); v != nil {
					b.evict(v)
					v.evictedWarm++
					b.evictWarm++
				}
				return
			}
			b.grant(m)
			free--
		}
	}
}

// wantWarm: the warm creations a member asked for, beyond the permits on
// their way that waiting callers do not take.
func (m *groupMember) wantWarm() int {
	return m.rep.wantWarm - max(0, m.inflight()-m.rep.wantWait)
}

// victim picks the member whose idle container was used least recently,
// other than for; surplus: only among idle containers above their member's
// target.
func (b *budgetCore) victim(for_ *groupMember, surplus bool) *groupMember {
	var v *groupMember
	for _, id := range b.ids {
		m := b.members[id]
		left := m.rep.idle - m.pending()
		if m == for_ || m.retired || left <= 0 || (surplus && left <= m.target) {
			continue
		}
		if v == nil || m.rep.lruIdle.Before(v.rep.lruIdle) {
			v = m
		}
	}
	return v
}

func (b *budgetCore) grant(m *groupMember) {
	m.granted++
	b.fx = append(b.fx, budgetFx{id: m.id, permits: 1, warm: -1})
}

func (b *budgetCore) evict(m *groupMember) {
	m.evictsSent++
	b.fx = append(b.fx, budgetFx{id: m.id, evict: true, warm: -1})
}
