package daemon

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"unicode/utf8"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/metering"
	"github.com/paddock-dev/paddock/internal/node"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
)

// nodeHistory is node.History over a store: command exits and usage
// records that outlive their sandbox.
//
// History is bounded, since a sandbox can run commands without end and
// paddock.db shares the host's disk: each sandbox keeps its newest
// maxCommandsPerSandbox commands, each entry's command line at most
// maxCommandText bytes, and the daemon prunes entries older than
// Config.HistoryRetention.
type nodeHistory struct {
	s     store.Store
	meter *metering.Meter // books each run's last interval of usage

	mu      sync.Mutex
	started map[string]int // guarded by mu: commands recorded per sandbox since its last trim
}

// History bounds (see nodeHistory).
const (
	maxCommandsPerSandbox = 1000
	maxCommandText        = 8 << 10
	// trimEvery is how many commands a sandbox records between trims: a
	// trim costs two queries, so not one per command.
	trimEvery = 100
)

var _ node.History = (*nodeHistory)(nil)

// newNodeHistory returns the history kept in s, usage through m.
func newNodeHistory(s store.Store, m *metering.Meter) *nodeHistory {
	return &nodeHistory{s: s, meter: m, started: map[string]int{}}
}

// Started records a command as it starts, with its exit when it already
// finished (a waited command). A conflict is a command Finished recorded
// first, racing a stop: it already holds what is known.
func (h *nodeHistory) Started(ctx context.Context, sb sandbox.Sandbox, c agent.Command) error {
	rec := commandOf(sb, c)
	if c.Done() && c.ExitCode != nil {
		rec.ExitCode, rec.FinishedAt = c.ExitCode, c.FinishedAt
	}
	if err := h.s.AddCommand(ctx, rec); err != nil && !errors.Is(err, sandbox.ErrConflict) {
		return err
	}
	h.mu.Lock()
	h.started[sb.ID]++
	due := h.started[sb.ID] >= trimEvery
	if due {
		delete(h.started, sb.ID)
	}
	h.mu.Unlock()
	if due {
		return h.trim(ctx, sb.ID)
	}
	return nil
}

// trim drops a sandbox's commands past the newest maxCommandsPerSandbox.
func (h *nodeHistory) trim(ctx context.Context, id string) error {
	if _, err := h.s.TrimCommands(ctx, id, maxCommandsPerSandbox); err != nil {
		return fmt.Errorf("trim the command history of sandbox %s: %w", id, err)
	}
	return nil
}

// Finished records the exit of every command the agent reported finished.
// A command Started did not record (its write failed, or it was started
// before history existed) is added first. One still
// running at the stop keeps no exit: the stop kills it and its exit is
// never reported, so its history says "unknown".
func (h *nodeHistory) Finished(ctx context.Context, sb sandbox.Sandbox, cmds []agent.Command) error {
	var errs []error
	for _, c := range cmds {
		if err := h.finishOne(ctx, sb, c); err != nil {
			errs = append(errs, err)
		}
	}
	h.mu.Lock()
	delete(h.started, sb.ID)
	h.mu.Unlock()
	if err := h.trim(ctx, sb.ID); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (h *nodeHistory) finishOne(ctx context.Context, sb sandbox.Sandbox, c agent.Command) error {
	if !c.Done() || c.ExitCode == nil {
		// Record that it ran, if nobody did; no exit to set.
		err := h.s.AddCommand(ctx, commandOf(sb, c))
		if errors.Is(err, sandbox.ErrConflict) {
			err = nil
		}
		return err
	}
	err := h.s.FinishCommand(ctx, sb.ID, c.ID, *c.ExitCode, c.FinishedAt)
	if !errors.Is(err, sandbox.ErrNotFound) {
		return err
	}
	rec := commandOf(sb, c)
	rec.ExitCode, rec.FinishedAt = c.ExitCode, c.FinishedAt
	if err := h.s.AddCommand(ctx, rec); err != nil && !errors.Is(err, sandbox.ErrConflict) {
		return err
	}
	return nil
}

// Used books the last interval of a sandbox's run: the Meter has sampled
// the rest while it ran, and a retried call books nothing twice.
func (h *nodeHistory) Used(ctx context.Context, u node.Usage) error {
	return h.meter.Final(ctx, metering.Stopped{
		SandboxID: u.SandboxID, TeamID: u.TeamID, ProjectID: u.ProjectID, MemoryMB: u.MemoryMB,
		Start: u.Start, End: u.End, CountersOK: u.CountersOK,
		CPUSeconds: u.CPUSeconds, NetRxBytes: u.NetRxBytes, NetTxBytes: u.NetTxBytes, MemoryPeakBytes: u.MemoryPeakBytes,
	})
}

// commandOf is the history entry of a command the agent reported in sb,
// its command line cut to maxCommandText bytes (see cutCommandLine).
func commandOf(sb sandbox.Sandbox, c agent.Command) store.Command {
	cmd, args := cutCommandLine(c.Cmd, c.Args, maxCommandText)
	return store.Command{
		ID:        c.ID,
		SandboxID: sb.ID,
		TeamID:    sb.TeamID,
		Cmd:       cmd,
		Args:      args,
		Cwd:       cutString(c.Cwd, maxCommandText),
		Sudo:      c.Sudo,
		Tag:       c.Tag, // bounded by the agent (MaxTagBytes)
		PTYRows:   ptySize(c).Rows,
		PTYCols:   ptySize(c).Cols,
		StartedAt: c.StartedAt,
	}
}

// ptySize is the terminal a command runs on, zero if none.
func ptySize(c agent.Command) agent.PTYSize {
	if c.PTY == nil {
		return agent.PTYSize{}
	}
	return *c.PTY
}

// cutCommandLine keeps cmd and args within max bytes: arguments past the
// budget go, the one that crosses it is cut, and a last argument says how
// many bytes were left out ("…[+123456 bytes]"), so the entry never passes
// for the whole command line. The command itself ran with all of it.
func cutCommandLine(cmd string, args []string, max int) (string, []string) {
	total := len(cmd)
	for _, a := range args {
		total += len(a)
	}
	if total <= max {
		return cmd, args
	}
	cmd = cutString(cmd, max)
	left := max - len(cmd)
	kept := make([]string, 0, len(args)+1)
	for _, a := range args {
		if left <= 0 {
			break
		}
		a = cutString(a, left)
		left -= len(a)
		kept = append(kept, a)
	}
	shown := len(cmd)
	for _, a := range kept {
		shown += len(a)
	}
	return cmd, append(kept, fmt.Sprintf("…[+%d bytes]", total-shown))
}

// cutString cuts s to at most max bytes on a UTF-8 boundary.
func cutString(s string, max int) string {
	if len(s) <= max {
		return s
	}
	for max > 0 && !utf8.RuneStart(s[max]) {
		max--
	}
	return s[:max]
}
