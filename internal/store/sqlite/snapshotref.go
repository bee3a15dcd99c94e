package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"time"

	"github.com/paddock-dev/paddock/internal/store"
	"github.com/paddock-dev/paddock/internal/store/internal/storeutil"
)

func (s *Store) PutSnapshotRef(ctx context.Context, r store.SnapshotRef) error {
	if r.ID == "" || r.Team == "" || r.Replica == "" || r.CreatedAt.IsZero() {
		return store.Invalid("a snapshot ref needs an id, a team, a replica and a creation time")
	}
	lastUsed := r.LastUsed
	r.LastUsed = time.Time{}
	r.CreatedAt = store.Time(r.CreatedAt)
	data, err := json.Marshal(r)
	if err != nil {
		return wrap("put snapshot ref", err)
	}
	_, err = s.w.ExecContext(ctx, `INSERT INTO snapshot_refs (id, team, data, last_used, created_at) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET team = excluded.team, data = excluded.data, last_used = excluded.last_used,
			created_at = excluded.created_at`,
		r.ID, r.Team, string(data), ms(lastUsed), ms(r.CreatedAt))
	if err != nil {
		return wrap("put snapshot ref", err)
	}
	return nil
}

func scanSnapshotRef(row scanner) (store.SnapshotRef, error) {
	var (
		r        store.SnapshotRef
		lastUsed time.Time
	)
	if err := row.Scan(js{&r}, tm{&lastUsed}); err != nil {
		return store.SnapshotRef{}, err
	}
	r.LastUsed = lastUsed
	return r, nil
}

func (s *Store) GetSnapshotRef(ctx context.Context, id string) (store.SnapshotRef, error) {
	r, err := scanSnapshotRef(s.r.QueryRowContext(ctx, `SELECT data, last_used FROM snapshot_refs WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return store.SnapshotRef{}, store.NotFound("snapshot_ref", id)
	}
	if err != nil {
		return store.SnapshotRef{}, wrap("get snapshot ref", err)
	}
	return r, nil
}

func (s *Store) ListSnapshotRefs(ctx context.Context, team string, page store.Page) ([]store.SnapshotRef, string, error) {
	var (
		where []string
		args  []any
	)
	if team != "" {
		where, args = []string{`team = ?`}, []any{team}
	}
	return listPage(ctx, s, scanSnapshotRef, "list snapshot refs", `SELECT data, last_used FROM snapshot_refs`,
		where, args, "created_at", page, func(r store.SnapshotRef) storeutil.Key { return storeutil.Key{Time: r.CreatedAt, ID: r.ID} })
}

func (s *Store) TouchSnapshotRef(ctx context.Context, id string, at time.Time) error {
	_, err := s.w.ExecContext(ctx, `UPDATE snapshot_refs SET last_used = ? WHERE id = ? AND (last_used IS NULL OR last_used < ?)`,
		ms(at), id, ms(at))
	if err != nil {
		return wrap("touch snapshot ref", err)
	}
	return nil
}

func (s *Store) DeleteSnapshotRef(ctx context.Context, id string) (bool, error) {
	res, err := s.w.ExecContext(ctx, `DELETE FROM snapshot_refs WHERE id = ?`, id)
	if err != nil {
		return false, wrap("delete snapshot ref", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, wrap("delete snapshot ref", err)
	}
	return n > 0, nil
}
