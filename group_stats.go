package dockerpool

// GroupStats is a snapshot of a Group: the budget, and every template's
// pool. Counters of a template start again at zero when Update replaces it.
type GroupStats struct {
	MaxSize int // the budget
	Used    int // containers counted against it: idle, in use and being made (with permits on their way)

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
	Stats          // the template's pool
	WarmTarget int // the idle containers the group keeps for it now
	Hits       int64
	Misses     int64
	Evicted    int64 // its idle containers evicted for other templates
}

// Stats returns a snapshot of the group and its templates. After Shutdown
// it returns zeros.
func (g *Group) Stats() GroupStats {
	reply := make(chan groupView, 1)
	v, err := ask(g, groupStatsReq{reply: reply}, reply)
	st := GroupStats{MaxSize: g.cfg.MaxSize, RemovedBy: map[RemoveReason]int64{}, Templates: map[string]TemplateStats{}}
	if err != nil {
		return st
	}
	st.Used, st.EvictedForWaiter, st.EvictedForWarmth = v.used, v.evictWait, v.evictWarm
	for name, m := range v.members {
		ps := m.pool.Stats()
		ts := TemplateStats{Stats: ps, WarmTarget: m.target, Evicted: m.evicted,
			Hits: ps.AcquireCount - ps.ColdAcquireCount, Misses: ps.ColdAcquireCount}
		st.Templates[name] = ts
		st.Hits += ts.Hits
		st.Misses += ts.Misses
		st.Waits += ps.WaitCount
		for r, n := range ps.RemovedBy {
			st.RemovedBy[r] += n
		}
	}
	return st
}
