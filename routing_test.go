package dockerpool

import (
	"context"
	"errors"
	"testing"

	"github.com/matryer/is"
)

func TestAcquireSendsOneRequestAndReturnsTheReply(t *testing.T) {
	is := is.New(t)
	p := bareTestPool()
	want := &Container{pool: p, id: "x"}
	go func() {
		req := <-p.acquireCh
		is.Equal(cap(req.reply), 1) // buffered: the owner never blocks on it
		req.reply <- acquireReply{c: want}
	}()
	c, err := p.Acquire(context.Background())
	is.NoErr(err)
	is.Equal(c, want)
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
	req := <-p.acquireCh
	cancel()
	m, ok := (<-p.ctrlCh).(cancelReq)
	is.True(ok)
	is.Equal(m.reply, req.reply)
	err := <-errc
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
	go func() {
		req := <-p.releaseCh
		is.True(req.busy)
		req.reply <- nil
	}()
	is.NoErr(p.Return(context.Background(), c))
	c.endOp()
	is.True(errors.Is(c.beginOp(), ErrContainerReleased))
}

func TestShutdownWhoseContextEndsAsksTheOwnerToForce(t *testing.T) {
	is := is.New(t)
	p := bareTestPool()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- p.Shutdown(ctx) }()
	_, ok := (<-p.ctrlCh).(shutdownReq)
	is.True(ok)
	cancel()
	_, ok = (<-p.ctrlCh).(forceReq)
	is.True(ok)
	close(p.done)
	is.True(errors.Is(<-errc, context.Canceled))
}
