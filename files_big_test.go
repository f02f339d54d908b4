package dockerpool_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/matryer/is"

	"github.com/dockerpool/dockerpool"
)

const gig = 1 << 30

// zeros reads n zero bytes, calling tick every 64 MiB.
type zeros struct {
	n, read int64
	tick    func()
}

func (z *zeros) Read(b []byte) (int, error) {
	if z.n == 0 {
		return 0, io.EOF
	}
	k := int(min(int64(len(b)), z.n))
	clear(b[:k])
	z.n -= int64(k)
	if (z.read+int64(k))>>26 != z.read>>26 && z.tick != nil {
		z.tick()
	}
	z.read += int64(k)
	return k, nil
}

// bigTar streams a tar of one file of size bytes of zeros, never in memory.
func bigTar(t *testing.T, size int64, tick func()) io.Reader {
	var hdr bytes.Buffer
	tw := tar.NewWriter(&hdr)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "big", Mode: 0o644, Size: size}); err != nil {
		t.Fatal(err)
	}
	pad := (512 - size%512) % 512
	return io.MultiReader(&hdr, &zeros{n: size, tick: tick}, bytes.NewReader(make([]byte, pad+1024)))
}

// heapPeak samples the live heap (after a collection) when asked to, so
// that what is measured is what the pool holds, not garbage.
type heapPeak struct {
	mu         sync.Mutex
	base, peak uint64
}

func newHeapPeak() *heapPeak {
	h := &heapPeak{}
	h.base = h.live()
	return h
}

func (h *heapPeak) live() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

func (h *heapPeak) sample() {
	v := h.live()
	h.mu.Lock()
	h.peak = max(h.peak, v)
	h.mu.Unlock()
}

func (h *heapPeak) grew() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.peak - min(h.peak, h.base)
}

// peakRSS polls the largest VmHWM of the container's processes named name
// while it runs, until stop; it returns the peak in KiB. (gVisor shows no
// VmHWM: there the largest VmRSS seen is the peak.)
func peakRSS(t *testing.T, c *dockerpool.Container, name string, stop <-chan struct{}) <-chan int {
	out := make(chan int, 1)
	script := `for f in /proc/[0-9]*/status; do grep -q "^Name:[[:space:]]*` + name + `$" $f 2>/dev/null && grep -E "^(VmHWM|VmRSS)" $f; done`
	go func() {
		peak := 0
		defer func() { out <- peak }()
		for {
			res, err := c.Exec(context.Background(), []string{"sh", "-c", script})
			if err == nil {
				for _, line := range strings.Split(string(res.Stdout), "\n") {
					if f := strings.Fields(line); len(f) >= 2 {
						if kb, err := strconv.Atoi(f[1]); err == nil {
							peak = max(peak, kb)
						}
					}
				}
			}
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond): // polling a process listing: there is no event to wait for
			}
		}
	}()
	return out
}

// filesStreamAGigabyteEachWayInBoundedMemory is a test of
// TestInChildProcesses/BigStreams: the heap it measures is the whole
// process's, so it runs alone in a process of its own.
func filesStreamAGigabyteEachWayInBoundedMemory(t *testing.T) {
	for _, path := range execPaths {
		t.Run(path.name, func(t *testing.T) {
			is := is.New(t)
			host := &container.HostConfig{NetworkMode: "none", Tmpfs: map[string]string{"/big": "size=1100m"}}
			p := warm(t, path.config(t, dockerpool.Config{MinIdle: 1, HostConfig: host}))
			c := held(t, p)
			ctx := bg(t)
			// In: 1 GiB into a tmpfs, where docker cp cannot write.
			consumer := "tar"
			if path.agent {
				consumer = "dockerpool-agen" // /proc/*/status cuts names at 15 characters
			}
			heap := newHeapPeak()
			stop := make(chan struct{})
			rss := peakRSS(t, c, consumer, stop)
			start := time.Now()
			is.NoErr(c.CopyTo(ctx, "/big", bigTar(t, gig, heap.sample)))
			took := time.Since(start)
			close(stop)
			inRSS := <-rss
			is.Equal(shOut(t, c, "stat -c %s /big/big"), fmt.Sprint(gig))
			t.Logf("CopyTo 1 GiB: %v (%.0f MB/s); our live heap grew by at most %d KiB; %s in the container peaked at %d KiB",
				took.Round(time.Millisecond), gig/took.Seconds()/1e6, heap.grew()>>10, consumer, inRSS)
			is.True(heap.grew() < 32<<20)
			is.True(inRSS > 0 && inRSS < 64<<10)

			// Out: the same gigabyte back.
			heap = newHeapPeak()
			stop = make(chan struct{})
			packer := "tar"
			if path.agent {
				packer = "dockerpool-agen"
			}
			rss = peakRSS(t, c, packer, stop)
			var n int64
			w := writerFunc(func(b []byte) (int, error) {
				if (n+int64(len(b)))>>26 != n>>26 {
					heap.sample()
				}
				n += int64(len(b))
				return len(b), nil
			})
			start = time.Now()
			is.NoErr(c.CopyFrom(ctx, "/big/big", w, -1))
			took = time.Since(start)
			close(stop)
			outRSS := <-rss
			t.Logf("CopyFrom 1 GiB: %v (%.0f MB/s), %d bytes of tar; our live heap grew by at most %d KiB; %s peaked at %d KiB",
				took.Round(time.Millisecond), gig/took.Seconds()/1e6, n, heap.grew()>>10, packer, outRSS)
			is.True(n > gig)
			is.True(heap.grew() < 32<<20)
			is.True(outRSS < 64<<10)

			// max stops the producer at the limit, before the gigabyte.
			n = 0
			start = time.Now()
			err := c.CopyFrom(ctx, "/big", w, 64<<20)
			is.True(errors.Is(err, dockerpool.ErrFileTooLarge))
			t.Logf("CopyFrom with max 64 MiB: %v after %v and %d bytes", err, time.Since(start).Round(time.Millisecond), n)
			is.True(n <= 64<<20)
			_, err = c.ReadFile(ctx, "/big/big", 1<<20)
			is.True(errors.Is(err, dockerpool.ErrFileTooLarge))
		})
	}
}

// agentTakesAGigabyteOfStdinIntoASandboxedCommandThatReadsLate is a test
// of TestInChildProcesses/BigStreams, for the same reason.
func agentTakesAGigabyteOfStdinIntoASandboxedCommandThatReadsLate(t *testing.T) {
	// The command reads nothing for three
	// seconds: without flow control the agent queued the input and the
	// sandbox's 256 MiB killed it (the session ended, the container died).
	is := is.New(t)
	path := execPaths[1]
	cfg := dockerpool.Config{MinIdle: 1, HostConfig: sandboxHost(dockerpool.SandboxOptions{}), ContainerConfig: &container.Config{User: dockerpool.SandboxUser}}
	p := warm(t, path.config(t, cfg))
	c := held(t, p)
	stop := make(chan struct{})
	rss := peakRSS(t, c, "dockerpool-agen", stop)
	start := time.Now()
	res, err := c.ExecStd(bg(t), []string{"sh", "-c", "sleep 3; wc -c"}, dockerpool.ExecOptions{Stdin: &zeros{n: gig}})
	close(stop)
	peak := <-rss
	is.NoErr(err)
	is.Equal(strings.TrimSpace(string(res.Stdout)), fmt.Sprint(gig))
	t.Logf("1 GiB of stdin in %v; the agent peaked at %d KiB", time.Since(start).Round(time.Millisecond), peak)
	is.True(peak < 64<<10)
	is.Equal(shOut(t, c, "echo alive"), "alive")
}
