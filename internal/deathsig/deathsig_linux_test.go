package deathsig

import (
	"os/exec"
	"runtime"
	"sync"
	"testing"
)

// churnThreads makes Go retire threads until the test ends: goroutines
// lock one and return, as the namespace helpers do.
func churnThreads(t *testing.T) {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				done := make(chan struct{})
				go func() {
					runtime.LockOSThread() // never unlocked: the thread retires
					close(done)
				}()
				<-done
			}
		})
	}
	t.Cleanup(func() {
		close(stop)
		wg.Wait()
	})
}

// TestChildrenOutliveRetiredThreads runs and starts short children while
// threads retire. With a bare Pdeathsig some were SIGKILLed mid-run
// ("signal: killed": mkfs.ext4 in the runc suite) when the thread that
// forked them retired.
func TestChildrenOutliveRetiredThreads(t *testing.T) {
	if _, err := exec.LookPath("sleep"); err != nil {
		t.Skip("no sleep binary")
	}
	churnThreads(t)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 15 {
				var err error
				if w%2 == 0 {
					err = Run(exec.Command("sleep", "0.01"))
				} else {
					var c *Child
					if c, err = Start(exec.Command("sleep", "0.01")); err == nil {
						err = c.Wait()
					}
				}
				if err != nil {
					t.Errorf("child %d.%d: %v", w, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestStartError: a child that cannot start is Start's error, with no
// goroutine left waiting.
func TestStartError(t *testing.T) {
	if _, err := Start(exec.Command("/nonexistent/paddock-deathsig-test")); err == nil {
		t.Fatal("start of a missing binary succeeded")
	}
}
