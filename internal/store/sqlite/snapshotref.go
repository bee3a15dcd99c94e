package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"time"

	"github.com/paddock-dev/paddock/internal/store"
)

func (s *Store) PutSnapshotRef(ctx context.Context, r store.SnapshotRef) error {
	if r.ID == "" || r.Team == "" || r.Replica == "" {
		return store.Invalid("a snapshot ref needs an id, a team and a replica")
	}
	lastUsed := r.LastUsed
	r.LastUsed = time.Time{}
	r.CreatedAt = store.Time(r.CreatedAt)
	data, err := json.Marshal(r)
	if err != nil {
		return wrap("put snapshot ref", err)
	}
	_, err = s.w.ExecContext(ctx, `INSERT INTO snapshot_refs (id, team, data, last_used) VALUES (?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET team = excluded.team, data = excluded.data, last_used = excluded.last_used`,
		r.ID, r.Team, string(data), ms(lastUsed))
	if err != nil {
		return wrap("put snapshot ref", err)
	}
	return nil
}

func (s *Store) GetSnapshotRef(ctx context.Context, id string) (store.SnapshotRef, error) {
	var (
		r        store.SnapshotRef
		lastUsed time.Time
	)
	err := s.r.QueryRowContext(ctx, `SELECT data, last_used FROM snapshot_refs WHERE id = ?`, id).Scan(js{&r}, tm{&lastUsed})
	if errors.Is(err, sql.ErrNoRows) {
		return store.SnapshotRef{}, store.NotFound("snapshot_ref", id)
	}
	if err != nil {
		return store.SnapshotRef{}, wrap("get snapshot ref", err)
	}
	r.LastUsed = lastUsed
	return r, nil
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
