package daemon

import (
	"context"
	"errors"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/node"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
)

// nodeHistory is node.History over a store: command exits and usage
// records that outlive their sandbox.
type nodeHistory struct {
	s store.Store
}

var _ node.History = (*nodeHistory)(nil)

// newNodeHistory returns the history kept in s.
func newNodeHistory(s store.Store) *nodeHistory { return &nodeHistory{s: s} }

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

// Used stores u under the sandbox's ID: a sandbox runs once, and a retried
// write is a harmless conflict.
func (h *nodeHistory) Used(ctx context.Context, u node.Usage) error {
	err := h.s.AddUsage(ctx, store.Usage{
		ID:            u.SandboxID,
		TeamID:        u.TeamID,
		ProjectID:     u.ProjectID,
		SandboxID:     u.SandboxID,
		Start:         u.Start,
		End:           u.End,
		CPUSeconds:    u.CPUSeconds,
		MemoryMBHours: u.MemoryMBHours,
		NetRxBytes:    u.NetRxBytes,
		NetTxBytes:    u.NetTxBytes,
	})
	if errors.Is(err, sandbox.ErrConflict) {
		return nil
	}
	return err
}

// commandOf is the history entry of a command the agent reported in sb.
func commandOf(sb sandbox.Sandbox, c agent.Command) store.Command {
	return store.Command{
		ID:        c.ID,
		SandboxID: sb.ID,
		TeamID:    sb.TeamID,
		Cmd:       c.Cmd,
		Args:      c.Args,
		Cwd:       c.Cwd,
		Sudo:      c.Sudo,
		StartedAt: c.StartedAt,
	}
}
