package control

import (
	"fmt"
	"slices"

	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
)

// State is an activation's state. It moves only along transitions, like a
// sandbox's (internal/sandbox), so no code path can, say, make a stopped
// activation ready again; the store keeps it as its string.
type State string

// Activation states; the API has the same names (api.Activation*), and
// events of an activation are typed by the state they report.
const (
	StateQueued       State = "queued"
	StateProvisioning State = "provisioning"
	StateRestoring    State = "restoring"
	StateInstalling   State = "installing"
	StateStarting     State = "starting"
	StateReady        State = "ready"
	StateFailed       State = "failed"
	StateDeactivating State = "deactivating"
	StateStopped      State = "stopped"
)

// transitions lists the legal moves. Bring-up walks forward, skipping the
// steps a project does not have (no persistent paths: no restoring; no
// install command: no installing). Any live state may end: stopped (a
// stop, a superseded queue entry, a vanished sandbox), failed, or
// deactivating first when there is an app to stop and state to save.
// stopped and failed are final.
var transitions = map[State][]State{
	StateQueued:       {StateProvisioning, StateDeactivating, StateStopped, StateFailed},
	StateProvisioning: {StateRestoring, StateInstalling, StateStarting, StateDeactivating, StateStopped, StateFailed},
	StateRestoring:    {StateInstalling, StateStarting, StateDeactivating, StateStopped, StateFailed},
	StateInstalling:   {StateStarting, StateDeactivating, StateStopped, StateFailed},
	StateStarting:     {StateReady, StateDeactivating, StateStopped, StateFailed},
	StateReady:        {StateDeactivating, StateStopped, StateFailed},
	StateDeactivating: {StateStopped, StateFailed},
}

// States are all the states, in the order bring-up meets them.
var States = []State{StateQueued, StateProvisioning, StateRestoring, StateInstalling, StateStarting,
	StateReady, StateDeactivating, StateStopped, StateFailed}

// Live reports a state on the way up or up: queued through ready.
func (s State) Live() bool {
	switch s {
	case StateQueued, StateProvisioning, StateRestoring, StateInstalling, StateStarting, StateReady:
		return true
	}
	return false
}

// Terminal reports a final state.
func (s State) Terminal() bool { return s == StateStopped || s == StateFailed }

// CanMoveTo reports whether to is a legal next state.
func (s State) CanMoveTo(to State) bool { return slices.Contains(transitions[s], to) }

// liveStates are the states of an activation that holds its project.
func liveStates() []string {
	var out []string
	for _, s := range States {
		if !s.Terminal() {
			out = append(out, string(s))
		}
	}
	return out
}

// TransitionError is an illegal move of an activation.
type TransitionError struct {
	ID       string
	From, To State
}

func (e *TransitionError) Error() string {
	return fmt.Sprintf("activation %s cannot go from %s to %s", e.ID, e.From, e.To)
}

// Unwrap makes errors.Is(err, sandbox.ErrConflict) true.
func (e *TransitionError) Unwrap() error { return sandbox.ErrConflict }

// stateOf reads a stored activation's state.
func stateOf(a store.Activation) State { return State(a.State) }

// moveTo sets a's state to to when the move is legal; a move to the state
// it is in already is not one.
func moveTo(a *store.Activation, to State) error {
	from := stateOf(*a)
	if !from.CanMoveTo(to) {
		return &TransitionError{ID: a.ID, From: from, To: to}
	}
	a.State = string(to)
	return nil
}
