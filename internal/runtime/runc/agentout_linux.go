package runc

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// The agent's stdout and stderr go to a FIFO in the sandbox's host dir,
// read by an agentOutput of the box, never to a file: nothing the sandbox
// does can grow anything on the host's disk through them. The FIFO, not an
// anonymous pipe, so that a paddock restarted after a crash reads the
// output of the sandboxes it adopts: it opens the FIFO again, and the agent
// still holds the write end. While nobody reads, the agent's writes fail
// (EPIPE) or find the pipe full (EAGAIN) and it drops the line: it never
// blocks on its own logging (agent.OutputWriter).
const (
	outputName = "agent.out"
	// outputTail is how much of the agent's last output is kept for error
	// messages (a Create whose agent died).
	outputTail = 4 << 10
	// outputLine cuts longer lines before they are logged.
	outputLine = 4 << 10
	// At most outputBurst lines are logged per outputWindow; the rest are
	// counted and reported once the window ends.
	outputWindow = 10 * time.Second
	outputBurst  = 100
)

// agentOutput reads one agent's output: it keeps the last outputTail bytes
// and logs each line (rate-limited) through slog. Its goroutine ends when
// the agent and all its copies of the write end are gone, or at close.
type agentOutput struct {
	f    *os.File
	log  *slog.Logger
	done chan struct{} // closed when the reader returns
	now  func() time.Time

	mu   sync.Mutex
	tail []byte // guarded by mu: the last outputTail bytes read

	// Used by the reader goroutine only.
	windowStart time.Time
	lines       int
	suppressed  int
}

// newAgentOutput makes the FIFO in dir and returns its reader, already
// running, and the write end to hand to the agent (the caller closes its
// copy once the agent started).
func newAgentOutput(dir string, log *slog.Logger) (*agentOutput, *os.File, error) {
	p := filepath.Join(dir, outputName)
	if err := unix.Mkfifo(p, 0o600); err != nil {
		return nil, nil, fmt.Errorf("agent output: %w", err)
	}
	o, err := openAgentOutput(dir, log)
	if err != nil {
		return nil, nil, err
	}
	// A reader exists, so opening for writing does not wait.
	w, err := os.OpenFile(p, os.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		o.close()
		return nil, nil, fmt.Errorf("agent output: %w", err)
	}
	return o, w, nil
}

// openAgentOutput starts reading the FIFO in dir: at Create, and when a
// restarted paddock adopts a running sandbox. O_NONBLOCK keeps the open
// from waiting for a writer; reads still wait, in the poller.
func openAgentOutput(dir string, log *slog.Logger) (*agentOutput, error) {
	f, err := os.OpenFile(filepath.Join(dir, outputName), os.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("agent output: %w", err)
	}
	o := &agentOutput{f: f, log: log, done: make(chan struct{}), now: time.Now}
	go o.read()
	return o, nil
}

func (o *agentOutput) read() {
	defer close(o.done)
	br := bufio.NewReaderSize(o.f, outputLine)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			o.keep(line)
			if errors.Is(err, bufio.ErrBufferFull) {
				// Cut: log the start, skip to the end of the line.
				o.line(line)
				for errors.Is(err, bufio.ErrBufferFull) {
					line, err = br.ReadSlice('\n')
					o.keep(line)
				}
			} else {
				o.line(line)
			}
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			o.flushSuppressed()
			if !errors.Is(err, io.EOF) && !errors.Is(err, os.ErrClosed) {
				o.log.Debug("agent output ended", "err", err)
			}
			return
		}
	}
}

func (o *agentOutput) keep(b []byte) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.tail = append(o.tail, b...)
	if len(o.tail) > outputTail {
		o.tail = append(o.tail[:0], o.tail[len(o.tail)-outputTail:]...)
	}
}

// line logs one line of the agent's output. The agent logs JSON; its
// routine lines are debug here, the rest (warnings, errors, anything that
// is not its JSON, such as runc init's errors or a panic) warnings. The
// line is an attribute: it is sandbox-controlled text.
func (o *agentOutput) line(b []byte) {
	now := o.now()
	if now.Sub(o.windowStart) >= outputWindow {
		o.flushSuppressed()
		o.windowStart, o.lines = now, 0
	}
	if o.lines >= outputBurst {
		o.suppressed++
		return
	}
	o.lines++
	text := strings.TrimRight(string(b), "\r\n")
	level := slog.LevelWarn
	var rec struct {
		Level string `json:"level"`
	}
	if json.Unmarshal(bytes.TrimSpace(b), &rec) == nil && (rec.Level == "INFO" || rec.Level == "DEBUG") {
		level = slog.LevelDebug
	}
	o.log.Log(context.Background(), level, "agent output", "line", text)
}

func (o *agentOutput) flushSuppressed() {
	if o.suppressed > 0 {
		o.log.Warn("agent output: lines not logged (rate limit)", "lines", o.suppressed)
		o.suppressed = 0
	}
}

// tailText is the end of the agent's output for an error message. It
// waits up to wait for the agent's end of the pipe to close, so that the
// last words of an agent that just died are in it.
func (o *agentOutput) tailText(wait time.Duration) string {
	if o == nil {
		return ""
	}
	select {
	case <-o.done:
	case <-time.After(wait):
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	s := strings.TrimSpace(string(o.tail))
	if s == "" {
		return ""
	}
	return "; agent output: " + s
}

// close stops the reader and waits for it. The agent keeps running; its
// writes fail until someone opens the FIFO again.
func (o *agentOutput) close() {
	if o == nil {
		return
	}
	o.f.Close()
	<-o.done
}
