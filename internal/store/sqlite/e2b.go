package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"

	"github.com/paddock-dev/paddock/internal/store"
	"github.com/paddock-dev/paddock/internal/store/internal/storeutil"
)

const e2bSandboxCols = `id, team_id, data, created_at`

func scanE2BSandbox(r scanner) (store.E2BSandbox, error) {
	var v store.E2BSandbox
	var data string
	err := r.Scan(&v.ID, &v.TeamID, &data, tm{&v.CreatedAt})
	v.Data = json.RawMessage(data)
	return v, err
}

func (s *Store) CreateE2BSandbox(ctx context.Context, v store.E2BSandbox) error {
	v, err := storeutil.E2BSandbox(v)
	if err != nil {
		return err
	}
	_, err = s.w.ExecContext(ctx, `INSERT INTO e2b_sandboxes (`+e2bSandboxCols+`) VALUES (?, ?, ?, ?)`,
		v.ID, v.TeamID, string(v.Data), ms(v.CreatedAt))
	if isUnique(err) {
		return store.Exists("e2b_sandbox", v.ID)
	}
	if err != nil {
		return wrap("create e2b sandbox", err)
	}
	return nil
}

func (s *Store) GetE2BSandbox(ctx context.Context, teamID, id string) (store.E2BSandbox, error) {
	v, err := scanE2BSandbox(s.r.QueryRowContext(ctx,
		`SELECT `+e2bSandboxCols+` FROM e2b_sandboxes WHERE id = ? AND team_id = ?`, id, teamID))
	if errors.Is(err, sql.ErrNoRows) {
		return v, store.NotFound("e2b_sandbox", id)
	}
	if err != nil {
		return v, wrap("get e2b sandbox", err)
	}
	return v, nil
}

func (s *Store) DeleteE2BSandbox(ctx context.Context, teamID, id string) error {
	res, err := s.w.ExecContext(ctx, `DELETE FROM e2b_sandboxes WHERE id = ? AND team_id = ?`, id, teamID)
	return affected(res, err, "delete e2b sandbox", "e2b_sandbox", id)
}

func (s *Store) ListE2BSandboxes(ctx context.Context, f store.E2BSandboxFilter, page store.Page) ([]store.E2BSandbox, string, error) {
	return listPage(ctx, s, scanE2BSandbox, "list e2b sandboxes", `SELECT `+e2bSandboxCols+` FROM e2b_sandboxes`,
		[]string{`team_id = ?`}, []any{f.TeamID}, "created_at", page,
		func(v store.E2BSandbox) storeutil.Key { return storeutil.Key{Time: v.CreatedAt, ID: v.ID} })
}
