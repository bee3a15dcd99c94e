package server_test

import (
	"cmp"
	"context"
	"encoding/json"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/server"
	"github.com/paddock-dev/paddock/internal/volume"
)

// TestVolumesDisabled: without a volume manager the volume endpoints
// answer 501 volumes_unsupported. The endpoints with real volumes are
// exercised end to end in e2e/volume_linux_test.go.
func TestVolumesDisabled(t *testing.T) {
	e := setup(t)
	for _, c := range []struct{ method, path, body string }{
		{"POST", "/api/v1/volumes", `{"name":"cache"}`},
		{"GET", "/api/v1/volumes", ""},
		{"GET", "/api/v1/volumes/cache", ""},
		{"DELETE", "/api/v1/volumes/cache", ""},
	} {
		t.Run(c.method+" "+c.path, func(t *testing.T) {
			status, _, body := e.raw(t, c.method, c.path, strings.NewReader(c.body), map[string]string{"Content-Type": "application/json"})
			if status != http.StatusNotImplemented || errorCode(t, body).Code != "volumes_unsupported" {
				t.Fatalf("status %d: %s", status, body)
			}
		})
	}
}

// TestVolumesPerTeam: the volume routes act on the caller's team's volume
// of the name: two teams each create "cache", each gets, lists and
// deletes its own, and another team's is not found (the host admin's
// too, though its list shows every team's).
func TestVolumesPerTeam(t *testing.T) {
	e := setupTeams(t)
	srv, err := server.New(server.Config{Sandboxes: e.sbs, Auth: e.auth, Accounts: e.auth, Volumes: &fakeVolumes{}})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	e.url = hs.URL

	teamOf := func(data []byte) string {
		var v api.Volume
		if err := json.Unmarshal(data, &v); err != nil {
			t.Fatal(err)
		}
		return v.TeamID
	}
	listOf := func(token string) []string {
		var l api.VolumeList
		if err := json.Unmarshal(e.expect(t, token, "GET", "/api/v1/volumes", "", http.StatusOK, ""), &l); err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, v := range l.Volumes {
			out = append(out, v.TeamID+"/"+v.Name)
		}
		return out
	}
	for _, tc := range []struct{ token, team string }{{e.memberA, e.teamA}, {e.memberB, e.teamB}} {
		if got := teamOf(e.expect(t, tc.token, "POST", "/api/v1/volumes", `{"name":"cache"}`, http.StatusCreated, "")); got != tc.team {
			t.Fatalf("created in team %q, want %q", got, tc.team)
		}
	}
	e.expect(t, e.adminA, "POST", "/api/v1/volumes", `{"name":"cache"}`, http.StatusConflict, "volume_exists")
	for _, tc := range []struct{ token, team string }{{e.memberA, e.teamA}, {e.memberB, e.teamB}} {
		if got := teamOf(e.expect(t, tc.token, "GET", "/api/v1/volumes/cache", "", http.StatusOK, "")); got != tc.team {
			t.Fatalf("got team %q's, want %q's", got, tc.team)
		}
		if got := listOf(tc.token); !slices.Equal(got, []string{tc.team + "/cache"}) {
			t.Fatalf("team %s lists %v", tc.team, got)
		}
	}
	if got, want := listOf(e.host), slices.Sorted(slices.Values([]string{e.teamA + "/cache", e.teamB + "/cache"})); !slices.Equal(got, want) {
		t.Fatalf("host admin lists %v, want %v", got, want)
	}
	e.expect(t, e.host, "GET", "/api/v1/volumes/cache", "", http.StatusNotFound, "volume_not_found")
	e.expect(t, e.host, "DELETE", "/api/v1/volumes/cache", "", http.StatusNotFound, "volume_not_found")

	e.expect(t, e.memberB, "DELETE", "/api/v1/volumes/cache", "", http.StatusNoContent, "")
	e.expect(t, e.memberB, "GET", "/api/v1/volumes/cache", "", http.StatusNotFound, "volume_not_found")
	e.expect(t, e.memberB, "DELETE", "/api/v1/volumes/cache", "", http.StatusNotFound, "volume_not_found")
	if got := teamOf(e.expect(t, e.memberA, "GET", "/api/v1/volumes/cache", "", http.StatusOK, "")); got != e.teamA {
		t.Fatalf("team A's volume after team B deleted its own: team %q", got)
	}
}

// fakeVolumes is a server.Volumes that keeps volumes by (team, name), as
// volume.Manager does.
type fakeVolumes struct {
	mu   sync.Mutex // guards vols
	vols map[[2]string]volume.Volume
}

var _ server.Volumes = (*fakeVolumes)(nil)

func volumeNotFound(name string) error {
	return sandbox.Errorf(sandbox.ErrNotFound, "volume_not_found", "volume %q not found", name)
}

func (f *fakeVolumes) Create(_ context.Context, teamID, name string, size int64) (volume.Volume, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if teamID == "" {
		return volume.Volume{}, sandbox.Errorf(sandbox.ErrInvalid, "invalid_team", "no team")
	}
	k := [2]string{teamID, name}
	if _, ok := f.vols[k]; ok {
		return volume.Volume{}, sandbox.Errorf(sandbox.ErrConflict, "volume_exists", "volume %q already exists", name)
	}
	if f.vols == nil {
		f.vols = map[[2]string]volume.Volume{}
	}
	v := volume.Volume{Name: name, TeamID: teamID, SizeBytes: max(size, volume.MinSize), CreatedAt: time.Unix(0, 0)}
	f.vols[k] = v
	return v, nil
}

func (f *fakeVolumes) Get(_ context.Context, teamID, name string) (volume.Volume, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.vols[[2]string{teamID, name}]
	if !ok {
		return volume.Volume{}, volumeNotFound(name)
	}
	return v, nil
}

func (f *fakeVolumes) List(ctx context.Context, teamID string) ([]volume.Volume, error) {
	var out []volume.Volume
	all, _ := f.ListAll(ctx)
	for _, v := range all {
		if v.TeamID == teamID {
			out = append(out, v)
		}
	}
	return out, nil
}

func (f *fakeVolumes) ListAll(context.Context) ([]volume.Volume, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := slices.Collect(maps.Values(f.vols))
	slices.SortFunc(out, func(a, b volume.Volume) int {
		return cmp.Or(cmp.Compare(a.TeamID, b.TeamID), cmp.Compare(a.Name, b.Name))
	})
	return out, nil
}

func (f *fakeVolumes) Delete(_ context.Context, teamID, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := [2]string{teamID, name}
	if _, ok := f.vols[k]; !ok {
		return volumeNotFound(name)
	}
	delete(f.vols, k)
	return nil
}
