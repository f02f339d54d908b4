package main

import (
	"testing"

	"github.com/dockerpool/dockerpool/dockerpooltest"
)

// TestDemoTemplates runs the -templates mode: a command in each template,
// an unknown one, the stats, quit; nothing of the group is left.
func TestDemoTemplates(t *testing.T) {
	t.Parallel()
	bin := buildDemo(t)
	d := startDemo(t, bin, append(imageArgs(t, false), "-templates")...)
	for _, tpl := range groupTemplates {
		t.Cleanup(func() { dockerpooltest.SweepPool(d.cli, d.name+"-"+tpl[0]) })
	}
	d.expect(prompt)
	d.send("run fr sh -c 'echo $GREETING'")
	d.expect("bonjour\n[fr ")
	d.expect(prompt)
	d.send("run en sh -c 'echo $GREETING'")
	d.expect("hello\n[en ")
	d.expect(prompt)
	d.send("run de true")
	d.expect(`unknown template "de" (the group has en, fr)`)
	d.expect(prompt)
	d.send("stats")
	d.expect("group: ")
	d.expect("hits ")
	d.expect(prompt)
	d.send("quit")
	if code := d.wait(); code != 0 {
		t.Errorf("demo exited with code %d, want 0", code)
	}
	d.expect("group shut down: no container left")
	for _, tpl := range groupTemplates {
		dockerpooltest.AssertClean(t, d.cli, d.name+"-"+tpl[0])
	}
}

// TestDemoHosts runs the -hosts mode over the test's daemon (one host: two
// entries for the same daemon would remove each other's containers): run
// names the host, stats has its line, quit leaves nothing.
func TestDemoHosts(t *testing.T) {
	t.Parallel()
	bin := buildDemo(t)
	host := dockerpooltest.Client(t).DaemonHost()
	d := startDemo(t, bin, append(imageArgs(t, false), "-hosts", host)...)
	for _, tpl := range groupTemplates {
		t.Cleanup(func() { dockerpooltest.SweepPool(d.cli, d.name+"-"+tpl[0]) })
	}
	d.expect(prompt)
	d.send("run fr sh -c 'echo $GREETING'")
	d.expect("bonjour\n[fr ")
	d.expect(" on " + host + ": exit 0")
	d.expect(prompt)
	d.send("stats")
	d.expect("  host " + host + ": healthy since ")
	d.expect(prompt)
	d.send("quit")
	if code := d.wait(); code != 0 {
		t.Errorf("demo exited with code %d, want 0", code)
	}
	d.expect("group shut down: no container left")
	for _, tpl := range groupTemplates {
		dockerpooltest.AssertClean(t, d.cli, d.name+"-"+tpl[0])
	}
}
