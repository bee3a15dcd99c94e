package server_test

import (
	"net/http"
	"strings"
	"testing"
)

// TestSnapshotRequests checks what the server itself decides: without a
// snapshot store the endpoints answer 501, and a create or fork naming
// both an image and a snapshot is a 400 before any sandbox work.
func TestSnapshotRequests(t *testing.T) {
	e := setup(t)
	cases := []struct {
		name, method, path, body string
		status                   int
		code                     string
	}{
		{"snapshot without store", "POST", "/api/v1/sandboxes/run/snapshot", "", http.StatusNotImplemented, "snapshots_disabled"},
		{"list without store", "GET", "/api/v1/snapshots", "", http.StatusNotImplemented, "snapshots_disabled"},
		{"delete without store", "DELETE", "/api/v1/snapshots/snap-x", "", http.StatusNotImplemented, "snapshots_disabled"},
		{"create with image and snapshot", "POST", "/api/v1/sandboxes", `{"image":"host","snapshot":"snap-x"}`, http.StatusBadRequest, "image_and_snapshot"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, _, body := e.raw(t, c.method, c.path, strings.NewReader(c.body), map[string]string{"Content-Type": "application/json"})
			if status != c.status {
				t.Fatalf("status %d, want %d: %s", status, c.status, body)
			}
			if got := errorCode(t, body).Code; got != c.code {
				t.Errorf("code %q, want %q", got, c.code)
			}
		})
	}
}
