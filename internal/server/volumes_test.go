package server_test

import (
	"net/http"
	"strings"
	"testing"
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
