package dockerpool

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/system"
	"github.com/docker/docker/client"

	"github.com/dockerpool/dockerpool/internal/fakedocker"
)

// daemonWithID is a fake daemon whose Info says who it is, as a real one
// does: its ID (which the daemons of one machine share), its machine's
// name, its data root.
type daemonWithID struct {
	*fakedocker.Fake
	id, name, root string
}

func (d daemonWithID) Info(ctx context.Context) (system.Info, error) {
	info, err := d.Fake.Info(ctx)
	info.ID, info.Name, info.DockerRootDir = d.id, d.name, d.root
	return info, err
}

func daemon(id, name, root string) daemonWithID {
	return daemonWithID{fakedocker.New(fakeImage), id, name, root}
}

// daemonAt is a fake daemon reached at a URL, as a *client.Client says
// with DaemonHost.
type daemonAt struct {
	*fakedocker.Fake
	url string
}

func (d daemonAt) DaemonHost() string { return d.url }

// unusedClient is a *client.Client that is never contacted: NewGroup must
// refuse the configuration before it calls anything.
func unusedClient(t *testing.T, host string) *client.Client {
	t.Helper()
	cli, err := client.NewClientWithOpts(client.WithHost(host))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

func TestNewGroupRefusesTwoHostsOfTheSameDaemonNamingBoth(t *testing.T) {
	tmpl := map[string]Config{"t": testConfig(Config{MinIdle: 1, MaxIdle: 1})}
	f := fakedocker.New(fakeImage)
	cli := unusedClient(t, "tcp://127.0.0.1:1")
	for _, tc := range []struct {
		what  string
		hosts []Host
		want  string
	}{
		{"an empty name", []Host{{Name: "a", Client: f, MaxSize: 1}, {Name: "", Client: fakedocker.New(fakeImage), MaxSize: 1}}, "Hosts[1] has no Name"},
		{"the same name", []Host{{Name: "a", Client: f, MaxSize: 1}, {Name: "a", Client: fakedocker.New(fakeImage), MaxSize: 1}}, `host "a" appears twice`},
		{"the same client", []Host{{Name: "a", Client: f, MaxSize: 1}, {Name: "b", Client: f, MaxSize: 1}}, `hosts "a" and "b" have the same Client`},
		{"the same *client.Client", []Host{{Name: "a", Client: cli, MaxSize: 1}, {Name: "b", Client: cli, MaxSize: 1}}, `hosts "a" and "b" have the same Client`},
		{"the same daemon URL", []Host{
			{Name: "a", Client: cli, MaxSize: 1},
			{Name: "b", Client: unusedClient(t, "tcp://127.0.0.1:2"), MaxSize: 1},
			{Name: "c", Client: unusedClient(t, "tcp://127.0.0.1:1"), MaxSize: 1},
		}, `hosts "a" and "c" reach the same daemon (tcp://127.0.0.1:1)`},
		{"the same URL behind another DockerAPI", []Host{
			{Name: "a", Client: daemonAt{fakedocker.New(fakeImage), "unix:///run/d.sock"}, MaxSize: 1},
			{Name: "b", Client: daemonAt{fakedocker.New(fakeImage), "unix:///run/d.sock"}, MaxSize: 1},
		}, `hosts "a" and "b" reach the same daemon (unix:///run/d.sock)`},
		{"the same daemon by two URLs", []Host{
			{Name: "a", Client: daemon("ID-1", "m1", "/var/lib/docker"), MaxSize: 1},
			{Name: "b", Client: daemon("ID-2", "m2", "/var/lib/docker"), MaxSize: 1},
			{Name: "c", Client: daemon("ID-1", "m1", "/var/lib/docker"), MaxSize: 1},
		}, `hosts "a" and "c" are the same daemon (ID ID-1, host name "m1", data root "/var/lib/docker")`},
	} {
		_, err := NewGroup(context.Background(), GroupConfig{Hosts: tc.hosts, Templates: tmpl})
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want ErrInvalidConfig saying %q", tc.what, err, tc.want)
		}
	}
}

// Daemons of one machine share their ID (Docker 20.10's comes from
// /etc/docker/key.json: the private daemons of hosts_integration_test.go
// do), and cloned machines too: the ID alone does not make two hosts one.
func TestNewGroupAcceptsDaemonsThatShareAnIDButNotTheirDataRootOrMachine(t *testing.T) {
	g, err := NewGroup(context.Background(), GroupConfig{StaticWarmth: true, Templates: map[string]Config{"t": testConfig(Config{MinIdle: 1, MaxIdle: 1})}, Hosts: []Host{
		{Name: "a", Client: daemon("ID-1", "m1", "/var/lib/docker"), MaxSize: 1},
		{Name: "b", Client: daemon("ID-1", "m1", "/tmp/d2/data"), MaxSize: 1},
		{Name: "c", Client: daemon("ID-1", "m2", "/var/lib/docker"), MaxSize: 1},
		{Name: "d", Client: daemon("ID-2", "m1", "/var/lib/docker"), MaxSize: 1},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}
