package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"

	"github.com/paddock-dev/paddock/internal/store"
	"github.com/paddock-dev/paddock/internal/store/internal/storeutil"
)

// ---- admission ----

const admissionCols = `team_id, data, version, updated_at`

func scanAdmission(r scanner) (store.Admission, error) {
	var a store.Admission
	var data string
	err := r.Scan(&a.TeamID, &data, &a.Version, tm{&a.UpdatedAt})
	a.Data = json.RawMessage(data)
	return a, err
}

func (s *Store) CreateAdmission(ctx context.Context, a store.Admission) error {
	a, err := storeutil.Admission(a, true)
	if err != nil {
		return err
	}
	_, err = s.w.ExecContext(ctx, `INSERT INTO admissions (`+admissionCols+`) VALUES (?, ?, ?, ?)`,
		a.TeamID, string(a.Data), a.Version, ms(a.UpdatedAt))
	if isUnique(err) {
		return store.Exists("admission", a.TeamID)
	}
	if err != nil {
		return wrap("create admission", err)
	}
	return nil
}

func (s *Store) GetAdmission(ctx context.Context, teamID string) (store.Admission, error) {
	a, err := scanAdmission(s.r.QueryRowContext(ctx, `SELECT `+admissionCols+` FROM admissions WHERE team_id = ?`, teamID))
	if errors.Is(err, sql.ErrNoRows) {
		return a, store.NotFound("admission", teamID)
	}
	if err != nil {
		return a, wrap("get admission", err)
	}
	return a, nil
}

func (s *Store) UpdateAdmission(ctx context.Context, a store.Admission) (store.Admission, error) {
	a, err := storeutil.Admission(a, false)
	if err != nil {
		return a, err
	}
	got, err := scanAdmission(s.w.QueryRowContext(ctx, `UPDATE admissions
		SET data = ?, version = version + 1, updated_at = ?
		WHERE team_id = ? AND version = ?
		RETURNING `+admissionCols,
		string(a.Data), ms(storeutil.Now()), a.TeamID, a.Version))
	switch {
	case errors.Is(err, sql.ErrNoRows):
		if _, err := s.GetAdmission(ctx, a.TeamID); err != nil {
			return a, err
		}
		return a, store.Stale("admission", a.TeamID)
	case err != nil:
		return a, wrap("update admission", err)
	}
	return got, nil
}

func (s *Store) ListAdmissions(ctx context.Context) ([]store.Admission, error) {
	return list(ctx, s.r, scanAdmission, "list admissions", `SELECT `+admissionCols+` FROM admissions ORDER BY team_id`)
}

// ---- admission holds ----

const admissionHoldCols = `sandbox_id, team_id, hold_id, replica, vcpus, memory_mb, created_at`

func scanAdmissionHold(r scanner) (store.AdmissionHold, error) {
	var h store.AdmissionHold
	err := r.Scan(&h.SandboxID, &h.TeamID, &h.HoldID, &h.Replica, &h.VCPUs, &h.MemoryMB, tm{&h.CreatedAt})
	return h, err
}

func (s *Store) CreateAdmissionHold(ctx context.Context, h store.AdmissionHold) error {
	h, err := storeutil.AdmissionHold(h)
	if err != nil {
		return err
	}
	_, err = s.w.ExecContext(ctx, `INSERT INTO admission_holds (`+admissionHoldCols+`) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		h.SandboxID, h.TeamID, h.HoldID, h.Replica, h.VCPUs, h.MemoryMB, ms(h.CreatedAt))
	if isUnique(err) {
		return store.Exists("admission_hold", h.SandboxID)
	}
	if err != nil {
		return wrap("create admission hold", err)
	}
	return nil
}

func (s *Store) DeleteAdmissionHold(ctx context.Context, sandboxID string) (store.AdmissionHold, error) {
	h, err := scanAdmissionHold(s.w.QueryRowContext(ctx, `DELETE FROM admission_holds WHERE sandbox_id = ? RETURNING `+admissionHoldCols, sandboxID))
	if errors.Is(err, sql.ErrNoRows) {
		return h, store.NotFound("admission_hold", sandboxID)
	}
	if err != nil {
		return h, wrap("delete admission hold", err)
	}
	return h, nil
}

func (s *Store) ListAdmissionHolds(ctx context.Context, teamID string) ([]store.AdmissionHold, error) {
	return list(ctx, s.r, scanAdmissionHold, "list admission holds",
		`SELECT `+admissionHoldCols+` FROM admission_holds WHERE team_id = ? ORDER BY sandbox_id`, teamID)
}
