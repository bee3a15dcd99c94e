package vercel

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/paddock-dev/paddock/internal/httperr"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Kinds only Vercel's API has. The SDK branches on them: any 410 makes it
// resume the sandbox and retry once, as does a 422 sandbox_stopping or
// sandbox_snapshotting; a 410 snapshot_not_found makes getOrCreate start
// over. They are mapped to statuses here and nowhere else; every other
// kind goes through httperr, paddock's one mapping.
var (
	errKindGone          = errors.New("gone")          // 410
	errKindUnprocessable = errors.New("unprocessable") // 422
)

func errSessionStopped(sid string) error {
	return sandbox.Errorf(errKindGone, "sandbox_stopped", "session %s is stopped", sid)
}

func errSessionBusy(sid, status string) error {
	code := "sandbox_stopping"
	if status == "snapshotting" {
		code = "sandbox_snapshotting"
	}
	return sandbox.Errorf(errKindUnprocessable, code, "session %s is %s", sid, status)
}

var errNoSnapshotToResume = sandbox.Errorf(errKindGone, "snapshot_not_found", "Cannot resume sandbox: no snapshot available.")

var errNoSnapshots = sandbox.Errorf(sandbox.ErrUnsupported, "not_implemented", "this paddock server cannot take snapshots")

// maxRetryAfter bounds the Retry-After of a 429: the SDK gives up on a
// longer one instead of waiting.
const maxRetryAfter = 20 * time.Second

// writeError answers err in Vercel's shape, {"error":{"code","message"}},
// which is paddock's too.
func (h *Handler) writeError(w http.ResponseWriter, r *http.Request, err error) {
	forwarded, err := httperr.Forward(w, r, err)
	if forwarded {
		return // another replica runs the sandbox, and answered
	}
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		return // the client left
	}
	var status int
	switch {
	case errors.Is(err, errKindGone):
		status = http.StatusGone
	case errors.Is(err, errKindUnprocessable):
		status = http.StatusUnprocessableEntity
	case errors.Is(err, sandbox.ErrNotRunning):
		// A session that stopped between our check and the agent call.
		status, err = http.StatusGone, fmt.Errorf("%w: %w", errSessionStopped(r.PathValue("sid")), err)
	}
	if status == 0 {
		status = httperr.WriteMaxRetry(w, err, maxRetryAfter)
	} else {
		code := sandbox.CodeOf(err)
		w.Header().Set("Cache-Control", "no-store")
		httperr.WriteJSON(w, status, errorBody{Error: errorDetail{Code: code, Message: httperr.Message(err, status)}})
	}
	switch {
	case status == http.StatusInternalServerError:
		h.log.Error("vercel compat: internal error", "method", r.Method, "path", r.URL.Path, "err", err)
	case status >= 500 && status != http.StatusNotImplemented:
		h.log.Warn("vercel compat: request failed", "method", r.Method, "path", r.URL.Path, "status", status, "err", err)
	}
}

type errorBody struct {
	Error errorDetail `json:"error"`
}
