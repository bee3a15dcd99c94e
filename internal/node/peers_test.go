package node

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// fakePeers is another replica's sandboxes, each with where it is served.
type fakePeers struct {
	sbs    []sandbox.Sandbox
	url    string // "" = the replica is gone
	err    error  // Locate's and Sandboxes' failure
	locate atomic.Int32
}

func (p *fakePeers) Locate(_ context.Context, id string) error {
	p.locate.Add(1)
	if p.err != nil {
		return p.err
	}
	for _, sb := range p.sbs {
		if sb.ID == id && sb.Pool == "" {
			return &sandbox.ElsewhereError{ID: id, TeamID: sb.TeamID, Replica: "node-a", URL: p.url}
		}
	}
	return nil
}

func (p *fakePeers) Sandboxes(context.Context) ([]sandbox.Sandbox, error) { return p.sbs, p.err }

func TestPeersLookup(t *testing.T) {
	peers := &fakePeers{url: "http://10.0.0.1:8080", sbs: []sandbox.Sandbox{
		{ID: "sbxpeer000000000000000001", TeamID: "team-a", State: sandbox.Running, CreatedAt: epoch},
	}}
	e := newEnv(t, func(c *Config) { c.Peers = peers })
	local := e.create(t)

	// A local id never asks the peers.
	e.get(t, local.ID)
	if _, err := e.m.Agent(t.Context(), local.ID); err != nil {
		t.Fatal(err)
	}
	if n := peers.locate.Load(); n != 0 {
		t.Fatalf("Locate asked %d times for local ids", n)
	}

	id := peers.sbs[0].ID
	if !sandbox.ValidID(id) {
		t.Fatalf("test id %q is not valid", id)
	}
	for name, call := range map[string]func() error{
		"Get":    func() error { _, err := e.m.Get(t.Context(), id); return err },
		"Agent":  func() error { _, err := e.m.Agent(t.Context(), id); return err },
		"Exec":   func() error { _, err := e.m.Exec(t.Context(), id, sandbox.ExecRequest{Cmd: "true"}); return err },
		"Stop":   func() error { _, err := e.m.Stop(t.Context(), id); return err },
		"Extend": func() error { _, err := e.m.ExtendTimeout(t.Context(), id, time.Minute); return err },
		"Delete": func() error { return e.m.Delete(t.Context(), id) },
	} {
		var ee *sandbox.ElsewhereError
		if err := call(); !errors.As(err, &ee) || ee.URL != peers.url || !errors.Is(err, sandbox.ErrUnavailable) {
			t.Errorf("%s of another replica's sandbox: %v, want an ElsewhereError", name, err)
		}
	}
	// Unknown everywhere: not found, as before.
	_, err := e.m.Get(t.Context(), "sbxnone000000000000000001")
	wantErr(t, err, sandbox.ErrNotFound, "")
	// The peers cannot tell: an error, never "not found".
	peers.err = errors.New("store down")
	if _, err := e.m.Get(t.Context(), id); err == nil || errors.Is(err, sandbox.ErrNotFound) {
		t.Fatalf("Get with the peers failing: %v", err)
	}
}

func TestPeersList(t *testing.T) {
	peers := &fakePeers{url: "http://10.0.0.1:8080"}
	e := newEnv(t, func(c *Config) { c.Peers = peers })
	var want []string
	for i := range 3 {
		e.clock.Advance(time.Second)
		sb, err := e.m.Create(t.Context(), sandbox.CreateRequest{TeamID: "team-a"})
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, sb.ID)
		// Interleaved in time with this node's.
		peer := sandbox.Sandbox{ID: "sbxpeer00000000000000000" + string(rune('1'+i)), TeamID: "team-a", State: sandbox.Running,
			CreatedAt: e.clock.Now().Add(time.Millisecond)}
		peers.sbs = append(peers.sbs, peer)
		want = append(want, peer.ID)
	}
	peers.sbs = append(peers.sbs,
		sandbox.Sandbox{ID: "sbxpeerpool00000000000001", State: sandbox.Running, Pool: "p", CreatedAt: epoch},
		sandbox.Sandbox{ID: "sbxpeerteamb0000000000001", TeamID: "team-b", State: sandbox.Running, CreatedAt: epoch})

	var got []string
	cursor := ""
	for range 10 {
		items, next, err := e.m.List(t.Context(), sandbox.ListOptions{TeamID: "team-a", Cursor: cursor, Limit: 4, AllReplicas: true})
		if err != nil {
			t.Fatal(err)
		}
		for _, sb := range items {
			got = append(got, sb.ID)
		}
		if cursor = next; cursor == "" {
			break
		}
	}
	if len(got) != len(want) {
		t.Fatalf("listed %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("listed %v, want %v", got, want)
		}
	}
	// This host's own work lists this host's only.
	local, _, err := e.m.List(t.Context(), sandbox.ListOptions{TeamID: "team-a"})
	if err != nil || len(local) != 3 {
		t.Fatalf("List without AllReplicas: %d sandboxes, %v; want this node's 3", len(local), err)
	}
	peers.err = errors.New("store down")
	if _, _, err := e.m.List(t.Context(), sandbox.ListOptions{AllReplicas: true}); err == nil {
		t.Fatal("List hid the peers' failure")
	}
}
