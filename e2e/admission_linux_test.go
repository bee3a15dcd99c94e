package e2e

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/control"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
)

// TestAdmissionQueue: with a team limit of 2 and 5 activations at once, 2
// run and 3 wait at places 1–3 (their progress streams say so), each goes
// as another ends; one more with a short deadline gets 429 with
// Retry-After.
func TestAdmissionQueue(t *testing.T) {
	ps := startProjects(t, nil)
	ctx := ctxFor(t, 5*time.Minute)
	if _, err := ps.client.SetTeamLimits(ctx, projTeam.TeamID, api.TeamLimits{Concurrent: 2}); err != nil {
		t.Fatal(err)
	}
	py := control.ProjectRequest{Source: control.Source{Image: "host"}, HealthPath: "/", MaxLifetime: e2eLifetime,
		Start: "exec python3 -m http.server 3001 --bind 0.0.0.0", Resources: sandbox.Resources{VCPUs: 0.5, MemoryMB: 128, PIDs: 64}}
	projects := make([]string, 6)
	for i := range projects {
		req := py
		req.Name = fmt.Sprintf("queued-%d", i)
		v, err := ps.svc.CreateProject(ctx, projTeam, req)
		if err != nil {
			t.Fatal(err)
		}
		projects[i] = v.ID
	}

	// Five at once; the order of arrival is the order of the calls'
	// returns only up to the queue, so read each activation's place.
	acts := make([]store.Activation, 5)
	var wg sync.WaitGroup
	for i := range acts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, err := ps.svc.Activate(ctx, projTeam, projects[i])
			if err != nil {
				t.Errorf("activate: %v", err)
			}
			acts[i] = a
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	// place is an activation's state and its latest place in the queue.
	place := func(id string) (string, int) {
		a, err := ps.svc.GetActivation(ctx, projTeam, id)
		if err != nil {
			t.Fatal(err)
		}
		evs, err := ps.store.ListEvents(ctx, store.EventFilter{ActivationID: id, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		pos := 0
		for _, e := range evs {
			if p, ok := e.Data["position"]; ok && e.Type == string(control.StateQueued) {
				pos, _ = strconv.Atoi(p)
			}
		}
		return a.State, pos
	}
	// state sums up the five: which are ready, and the places of the
	// queued ones by activation.
	state := func() (ready []int, queued map[int]int) {
		queued = map[int]int{}
		for i, a := range acts {
			switch st, pos := place(a.ID); st {
			case string(control.StateReady):
				ready = append(ready, i)
			case string(control.StateQueued):
				queued[i] = pos
			}
		}
		return ready, queued
	}
	waitFor := func(what string, cond func(ready []int, queued map[int]int) bool) ([]int, map[int]int) {
		t.Helper()
		deadline := time.Now().Add(2 * time.Minute)
		for {
			ready, queued := state()
			if cond(ready, queued) {
				return ready, queued
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: ready %v, queued (activation: place) %v", what, ready, queued)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	places := func(queued map[int]int) []int {
		var out []int
		for _, p := range queued {
			out = append(out, p)
		}
		slices.Sort(out)
		return out
	}
	ready, queued := waitFor("2 ready, 3 queued at 1–3", func(ready []int, queued map[int]int) bool {
		return len(ready) == 2 && slices.Equal(places(queued), []int{1, 2, 3})
	})
	byPlace := map[int]int{}
	for i, p := range queued {
		byPlace[p] = i
	}

	// A sixth with a short deadline over HTTP: 429 with Retry-After.
	req, err := http.NewRequestWithContext(ctx, http.MethodPost,
		ps.http.URL+api.Prefix+"/projects/"+projects[5]+"/activate?wait=true&queueTimeoutMs=300", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+ps.tokens[projTeam.TeamID])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("activation past its deadline: %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}

	// One ends: the first in the queue goes, the others move up.
	if _, err := ps.svc.Deactivate(ctx, projTeam, projects[ready[0]], ""); err != nil {
		t.Fatal(err)
	}
	waitFor("the first waiter ready, the others at 1–2", func(r []int, q map[int]int) bool {
		return slices.Contains(r, byPlace[1]) && slices.Equal(places(q), []int{1, 2}) && q[byPlace[2]] == 1
	})
	if _, err := ps.svc.Deactivate(ctx, projTeam, projects[ready[1]], ""); err != nil {
		t.Fatal(err)
	}
	waitFor("the second waiter ready", func(r []int, q map[int]int) bool {
		return slices.Contains(r, byPlace[2]) && q[byPlace[3]] == 1
	})
	if _, err := ps.svc.Deactivate(ctx, projTeam, projects[byPlace[1]], ""); err != nil {
		t.Fatal(err)
	}
	waitFor("the last waiter ready", func(r []int, q map[int]int) bool { return slices.Contains(r, byPlace[3]) })

	st, err := ps.client.TeamLimits(ctx, projTeam.TeamID)
	if err != nil {
		t.Fatal(err)
	}
	if st.Usage.Concurrent != 2 || st.Usage.Queued != 0 {
		t.Fatalf("team use at the end: %+v", st.Usage)
	}
	for _, i := range []int{byPlace[2], byPlace[3]} {
		if _, err := ps.svc.Deactivate(context.WithoutCancel(ctx), projTeam, projects[i], ""); err != nil {
			t.Fatal(err)
		}
	}
}
