package dockerpool

// GroupStats is a snapshot of a Group: the budget, and every template's
// pool. Counters of a template start again at zero when Update replaces it.
type GroupStats struct {
	MaxSize int // the budget
	Used    int // containers counted against it: idle, in use and being made (with permits on their way)

	// Waiting is the Acquire calls waiting now, all templates: in their
	// pools, and (with Hosts) in the group's queue for room on any host.
	// Each template's Stats.Waiting counts its own the same way.
	Waiting int

	Hits   int64 // Acquires served by a warm container (idle, or returned while they waited), all templates
	Misses int64 // Acquires served by a container made for them: cold starts
	Waits  int64 // Acquires that found nothing idle (cancelled ones included)

	// Evictions of idle containers to make room for another template: for a
	// caller waiting at the cap, or for warmth (a template below its warm
	// target, taking from one above its own).
	EvictedForWaiter, EvictedForWarmth int64
	// RemovedBy sums the templates' removals by reason (ReasonEvicted among
	// them).
	RemovedBy map[RemoveReason]int64

	Templates map[string]TemplateStats
	// Hosts, with GroupConfig.Hosts: every host's health and load, by
	// Host.Name. Nil without Hosts.
	Hosts map[string]HostStats
}

// TemplateStats is one template's part of GroupStats.
type TemplateStats struct {
	Stats          // the template's pools (summed over the hosts); Waiting includes its callers in the group's queue
	WarmTarget int // the idle containers the group keeps for it now
	// Share is, under adaptive warmth, the containers (idle and in use)
	// the budget gives the template now, from its measured demand; its
	// WarmTarget is Share less what it has in use, within MinIdle and
	// MaxIdle. Under static warmth it is the template's MinIdle.
	Share   int
	Hits    int64
	Misses  int64
	Evicted int64 // its idle containers evicted for other templates
}

// Stats returns a snapshot of the group and its templates. After Shutdown
// it returns zeros.
func (g *Group) Stats() GroupStats {
	reply := make(chan groupView, 1)
	v, err := ask(g, groupStatsReq{reply: reply}, reply)
	st := GroupStats{MaxSize: g.maxSize(), RemovedBy: map[RemoveReason]int64{}, Templates: map[string]TemplateStats{}}
	if err != nil {
		return st
	}
	st.Used, st.EvictedForWaiter, st.EvictedForWarmth, st.Hosts = v.used, v.evictWait, v.evictWarm, v.hosts
	for name, ms := range v.members {
		var ts TemplateStats
		for i, m := range ms {
			ps := m.pool.Stats()
			if i == 0 {
				ts.Stats = ps
			} else {
				ts.Stats.add(ps)
			}
			ts.WarmTarget += m.target
			ts.Share += m.share
			ts.Evicted += m.evicted
			ts.Stats.Waiting += m.queued
		}
		ps := ts.Stats
		ts.Hits, ts.Misses = ps.AcquireCount-ps.ColdAcquireCount, ps.ColdAcquireCount
		st.Templates[name] = ts
		st.Hits += ts.Hits
		st.Misses += ts.Misses
		st.Waits += ps.WaitCount
		st.Waiting += ps.Waiting
		for r, n := range ps.RemovedBy {
			st.RemovedBy[r] += n
		}
	}
	return st
}

// add sums o into s: a template's pools on several hosts.
func (s *Stats) add(o Stats) {
	s.Idle += o.Idle
	s.InUse += o.InUse
	s.Creating += o.Creating
	s.Removing += o.Removing
	s.Checking += o.Checking
	s.Waiting += o.Waiting
	s.Total += o.Total
	s.AcquireCount += o.AcquireCount
	s.AcquireDuration += o.AcquireDuration
	s.EmptyAcquireCount += o.EmptyAcquireCount
	s.ColdAcquireCount += o.ColdAcquireCount
	s.CanceledAcquireCount += o.CanceledAcquireCount
	s.WaitCount += o.WaitCount
	s.WaitDuration += o.WaitDuration
	s.Created += o.Created
	s.CreateErrors += o.CreateErrors
	s.Adopted += o.Adopted
	s.Removed += o.Removed
	s.RemoveErrors += o.RemoveErrors
	s.DaemonHealthy = s.DaemonHealthy && o.DaemonHealthy
	rb := make(map[RemoveReason]int64, len(s.RemovedBy))
	for r, n := range s.RemovedBy {
		rb[r] = n
	}
	for r, n := range o.RemovedBy {
		rb[r] += n
	}
	s.RemovedBy = rb
}
