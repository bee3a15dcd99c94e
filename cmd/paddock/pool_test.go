package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

func TestPoolsFlag(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want sandbox.PoolSpec
		ok   bool
	}{
		{"min only", "name=web,min=2", sandbox.PoolSpec{Name: "web", Min: 2, Max: 2}, true},
		{"everything", "name=a,image=goose,min=1,max=5,vcpus=0.5,memory=256,disk=1024",
			sandbox.PoolSpec{Name: "a", Image: "goose", Min: 1, Max: 5, Resources: sandbox.Resources{VCPUs: 0.5, MemoryMB: 256, DiskMB: 1024}}, true},
		{"snapshot", "name=s,snapshot=snap-x,min=0,max=3", sandbox.PoolSpec{Name: "s", Snapshot: "snap-x", Max: 3}, true},
		{"runtime", "name=g,runtime=gvisor,min=1", sandbox.PoolSpec{Name: "g", Runtime: "gvisor", Min: 1, Max: 1}, true},
		{"no name", "min=1", sandbox.PoolSpec{}, false},
		{"max below min", "name=a,min=3,max=1", sandbox.PoolSpec{}, false},
		{"unknown key", "name=a,min=1,color=red", sandbox.PoolSpec{}, false},
		{"not key=value", "name=a,min", sandbox.PoolSpec{}, false},
		{"bad number", "name=a,min=two", sandbox.PoolSpec{}, false},
		{"image and snapshot", "name=a,image=i,snapshot=s,min=1", sandbox.PoolSpec{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var f poolsFlag
			err := f.Set(tc.in)
			if (err == nil) != tc.ok {
				t.Fatalf("Set(%q) = %v, want ok=%v", tc.in, err, tc.ok)
			}
			if tc.ok && (len(f) != 1 || f[0].Name != tc.want.Name || f[0].Image != tc.want.Image || f[0].Snapshot != tc.want.Snapshot ||
				f[0].Min != tc.want.Min || f[0].Max != tc.want.Max || f[0].Resources != tc.want.Resources) {
				t.Errorf("Set(%q) = %+v, want %+v", tc.in, f, tc.want)
			}
		})
	}
}

func TestPoolUsage(t *testing.T) {
	var out, errOut bytes.Buffer
	for _, args := range [][]string{
		{"pool"},
		{"pool", "bogus"},
		{"pool", "set"},
		{"pool", "rm"},
		{"pool", "ls", "extra"},
	} {
		if err := run(t.Context(), args, &out, &errOut); exitCode(err, &errOut) != 2 {
			t.Errorf("%q: %v, want a usage error", args, err)
		}
	}
}

// TestPoolVerbs runs `pool set`, `ls` and `rm` against a server that
// records the requests.
func TestPoolVerbs(t *testing.T) {
	var reqs []string
	var spec api.PoolSpec
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reqs = append(reqs, r.Method+" "+r.URL.Path)
		w.Header().Set("Content-Type", "application/json")
		switch r.Method {
		case http.MethodPut:
			if err := json.NewDecoder(r.Body).Decode(&spec); err != nil {
				t.Errorf("decode body: %v", err)
			}
			w.Write([]byte(`{"name":"web","key":"host vcpus=1","min":2,"max":2}`))
		case http.MethodGet:
			w.Write([]byte(`{"pools":[{"name":"web","min":2,"max":5,"target":3,"idle":1,"creating":2,"hits":7,"misses":4,"error":"disk full"}]}`))
		case http.MethodDelete:
			w.WriteHeader(http.StatusNoContent)
		}
	}))
	defer srv.Close()
	conn := []string{"--url", srv.URL, "--token", "t"}
	var out, errb bytes.Buffer
	for _, args := range [][]string{
		append(append([]string{"pool", "set"}, conn...), "--image", "goose", "--memory", "256", "--min", "2", "web"),
		append([]string{"pool", "ls"}, conn...),
		append(append([]string{"pool", "rm"}, conn...), "web"),
	} {
		if err := run(t.Context(), args, &out, &errb); err != nil {
			t.Fatalf("%q: %v (stderr %q)", args, err, errb.String())
		}
	}
	want := []string{"PUT " + api.Prefix + "/pools/web", "GET " + api.Prefix + "/pools", "DELETE " + api.Prefix + "/pools/web"}
	if strings.Join(reqs, "; ") != strings.Join(want, "; ") {
		t.Errorf("requests %q, want %q", reqs, want)
	}
	if spec.Image != "goose" || spec.Resources.MemoryMB != 256 || spec.Min != 2 || spec.Max != 2 {
		t.Errorf("set sent %+v (max defaults to min)", spec)
	}
	for _, s := range []string{"web", "host vcpus=1", "IDLE", "disk full", "7", "4"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("output lacks %q:\n%s", s, out.String())
		}
	}
}
