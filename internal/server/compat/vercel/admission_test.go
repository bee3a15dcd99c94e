package vercel

import (
	"strconv"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/admission"
)

// TestRetryAfterCapped: a create refused by admission answers 429 with a
// Retry-After the SDK waits for (at most 20 s; it gives up on longer
// ones), however long admission asked for.
func TestRetryAfterCapped(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		retry time.Duration
		want  int
	}{
		{60 * time.Second, 20},
		{3 * time.Second, 3},
	} {
		e.sbs.SetCreateErr(admission.Refused("queue_timeout", "no capacity for the team within the deadline", tc.retry))
		resp, data := e.do("POST", "/v3/sandboxes", map[string]any{"projectId": "prj_1", "name": "queued-" + strconv.Itoa(tc.want)}, "")
		wantError(t, resp, data, 429, "queue_timeout")
		if got := resp.Header.Get("Retry-After"); got != strconv.Itoa(tc.want) {
			t.Errorf("admission asked %s: Retry-After %q, want %d", tc.retry, got, tc.want)
		}
	}
}
