package dockerpool

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/dockerpool/dockerpool/internal/testwait"
)

func TestAcquireSendsOneRequestAndReturnsTheReply(t *testing.T) {
	is := is.New(t)
	p := bareTestPool()
	want := &Container{pool: p, id: "x"}
	type result struct {
		c   *Container
		err error
	}
	res := make(chan result, 1)
	go func() {
		c, err := p.Acquire(context.Background())
		res <- result{c, err}
	}()
	req := testwait.Recv(t, p.acquireCh, 10*time.Second, "Acquire's request")
	is.Equal(cap(req.reply), 1) // buffered: the owner never blocks on it
	req.reply <- acquireReply{c: want}
	r := testwait.Recv(t, res, 10*time.Second, "Acquire's return after the reply")
	is.NoErr(r.err)
	is.Equal(r.c, want)
}

func TestAcquireWhoseContextEndsSendsACancelWithItsReplyChannel(t *testing.T) {
	is := is.New(t)
	p := bareTestPool()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := p.Acquire(ctx)
		errc <- err
	}()
	req := testwait.Recv(t, p.acquireCh, 10*time.Second, "Acquire's request")
	cancel()
	m, ok := testwait.Recv(t, p.ctrlCh, 10*time.Second, "the cancel after ctx ended").(cancelReq)
	is.True(ok)
	is.Equal(m.reply, req.reply)
	err := testwait.Recv(t, errc, 10*time.Second, "Acquire's return after the cancel")
	is.True(errors.Is(err, context.Canceled))
}

func TestAcquireAfterShutdownStartedFailsWithoutTheOwner(t *testing.T) {
	is := is.New(t)
	p := bareTestPool()
	close(p.closing)
	_, err := p.Acquire(context.Background())
	is.True(errors.Is(err, ErrPoolShutdown))
}

func TestReturnOfANilForeignOrReleasedHandleNeverReachesTheOwner(t *testing.T) {
	is := is.New(t)
	p := bareTestPool() // nobody reads releaseCh: a send would hang the test
	is.True(errors.Is(p.Return(context.Background(), nil), ErrInvalidContainer))
	other := bareTestPool()
	is.True(errors.Is(p.Return(context.Background(), &Container{pool: other, id: "x"}), ErrInvalidContainer))
	c := &Container{pool: p, id: "y"}
	c.state.Or(handleReleased)
	is.True(errors.Is(p.Remove(context.Background(), c), ErrContainerReleased))
}

func TestReturnWhileAnExecRunsMarksTheContainerTainted(t *testing.T) {
	is := is.New(t)
	p := bareTestPool()
	c := &Container{pool: p, id: "y"}
	is.NoErr(c.beginOp())
	errc := make(chan error, 1)
	go func() { errc <- p.Return(context.Background(), c) }()
	req := testwait.Recv(t, p.releaseCh, 10*time.Second, "Return's request")
	is.True(req.busy)
	req.reply <- nil
	is.NoErr(testwait.Recv(t, errc, 10*time.Second, "Return's return after the reply"))
	c.endOp()
	is.True(errors.Is(c.beginOp(), ErrContainerReleased))
}

func TestShutdownWhoseContextEndsAsksTheOwnerToForce(t *testing.T) {
	is := is.New(t)
	p := bareTestPool()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- p.Shutdown(ctx) }()
	_, ok := testwait.Recv(t, p.ctrlCh, 10*time.Second, "Shutdown's request").(shutdownReq)
	is.True(ok)
	cancel()
	_, ok = testwait.Recv(t, p.ctrlCh, 10*time.Second, "the force after ctx ended").(forceReq)
	is.True(ok)
	close(p.done)
	is.True(errors.Is(testwait.Recv(t, errc, 10*time.Second, "Shutdown's return after done"), context.Canceled))
}
