package dockerpool

import (
	"math"
	"time"
)

// Adaptive warmth: how many containers of each template the budget keeps.
//
// A template's demand is its concurrent use: its containers in use plus its
// callers waiting, smoothed (load). With arrivals at random, the concurrent
// use of a template with mean load a is about Poisson(a), and an Acquire
// finds nothing idle when all of the template's N containers are in use, so
// with probability P(X ≥ N). One container more saves rate × P(X = N)
// misses a second. The budget is handed out a container at a time to the
// template that container saves the most misses for, until the budget is
// spent or the next one would save fewer than minGain a second (share).
//
// The warm target a member keeps idle is then its share less what it has in
// use, between its MinIdle and MaxIdle: an Acquire of an idle container does
// not start a replacement, and a Return leaves nothing to trim, as long as
// the share holds. Containers are made and evicted when the shares move,
// not with every lease: on a real daemon a creation at the cap costs a
// removal too, and both slow the daemon for everyone.

const (
	rateTau  = 5 * time.Second // the acquire rate's memory
	loadTau  = 3 * time.Second // the load's memory: a shift of demand shows within seconds
	minGain  = 0.005           // misses a second one more container must save
	moveGain = 4               // a container moves to where it saves this many times more
)

// DefaultMaxCreating is GroupConfig.MaxCreating's default: the creations
// under way at a time on one daemon. Measured on a two-CPU Docker 20.10
// (BENCHMARKS.md, issue 17's trace, MaxSize 24): 1, 2, 4 and 8 at a time
// gave a p99 Acquire of 392, 310, 454 and 1005 ms; beyond two, the
// creations share the CPUs and each one, the miss waiting for it
// included, takes longer.
const DefaultMaxCreating = 2

// estimate follows one member's demand over the last dt.
func (b *budgetCore) estimate(m *groupMember, dt time.Duration) {
	acq := m.rep.acquires - m.seenAcq
	m.seenAcq = m.rep.acquires
	sec := dt.Seconds()
	m.rate += (1 - math.Exp(-sec/rateTau.Seconds())) * (float64(acq)/sec - m.rate)
	now := float64(m.rep.inUse + m.rep.waiting)
	m.load += (1 - math.Exp(-sec/loadTau.Seconds())) * (now - m.load)
}

// allocate hands out the budget as shares (see above).
func (b *budgetCore) allocate() {
	room := b.maxSize
	type cand struct {
		m       *groupMember
		pmf     float64 // P(X = share) for X ~ Poisson(load)
		ceiling int
		lambda  float64
		weight  float64
	}
	cs := make([]cand, 0, len(b.ids))
	for _, id := range b.ids {
		m := b.members[id]
		if m.retired {
			room -= m.held()
			continue
		}
		m.share = max(m.minIdle, m.rep.inUse) // what it holds in use is its own
		room -= m.share
		a := max(m.load, 1e-3)
		c := cand{m: m, lambda: a, ceiling: m.maxIdle + int(math.Ceil(a)), weight: m.rate}
		c.pmf = math.Exp(-a)
		for k := 1; k <= m.share; k++ {
			c.pmf *= a / float64(k)
		}
		cs = append(cs, c)
	}
	for room > 0 {
		best, gain := -1, minGain
		for i, c := range cs {
			if c.m.share < c.ceiling && c.weight*c.pmf > gain {
				best, gain = i, c.weight*c.pmf
			}
		}
		if best < 0 {
			break
		}
		c := &cs[best]
		c.m.share++
		c.pmf *= c.lambda / float64(c.m.share)
		room--
	}
}

// retarget sets each member's warm target from its share and what it has in
// use now, and sends the ones that changed. A target that drops also drops
// the warm creations the member's last report asked for under the old one.
func (b *budgetCore) retarget() {
	for _, id := range b.ids {
		m := b.members[id]
		if m.retired {
			continue
		}
		t := max(m.minIdle, min(m.maxIdle, m.share-m.rep.inUse))
		if t == m.target {
			continue
		}
		if t < m.target {
			m.rep.wantWarm = max(0, m.rep.wantWarm-(m.target-t))
		}
		m.target = t
		if t != m.sentTarget {
			m.sentTarget = t
			b.fx = append(b.fx, budgetFx{id: m.id, warm: t})
		}
	}
}

// warmVictim picks the member whose idle container goes for m's warmth at
// the cap, or nil. Static: the least recently used idle container above its
// member's target, of a member less busy than m. Adaptive: of the members
// above their share, the one whose last container saves the fewest misses,
// if m's next one would save moveGain times more: a move costs a removal and
// a creation, during which neither has the container, so the shares' small
// swings must not move containers to and fro.
func (b *budgetCore) warmVictim(m *groupMember) *groupMember {
	if !b.adaptive {
		if v := b.victim(m, true); v != nil && v.rate < m.rate {
			return v
		}
		return nil
	}
	var v *groupMember
	vw := 0.0
	for _, id := range b.ids {
		o := b.members[id]
		if o == m || o.retired || o.rep.idle-o.pending() <= o.target {
			continue
		}
		if w := o.worth(o.held() - 1); v == nil || w < vw {
			v, vw = o, w
		}
	}
	if v == nil || m.worth(m.held()) < moveGain*vw+minGain {
		return nil
	}
	return v
}

// worth is how many misses a second the (n+1)-th container of m saves:
// rate × P(X = n) for X ~ Poisson(load).
func (m *groupMember) worth(n int) float64 {
	if n < 0 {
		return math.Inf(1)
	}
	a := max(m.load, 1e-3)
	lg, _ := math.Lgamma(float64(n + 1))
	return m.rate * math.Exp(float64(n)*math.Log(a)-a-lg)
}
