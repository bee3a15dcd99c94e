package image

import (
	"context"
	"time"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// DefaultPullTimeout bounds one pull StartPull runs.
const DefaultPullTimeout = 30 * time.Minute

// PullResult is how a pull StartPull ran ended.
type PullResult struct {
	Image *Image
	Err   error
}

var errStoreClosed = sandbox.Errorf(sandbox.ErrUnavailable, "image_store_closed", "the image store is shutting down; retry shortly")

// StartPull runs Pull in a goroutine the store owns and returns at once.
// The pull keeps ctx's values but not its cancellation, so a client that
// hangs up does not waste a half-done download (the work is
// content-addressed: a retry reuses every finished layer). It ends when
// done, after PullTimeout, or at Close, which waits for it. Its result
// arrives on the returned channel, which has room for it: nobody has to
// read it. progress is called from the pull's goroutine, as in Pull.
func (s *Store) StartPull(ctx context.Context, team, ref string, opts PullOptions, progress func(LayerProgress)) <-chan PullResult {
	res := make(chan PullResult, 1)
	s.bgMu.Lock()
	if s.closed {
		s.bgMu.Unlock()
		res <- PullResult{Err: errStoreClosed}
		return res
	}
	s.pulls.Add(1)
	s.bgMu.Unlock()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opts.PullTimeout)
	stop := context.AfterFunc(s.life, cancel)
	go func() { // owned: Close waits for s.pulls
		defer s.pulls.Done()
		defer cancel()
		defer stop()
		img, err := s.Pull(ctx, team, ref, opts, progress)
		res <- PullResult{Image: img, Err: err}
	}()
	return res
}

// Close cancels the pulls StartPull runs and waits for them; later calls
// of StartPull fail with ErrUnavailable. The store's other methods run in
// their callers' goroutines and are unaffected. Idempotent.
func (s *Store) Close() error {
	s.bgMu.Lock()
	s.closed = true
	s.bgMu.Unlock()
	s.stopLife()
	s.pulls.Wait()
	return nil
}
