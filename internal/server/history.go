package server

import (
	"context"
	"fmt"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/httperr"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
)

// History is where commands outlive their sandbox; store.Store satisfies
// it. The server only reads it: the node is its one writer
// (node.Config.History), recording each command as it starts and the
// exits when it stops a sandbox.
type History interface {
	ListCommands(ctx context.Context, sandboxID string, page store.Page) ([]store.Command, string, error)
}

var _ History = store.Store(nil)

// fromHistory reports whether commands of sb are answered from the
// history: the sandbox no longer runs, so its agent is gone.
func (s *Server) fromHistory(ctx context.Context, id string) (bool, error) {
	if s.history == nil {
		return false, nil
	}
	sb, err := s.sb.Get(ctx, id)
	if err != nil {
		return false, sandboxErr(id, err)
	}
	return sb.State.Terminal(), nil
}

// historyCommands returns every recorded command of a sandbox, oldest first.
func (s *Server) historyCommands(ctx context.Context, sbID string) ([]api.Command, error) {
	out := []api.Command{}
	page := store.Page{Limit: store.MaxPageLimit}
	for {
		cmds, next, err := s.history.ListCommands(ctx, sbID, page)
		if err != nil {
			return nil, fmt.Errorf("command history of sandbox %s: %w", sbID, err)
		}
		for _, c := range cmds {
			out = append(out, toAPIHistoryCommand(c))
		}
		if next == "" {
			return out, nil
		}
		page.Cursor = next
	}
}

// historyCommand returns one recorded command of a sandbox.
func (s *Server) historyCommand(ctx context.Context, sbID, cmdID string) (api.Command, error) {
	cmds, err := s.historyCommands(ctx, sbID)
	if err != nil {
		return api.Command{}, err
	}
	for _, c := range cmds {
		if c.ID == cmdID {
			return c, nil
		}
	}
	return api.Command{}, sandbox.Errorf(sandbox.ErrNotFound, "command_not_found", "command %q not found", cmdID)
}

// errLogsGone answers for the output of a stopped sandbox's command: the
// output lived in the sandbox and went with it; the history keeps exits.
func errLogsGone(sbID string) error {
	return sandbox.Errorf(httperr.ErrGone, "logs_gone",
		"sandbox %s has stopped: command output is gone with it; the command and its exit code are in its history", sbID)
}

// toAPIHistoryCommand presents a history entry. The history keeps the exit
// code, not the signal: a finished command is "exited" (128+n if a signal
// ended it), one without an exit "unknown".
func toAPIHistoryCommand(c store.Command) api.Command {
	status := api.CommandUnknown
	if c.ExitCode != nil {
		status = api.CommandExited
	}
	return api.Command{
		ID:         c.ID,
		SandboxID:  c.SandboxID,
		Cmd:        c.Cmd,
		Args:       c.Args,
		Cwd:        c.Cwd,
		Sudo:       c.Sudo,
		Tag:        c.Tag,
		PTY:        historyPTY(c),
		Status:     status,
		ExitCode:   c.ExitCode,
		StartedAt:  utcOrZero(c.StartedAt),
		FinishedAt: utcOrZero(c.FinishedAt),
	}
}

// historyPTY is the terminal a recorded command ran on, nil if none: a
// PTY session shows as one after its sandbox stopped too.
func historyPTY(c store.Command) *api.PTYSize {
	if c.PTYRows == 0 && c.PTYCols == 0 {
		return nil
	}
	return &api.PTYSize{Rows: c.PTYRows, Cols: c.PTYCols}
}
