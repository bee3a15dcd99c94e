package node

import (
	"slices"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// TestExecDoesNotWaitForHistory: a command's answer never waits for its
// history write, the writes keep Exec's order, and a stop writes every
// start handed over before it records the sandbox's last words, so the
// stopped sandbox's history (what the API reads) is whole and in order.
func TestExecDoesNotWaitForHistory(t *testing.T) {
	x := newExecEnv(t)
	x.hist.gate = make(chan struct{})
	sb := x.createSandbox(t)
	var ids []string
	for range 3 {
		done := make(chan struct{})
		var id string
		go func() {
			defer close(done)
			cmd, err := x.m.Exec(t.Context(), sb.ID, sandbox.ExecRequest{Cmd: "true", Wait: true})
			if err != nil {
				t.Error(err)
			}
			id = cmd.ID
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			close(x.hist.gate)
			t.Fatal("Exec waited for the history write")
		}
		ids = append(ids, id)
	}
	stopped := make(chan error, 1)
	go func() {
		_, err := x.m.Stop(t.Context(), sb.ID)
		stopped <- err
	}()
	close(x.hist.gate)
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	x.hist.mu.Lock()
	calls := slices.Clone(x.hist.calls)
	x.hist.mu.Unlock()
	want := []string{"started " + ids[0], "started " + ids[1], "started " + ids[2], "finished " + sb.ID}
	if !slices.Equal(calls, want) {
		t.Errorf("history calls %q, want %q", calls, want)
	}
}

// TestCloseWritesStarts: Close writes what Exec handed over; a command
// started after it is written in place.
func TestCloseWritesStarts(t *testing.T) {
	x := newExecEnv(t)
	x.hist.gate = make(chan struct{})
	sb := x.createSandbox(t)
	if _, err := x.m.Exec(t.Context(), sb.ID, sandbox.ExecRequest{Cmd: "sleep"}); err != nil {
		t.Fatal(err)
	}
	closed := make(chan error, 1)
	go func() { closed <- x.m.Close() }()
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) before the history write ended", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(x.hist.gate)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	x.hist.mu.Lock()
	n := len(x.hist.started)
	x.hist.mu.Unlock()
	if n != 1 {
		t.Fatalf("after Close, %d starts written, want 1", n)
	}
	x.m.startLog.add(startRecord{ctx: t.Context(), sb: sb})
	x.hist.mu.Lock()
	n = len(x.hist.started)
	x.hist.mu.Unlock()
	if n != 2 {
		t.Fatalf("a start handed over after Close was not written in place: %d written", n)
	}
}
