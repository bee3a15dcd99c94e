package control

import (
	"errors"
	"slices"
	"testing"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
)

func TestStateTransitions(t *testing.T) {
	tests := []struct {
		from, to State
		ok       bool
	}{
		{StateQueued, StateProvisioning, true},
		{StateProvisioning, StateInstalling, true}, // no persistent paths
		{StateProvisioning, StateStarting, true},   // and no install
		{StateStarting, StateReady, true},
		{StateReady, StateDeactivating, true},
		{StateDeactivating, StateStopped, true},
		{StateQueued, StateStopped, true}, // superseded
		{StateReady, StateFailed, true},   // the app crashed
		{StateQueued, StateReady, false},  // no skipping the start
		{StateReady, StateStarting, false},
		{StateDeactivating, StateReady, false},
		{StateStopped, StateReady, false}, // final
		{StateFailed, StateStopped, false},
		{StateStopped, StateStopped, false},
	}
	for _, tt := range tests {
		t.Run(string(tt.from)+"->"+string(tt.to), func(t *testing.T) {
			a := store.Activation{ID: "act-1", State: string(tt.from)}
			err := moveTo(&a, tt.to)
			if tt.ok {
				if err != nil || a.State != string(tt.to) {
					t.Fatalf("move = %v, state %s", err, a.State)
				}
				return
			}
			var te *TransitionError
			if !errors.As(err, &te) || !errors.Is(err, sandbox.ErrConflict) || a.State != string(tt.from) {
				t.Fatalf("move = %v (state %s), want a TransitionError and no change", err, a.State)
			}
		})
	}
	for _, s := range States {
		if s.Terminal() != (len(transitions[s]) == 0) {
			t.Errorf("%s: terminal %v but %d moves", s, s.Terminal(), len(transitions[s]))
		}
		if s.Live() == s.Terminal() && s != StateDeactivating {
			t.Errorf("%s: live %v, terminal %v", s, s.Live(), s.Terminal())
		}
		for _, to := range transitions[s] {
			if !slices.Contains(States, to) {
				t.Errorf("%s moves to unknown %s", s, to)
			}
		}
	}
}

// TestStatesMatchAPI: the wire names are the API's constants, which the
// api package (stdlib only) repeats.
func TestStatesMatchAPI(t *testing.T) {
	wire := []string{api.ActivationQueued, api.ActivationProvisioning, api.ActivationRestoring, api.ActivationInstalling,
		api.ActivationStarting, api.ActivationReady, api.ActivationDeactivating, api.ActivationStopped, api.ActivationFailed}
	var ours []string
	for _, s := range States {
		ours = append(ours, string(s))
	}
	if !slices.Equal(ours, wire) {
		t.Errorf("control states %v, api %v", ours, wire)
	}
}
