package dockerpool

// OnAgentSocket says, for the external tests, whether c's agent session
// runs on the agent's socket (AgentConfig.Socket) rather than on the
// container's attach stream.
func OnAgentSocket(c *Container) bool {
	r, ok := c.runner.(agentRunner)
	if !ok {
		return false
	}
	r.a.wmu.Lock()
	defer r.a.wmu.Unlock()
	return r.a.sock != nil
}
