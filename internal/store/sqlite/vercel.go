package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"

	"github.com/paddock-dev/paddock/internal/store"
	"github.com/paddock-dev/paddock/internal/store/internal/storeutil"
)

// ---- Vercel sandboxes ----

const vercelSandboxCols = `team_id, project, name, api, session_ids, data, version, created_at, updated_at`

func scanVercelSandbox(r scanner) (store.VercelSandbox, error) {
	var v store.VercelSandbox
	var data string
	err := r.Scan(&v.TeamID, &v.Project, &v.Name, &v.API, js{&v.SessionIDs}, &data, &v.Version, tm{&v.CreatedAt}, tm{&v.UpdatedAt})
	v.Data = json.RawMessage(data)
	if len(v.SessionIDs) == 0 {
		v.SessionIDs = nil
	}
	return v, err
}

// indexSessions makes vercel_sessions list exactly ids for the sandbox key.
func indexSessions(ctx context.Context, tx *sql.Tx, key string, ids []string) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM vercel_sessions WHERE sandbox_id = ?`, key); err != nil {
		return err
	}
	for _, id := range ids {
		if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO vercel_sessions (session_id, sandbox_id) VALUES (?, ?)`, id, key); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) CreateVercelSandbox(ctx context.Context, v store.VercelSandbox) error {
	v, err := storeutil.VercelSandbox(v, true)
	if err != nil {
		return err
	}
	ids, err := jsonText(v.SessionIDs, len(v.SessionIDs) == 0)
	if err != nil {
		return wrap("create vercel sandbox", err)
	}
	key := storeutil.VercelSandboxKey(v.TeamID, v.Project, v.Name)
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return wrap("create vercel sandbox", err)
	}
	defer tx.Rollback()
	_, err = tx.ExecContext(ctx, `INSERT INTO vercel_sandboxes (id, `+vercelSandboxCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		key, v.TeamID, v.Project, v.Name, v.API, ids, string(v.Data), v.Version, ms(v.CreatedAt), ms(v.UpdatedAt))
	if isUnique(err) {
		return store.Conflict("vercel_sandbox_exists", "a sandbox named %q exists in project %s", v.Name, v.Project)
	}
	if err != nil {
		return wrap("create vercel sandbox", err)
	}
	if err := indexSessions(ctx, tx, key, v.SessionIDs); err != nil {
		return wrap("create vercel sandbox", err)
	}
	if err := tx.Commit(); err != nil {
		return wrap("create vercel sandbox", err)
	}
	return nil
}

func (s *Store) GetVercelSandbox(ctx context.Context, teamID, project, name string) (store.VercelSandbox, error) {
	v, err := scanVercelSandbox(s.r.QueryRowContext(ctx, `SELECT `+vercelSandboxCols+` FROM vercel_sandboxes WHERE id = ?`,
		storeutil.VercelSandboxKey(teamID, project, name)))
	if errors.Is(err, sql.ErrNoRows) {
		return v, store.NotFound("vercel_sandbox", name)
	}
	if err != nil {
		return v, wrap("get vercel sandbox", err)
	}
	return v, nil
}

func (s *Store) GetVercelSandboxBySession(ctx context.Context, teamID, sessionID string) (store.VercelSandbox, error) {
	v, err := scanVercelSandbox(s.r.QueryRowContext(ctx, `SELECT `+vercelSandboxCols+` FROM vercel_sandboxes
		WHERE team_id = ? AND id IN (SELECT sandbox_id FROM vercel_sessions WHERE session_id = ?)
		ORDER BY created_at, id LIMIT 1`, teamID, sessionID))
	if errors.Is(err, sql.ErrNoRows) {
		return v, store.NotFound("vercel_sandbox", "")
	}
	if err != nil {
		return v, wrap("get vercel sandbox", err)
	}
	return v, nil
}

// vercelLost tells a lost optimistic write from a missing record.
func (s *Store) vercelLost(ctx context.Context, teamID, project, name string) error {
	if _, err := s.GetVercelSandbox(ctx, teamID, project, name); err != nil {
		return err
	}
	return store.Stale("vercel_sandbox", name)
}

func (s *Store) UpdateVercelSandbox(ctx context.Context, v store.VercelSandbox) (store.VercelSandbox, error) {
	v, err := storeutil.VercelSandbox(v, false)
	if err != nil {
		return v, err
	}
	ids, err := jsonText(v.SessionIDs, len(v.SessionIDs) == 0)
	if err != nil {
		return v, wrap("update vercel sandbox", err)
	}
	key := storeutil.VercelSandboxKey(v.TeamID, v.Project, v.Name)
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return v, wrap("update vercel sandbox", err)
	}
	defer tx.Rollback()
	got, err := scanVercelSandbox(tx.QueryRowContext(ctx, `UPDATE vercel_sandboxes
		SET session_ids = ?, data = ?, version = version + 1, updated_at = ?
		WHERE id = ? AND version = ?
		RETURNING `+vercelSandboxCols,
		ids, string(v.Data), ms(storeutil.Now()), key, v.Version))
	switch {
	case errors.Is(err, sql.ErrNoRows):
		tx.Rollback()
		return v, s.vercelLost(ctx, v.TeamID, v.Project, v.Name)
	case err != nil:
		return v, wrap("update vercel sandbox", err)
	}
	if err := indexSessions(ctx, tx, key, v.SessionIDs); err != nil {
		return v, wrap("update vercel sandbox", err)
	}
	if err := tx.Commit(); err != nil {
		return v, wrap("update vercel sandbox", err)
	}
	return got, nil
}

func (s *Store) DeleteVercelSandbox(ctx context.Context, teamID, project, name string, version int64) error {
	key := storeutil.VercelSandboxKey(teamID, project, name)
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return wrap("delete vercel sandbox", err)
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, `DELETE FROM vercel_sandboxes WHERE id = ? AND version = ?`, key, version)
	if err != nil {
		return wrap("delete vercel sandbox", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return wrap("delete vercel sandbox", err)
	} else if n == 0 {
		tx.Rollback()
		return s.vercelLost(ctx, teamID, project, name)
	}
	if err := indexSessions(ctx, tx, key, nil); err != nil {
		return wrap("delete vercel sandbox", err)
	}
	if err := tx.Commit(); err != nil {
		return wrap("delete vercel sandbox", err)
	}
	return nil
}

func (s *Store) ListVercelSandboxes(ctx context.Context, f store.VercelSandboxFilter, page store.Page) ([]store.VercelSandbox, string, error) {
	where, args := []string{`team_id = ?`}, []any{f.TeamID}
	if f.Project != "" {
		where, args = append(where, `project = ?`), append(args, f.Project)
	}
	if f.API != 0 {
		where, args = append(where, `api = ?`), append(args, f.API)
	}
	return listPage(ctx, s, scanVercelSandbox, "list vercel sandboxes", `SELECT `+vercelSandboxCols+` FROM vercel_sandboxes`,
		where, args, "created_at", page, func(v store.VercelSandbox) storeutil.Key {
			return storeutil.Key{Time: v.CreatedAt, ID: storeutil.VercelSandboxKey(v.TeamID, v.Project, v.Name)}
		})
}

// ---- Vercel snapshots ----

const vercelSnapshotCols = `id, team_id, project, sandbox_name, source_session, parent_id, creation_method, created_at`

func scanVercelSnapshot(r scanner) (store.VercelSnapshot, error) {
	var v store.VercelSnapshot
	err := r.Scan(&v.ID, &v.TeamID, &v.Project, &v.SandboxName, &v.SourceSession, &v.ParentID, &v.CreationMethod, tm{&v.CreatedAt})
	return v, err
}

func (s *Store) CreateVercelSnapshot(ctx context.Context, v store.VercelSnapshot) error {
	v, err := storeutil.VercelSnapshot(v)
	if err != nil {
		return err
	}
	_, err = s.w.ExecContext(ctx, `INSERT INTO vercel_snapshots (`+vercelSnapshotCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		v.ID, v.TeamID, v.Project, v.SandboxName, v.SourceSession, v.ParentID, v.CreationMethod, ms(v.CreatedAt))
	if isUnique(err) {
		return store.Exists("vercel_snapshot", v.ID)
	}
	if err != nil {
		return wrap("create vercel snapshot", err)
	}
	return nil
}

func (s *Store) GetVercelSnapshot(ctx context.Context, teamID, id string) (store.VercelSnapshot, error) {
	v, err := scanVercelSnapshot(s.r.QueryRowContext(ctx,
		`SELECT `+vercelSnapshotCols+` FROM vercel_snapshots WHERE id = ? AND team_id = ?`, id, teamID))
	if errors.Is(err, sql.ErrNoRows) {
		return v, store.NotFound("vercel_snapshot", id)
	}
	if err != nil {
		return v, wrap("get vercel snapshot", err)
	}
	return v, nil
}

func (s *Store) DeleteVercelSnapshot(ctx context.Context, teamID, id string) error {
	res, err := s.w.ExecContext(ctx, `DELETE FROM vercel_snapshots WHERE id = ? AND team_id = ?`, id, teamID)
	return affected(res, err, "delete vercel snapshot", "vercel_snapshot", id)
}

func (s *Store) ListVercelSnapshots(ctx context.Context, f store.VercelSnapshotFilter, page store.Page) ([]store.VercelSnapshot, string, error) {
	where, args := []string{`team_id = ?`}, []any{f.TeamID}
	if f.Project != "" {
		where, args = append(where, `project = ?`), append(args, f.Project)
	}
	if f.SandboxName != "" {
		where, args = append(where, `sandbox_name = ?`), append(args, f.SandboxName)
	}
	return listPage(ctx, s, scanVercelSnapshot, "list vercel snapshots", `SELECT `+vercelSnapshotCols+` FROM vercel_snapshots`,
		where, args, "created_at", page, func(v store.VercelSnapshot) storeutil.Key { return storeutil.Key{Time: v.CreatedAt, ID: v.ID} })
}
