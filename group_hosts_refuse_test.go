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

// daemonWithID is a fake daemon whose Info reports an ID, as a real one does.
type daemonWithID struct {
	*fakedocker.Fake
	id string
}

func (d daemonWithID) Info(ctx context.Context) (system.Info, error) {
	info, err := d.Fake.Info(ctx)
	info.ID = d.id
	return info, err
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
		{"the same daemon ID", []Host{
			{Name: "a", Client: daemonWithID{fakedocker.New(fakeImage), "ID-1"}, MaxSize: 1},
			{Name: "b", Client: daemonWithID{fakedocker.New(fakeImage), "ID-2"}, MaxSize: 1},
			{Name: "c", Client: daemonWithID{fakedocker.New(fakeImage), "ID-1"}, MaxSize: 1},
		}, `hosts "a" and "c" are the same daemon (ID ID-1)`},
	} {
		_, err := NewGroup(context.Background(), GroupConfig{Hosts: tc.hosts, Templates: tmpl})
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want ErrInvalidConfig saying %q", tc.what, err, tc.want)
		}
	}
}

func TestNewGroupAcceptsDaemonsWithDifferentIDs(t *testing.T) {
	g, err := NewGroup(context.Background(), GroupConfig{StaticWarmth: true, Templates: map[string]Config{"t": testConfig(Config{MinIdle: 1, MaxIdle: 1})}, Hosts: []Host{
		{Name: "a", Client: daemonWithID{fakedocker.New(fakeImage), "ID-1"}, MaxSize: 1},
		{Name: "b", Client: daemonWithID{fakedocker.New(fakeImage), "ID-2"}, MaxSize: 1},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}
