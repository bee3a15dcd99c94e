package node

import (
	"context"
	"log/slog"
	"sync"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// startedLog hands the commands Exec starts to History.Started off Exec's
// path: the store write (about 0.3 ms on SQLite here) was a tenth of a
// warm sandbox's first command. One goroutine at a time writes, in the
// order Exec handed them over, and lives only while the queue is not
// empty; its owner is the log, whose flush waits for it.
//
// What this changes: a crash in the instant between a command's start and
// its write loses the start record, as a failed write always could. The
// stop still records every command the agent lists (History.Finished),
// and every stop flushes the log first, so a stopped sandbox's history,
// the only one the API reads, is complete and written in order.
type startedLog struct {
	h   History
	log *slog.Logger

	mu      sync.Mutex
	queue   []startRecord // guarded by mu: handed over, not yet written
	writing bool          // guarded by mu: a writer goroutine runs
	closed  bool          // guarded by mu: Close was called; add writes in place
	idle    *sync.Cond    // on mu: signalled when the writer ends
}

// startRecord is one command handed to History.Started.
type startRecord struct {
	ctx context.Context // the caller's values, detached from its cancellation
	sb  sandbox.Sandbox
	cmd agent.Command
}

// maxStartedQueue bounds the records waiting: past it, Exec writes its
// own in place, so a store slower than the commands slows the commands,
// never paddock's memory.
const maxStartedQueue = 4096

func newStartedLog(h History, log *slog.Logger) *startedLog {
	l := &startedLog{h: h, log: log}
	l.idle = sync.NewCond(&l.mu)
	return l
}

// add queues one record, or writes it in place when the log is closed or full.
func (l *startedLog) add(c startRecord) {
	l.mu.Lock()
	if l.closed || len(l.queue) >= maxStartedQueue {
		l.mu.Unlock()
		l.write(c)
		return
	}
	l.queue = append(l.queue, c)
	start := !l.writing
	l.writing = true
	l.mu.Unlock()
	if start {
		go l.drain()
	}
}

// drain writes the queue until it is empty, then ends.
func (l *startedLog) drain() {
	for {
		l.mu.Lock()
		if len(l.queue) == 0 {
			l.writing = false
			l.queue = nil // let a burst's backing array go
			l.idle.Broadcast()
			l.mu.Unlock()
			return
		}
		c := l.queue[0]
		l.queue[0] = startRecord{}
		l.queue = l.queue[1:]
		l.mu.Unlock()
		l.write(c)
	}
}

func (l *startedLog) write(c startRecord) {
	ctx, cancel := context.WithTimeout(c.ctx, recordsTimeout)
	defer cancel()
	if err := l.h.Started(ctx, c.sb, c.cmd); err != nil {
		l.log.Error("record command start", "sandbox", c.sb.ID, "command", c.cmd.ID, "err", err)
	}
}

// flush waits until every record handed over before it is written.
func (l *startedLog) flush() {
	l.mu.Lock()
	for l.writing {
		l.idle.Wait()
	}
	l.mu.Unlock()
}

// close flushes the log; records handed over later are written in place.
func (l *startedLog) close() {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	l.flush()
}
