package sqlite

import (
	"context"
	"database/sql"
	"errors"

	"github.com/paddock-dev/paddock/internal/store"
)

const replicaCols = `name, url, updated_at`

func scanReplica(r scanner) (store.Replica, error) {
	var rep store.Replica
	err := r.Scan(&rep.Name, &rep.URL, tm{&rep.UpdatedAt})
	return rep, err
}

func (s *Store) PutReplica(ctx context.Context, r store.Replica) error {
	if r.Name == "" {
		return store.Invalid("a replica needs a name")
	}
	_, err := s.w.ExecContext(ctx, `INSERT INTO replicas (`+replicaCols+`) VALUES (?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET url = excluded.url, updated_at = excluded.updated_at`,
		r.Name, r.URL, ms(r.UpdatedAt))
	if err != nil {
		return wrap("put replica", err)
	}
	return nil
}

func (s *Store) GetReplica(ctx context.Context, name string) (store.Replica, error) {
	rep, err := scanReplica(s.r.QueryRowContext(ctx, `SELECT `+replicaCols+` FROM replicas WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Replica{}, store.NotFound("replica", name)
	}
	if err != nil {
		return store.Replica{}, wrap("get replica", err)
	}
	return rep, nil
}

func (s *Store) ListReplicas(ctx context.Context) ([]store.Replica, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+replicaCols+` FROM replicas ORDER BY name`)
	if err != nil {
		return nil, wrap("list replicas", err)
	}
	defer rows.Close()
	var out []store.Replica
	for rows.Next() {
		rep, err := scanReplica(rows)
		if err != nil {
			return nil, wrap("list replicas", err)
		}
		out = append(out, rep)
	}
	if err := rows.Err(); err != nil {
		return nil, wrap("list replicas", err)
	}
	return out, nil
}
