package dockerpool_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/dockerpool/dockerpool"
	"github.com/dockerpool/dockerpool/dockerpooltest"
	"github.com/dockerpool/dockerpool/internal/oteltest"
	"github.com/matryer/is"
	"go.opentelemetry.io/otel/attribute"
)

// A span names a command's program and nothing else of it: the arguments,
// the environment, stdin and what the command prints may hold secrets, and
// no span name, attribute, event or status may carry them, on either path,
// whether the command succeeds, fails or times out. File transfers and
// their spans are recorded as well.
func TestTelemetrySpansCarryNoSecretsOfACommand(t *testing.T) {
	onEachPath(t, func(t *testing.T, path execPath) {
		is := is.New(t)
		rec := oteltest.New()
		name := dockerpooltest.Name(t)
		p := warm(t, path.config(t, dockerpool.Config{Name: name, MinIdle: 1, MeterProvider: rec, TracerProvider: rec.Tracers()}))
		c := held(t, p)
		const arg, env, stdin = "ARG-s3cr3t-1", "ENV-s3cr3t-2", "STDIN-s3cr3t-3"
		script := `read x; echo "$x $SECRET $0"; echo "$x" >&2; exit 3`
		opts := dockerpool.ExecOptions{Env: []string{"SECRET=" + env}, Stdin: strings.NewReader(stdin + "\n")}
		res, err := c.ExecStd(bg(t), []string{"sh", "-c", script, arg}, opts)
		is.NoErr(err)
		is.Equal(res.ExitCode, 3)
		is.Equal(string(res.Stdout), stdin+" "+env+" "+arg+"\n") // the secrets went through
		opts.Timeout = 300 * time.Millisecond
		_, err = c.ExecStd(bg(t), []string{"sh", "-c", "read x; echo $x; sleep 30", arg}, opts)
		is.True(errors.Is(err, dockerpool.ErrExecTimeout))
		is.NoErr(c.WriteFile(bg(t), "/tmp/f", []byte("x"), 0o600))
		_, err = c.ReadFile(bg(t), "/tmp/f", 10)
		is.NoErr(err)

		seen := map[string]int{}
		for _, s := range rec.Spans() {
			text := s.Text()
			seen[s.Name]++
			for _, secret := range []string{arg, env, stdin, "s3cr3t"} {
				if strings.Contains(text, secret) {
					t.Errorf("span %q carries %q: %s", s.Name, secret, text)
				}
			}
			if s.Name == "dockerpool.Exec" {
				prog, _ := s.Attr("process.executable.name")
				is.Equal(prog.AsString(), "sh")
			}
		}
		is.Equal(seen["dockerpool.Exec"], 2)
		is.Equal(seen["dockerpool.WriteFile"], 1)
		is.Equal(seen["dockerpool.ReadFile"], 1)
		pool := attribute.String("dockerpool.pool.name", name)
		ep := map[bool]string{false: "docker", true: "agent"}[path.agent]
		is.Equal(rec.Count("dockerpool.exec.duration", pool, attribute.String("dockerpool.exec.path", ep)), 1)
		is.Equal(rec.Count("dockerpool.exec.duration", pool, attribute.String("dockerpool.exec.path", ep), attribute.String("error.type", "timeout")), 1)
		is.Equal(rec.Count("dockerpool.file.transfer.duration", pool, attribute.String("dockerpool.file.operation", "write")), 1)
	})
}
