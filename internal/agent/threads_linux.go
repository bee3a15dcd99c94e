package agent

import (
	"runtime"
	"sync"
)

// SpareThreads makes sure the Go runtime holds at least n OS threads that
// are idle once this returns, for it to use before it makes new ones. The agent shares its sandbox's task limit with the sandbox's
// processes, and Go ends a process that cannot make a thread it needs
// ("failed to create new OS thread"): under a fork bomb holding every
// task the limit allows, the agent would die with its sandbox whenever a
// blocked system call made the runtime hand its P to a new thread. With
// threads made at start, before any command runs, it has them. The cost
// is n tasks of the limit and their stacks.
//
// A goroutine locked to its thread keeps it while it waits, so n of them
// waiting at once hold n threads; they unlock before they end, so the
// threads stay, parked in the runtime's idle list (Go never ends an idle
// thread, only a locked one whose goroutine ends).
func SpareThreads(n int) {
	if n <= 0 {
		return
	}
	var started, done sync.WaitGroup
	release := make(chan struct{})
	for range n {
		started.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			runtime.LockOSThread()
			started.Done()
			<-release
			runtime.UnlockOSThread()
		}()
	}
	started.Wait()
	close(release)
	done.Wait()
}
