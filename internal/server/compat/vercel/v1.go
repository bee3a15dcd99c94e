package vercel

import (
	"cmp"
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"

	"github.com/paddock-dev/paddock/internal/image"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// v1Runtime is what a v1 sandbox created without a runtime reports: the
// field is required, and "host" is the image such sandboxes run on.
const v1Runtime = "host"

// v1Sandbox is SDK 1.x's sandbox: a session with a runtime it requires.
func v1Sandbox(ws wireSession) wireSession {
	if ws.Runtime == nil {
		rt := v1Runtime
		ws.Runtime = &rt
	}
	return ws
}

// createV1 is POST /v1/sandboxes: an ephemeral sandbox, named by the id of
// its one paddock sandbox.
func (h *Handler) createV1(w http.ResponseWriter, r *http.Request) error {
	var req createRequest // its v2 fields stay empty
	if err := decodeCreate(w, r, &req.createV1Request); err != nil {
		return err
	}
	if err := checkProject(req.ProjectID); err != nil {
		return err
	}
	cfg, src, err := h.configFromCreate(r, &req)
	if err != nil {
		return err
	}
	rec := Record{Scope: Scope{Team: teamOf(r), Project: req.ProjectID}, API: apiV1, Config: cfg}
	if err := h.startFirstSession(r.Context(), &rec, src); err != nil {
		return err
	}
	return h.answerV1(w, r, rec)
}

func (h *Handler) answerV1(w http.ResponseWriter, r *http.Request, rec Record) error {
	l, err := h.live(r.Context(), rec.current())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"sandbox": v1Sandbox(h.wireSessionOf(r.Context(), &rec, l)), "routes": h.routesOf(l)})
	return nil
}

// getV1 is GET /v1/sandboxes/{sid}.
func (h *Handler) getV1(w http.ResponseWriter, r *http.Request) error {
	rec, _, err := h.sessionRecord(r)
	if err != nil {
		return err
	}
	return h.answerV1(w, r, rec)
}

// timeWindow reads v1's since/until (epoch ms) and limit.
func timeWindow(r *http.Request) (since, until int64, limit int, err error) {
	q := r.URL.Query()
	if v := q.Get("since"); v != "" {
		if since, err = strconv.ParseInt(v, 10, 64); err != nil {
			return 0, 0, 0, badRequest("since must be epoch milliseconds")
		}
	}
	if v := q.Get("until"); v != "" {
		if until, err = strconv.ParseInt(v, 10, 64); err != nil {
			return 0, 0, 0, badRequest("until must be epoch milliseconds")
		}
	}
	limit, err = limitParam(r)
	return since, until, limit, err
}

// timePaginate keeps items created in [since, until), newest first, up to
// limit; next is the until that gives the following (older) page.
func timePaginate[T any](items []T, createdAt func(T) int64, since, until int64, limit int) ([]T, timePage) {
	slices.SortStableFunc(items, func(a, b T) int { return cmp.Compare(createdAt(b), createdAt(a)) })
	kept := []T{}
	more := false
	for _, it := range items {
		c := createdAt(it)
		if c < since || (until > 0 && c >= until) {
			continue
		}
		if len(kept) == limit {
			more = true
			break
		}
		kept = append(kept, it)
	}
	p := timePage{Count: len(kept)}
	if len(kept) > 0 {
		first := createdAt(kept[0])
		p.Prev = &first
		if more {
			last := createdAt(kept[len(kept)-1])
			p.Next = &last
		}
	}
	return kept, p
}

// listV1 is GET /v1/sandboxes?project=&limit=&since=&until=.
func (h *Handler) listV1(w http.ResponseWriter, r *http.Request) error {
	since, until, limit, err := timeWindow(r)
	if err != nil {
		return err
	}
	// The store pages oldest first: the newest limit+1 in the window are
	// the last ones read, and no more are kept.
	var recs []Record
	err = h.store.eachSandbox(r.Context(), listScope(r), apiV1, func(rec Record) error {
		if rec.current() == nil || rec.CreatedAt < since || (until > 0 && rec.CreatedAt >= until) {
			return nil
		}
		if len(recs) > limit {
			recs = slices.Delete(recs, 0, 1)
		}
		recs = append(recs, rec)
		return nil
	})
	if err != nil {
		return err
	}
	recs, p := timePaginate(recs, func(rec Record) int64 { return rec.CreatedAt }, since, until, limit)
	out := []wireSession{}
	for i := range recs {
		l, err := h.live(r.Context(), recs[i].current())
		if err != nil {
			return err
		}
		out = append(out, v1Sandbox(h.wireSessionOf(r.Context(), &recs[i], l)))
	}
	writeJSON(w, http.StatusOK, map[string]any{"sandboxes": out, "pagination": p})
	return nil
}

// snapshotsOf lists scope's snapshots that paddock still keeps.
func (h *Handler) snapshotsOf(ctx context.Context, scope Scope, sandboxName string) ([]SnapshotRecord, map[string]*image.Snapshot, error) {
	if h.snaps == nil {
		return nil, nil, errNoSnapshots
	}
	kept := map[string]*image.Snapshot{}
	var out []SnapshotRecord
	err := h.store.eachSnapshot(ctx, scope, sandboxName, func(sr SnapshotRecord) error {
		snap, err := h.snaps.GetSnapshot(ctx, sr.ID)
		if errors.Is(err, sandbox.ErrNotFound) {
			return nil // expired
		}
		if err != nil {
			return err
		}
		kept[sr.ID] = snap
		out = append(out, sr)
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return out, kept, nil
}

// listSnapshotsV1 is GET /v1/sandboxes/snapshots.
func (h *Handler) listSnapshotsV1(w http.ResponseWriter, r *http.Request) error {
	since, until, limit, err := timeWindow(r)
	if err != nil {
		return err
	}
	scope := listScope(r)
	recs, snaps, err := h.snapshotsOf(r.Context(), scope, "")
	if err != nil {
		return err
	}
	recs, p := timePaginate(recs, func(sr SnapshotRecord) int64 { return sr.CreatedAt }, since, until, limit)
	out := []wireSnapshot{}
	for _, sr := range recs {
		out = append(out, wireSnapshotOf(snaps[sr.ID], sr, true))
	}
	writeJSON(w, http.StatusOK, map[string]any{"snapshots": out, "pagination": p})
	return nil
}

// listSnapshotsV2 is GET /v2/sandboxes/snapshots?project=&name=.
func (h *Handler) listSnapshotsV2(w http.ResponseWriter, r *http.Request) error {
	desc, err := sortOrder(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	recs, snaps, err := h.snapshotsOf(r.Context(), listScope(r), q.Get("name"))
	if err != nil {
		return err
	}
	slices.SortStableFunc(recs, func(a, b SnapshotRecord) int {
		if desc {
			return cmp.Compare(b.CreatedAt, a.CreatedAt)
		}
		return cmp.Compare(a.CreatedAt, b.CreatedAt)
	})
	recs, p, err := page(r, recs)
	if err != nil {
		return err
	}
	out := []wireSnapshot{}
	for _, sr := range recs {
		out = append(out, wireSnapshotOf(snaps[sr.ID], sr, false))
	}
	writeJSON(w, http.StatusOK, map[string]any{"snapshots": out, "pagination": p})
	return nil
}

// snapshotFor finds {id}: a snapshot paddock keeps and, when this API took
// it, one of the request's team.
func (h *Handler) snapshotFor(r *http.Request) (*image.Snapshot, SnapshotRecord, error) {
	return h.visibleSnapshot(r, r.PathValue("id"))
}

// getSnapshot is GET /v{1,2}/sandboxes/snapshots/{id}.
func (h *Handler) getSnapshot(w http.ResponseWriter, r *http.Request) error {
	snap, sr, err := h.snapshotFor(r)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"snapshot": wireSnapshotOf(snap, sr, isV1(r))})
	return nil
}

// deleteSnapshot is DELETE /v{1,2}/sandboxes/snapshots/{id}.
func (h *Handler) deleteSnapshot(w http.ResponseWriter, r *http.Request) error {
	snap, sr, err := h.snapshotFor(r)
	if err != nil {
		return err
	}
	ctx := context.WithoutCancel(r.Context())
	if err := h.snaps.DeleteSnapshot(ctx, snap.ID); err != nil {
		return err
	}
	if err := h.store.deleteSnapshot(ctx, callerOf(r).team, snap.ID); err != nil {
		return err
	}
	out := wireSnapshotOf(snap, sr, isV1(r))
	out.Status = "deleted"
	out.UpdatedAt = ms(h.now())
	writeJSON(w, http.StatusOK, map[string]any{"snapshot": out})
	return nil
}
