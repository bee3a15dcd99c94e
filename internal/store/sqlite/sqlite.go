// Package sqlite is paddock's embedded store: one SQLite file (pure Go,
// modernc.org/sqlite) in WAL mode.
//
// Every write goes through a single connection, so writers of this process
// queue in Go instead of meeting SQLITE_BUSY; reads use a separate pool of
// read-only connections, which WAL lets run beside the writer. busy_timeout
// covers another process that opens the same file. Optimistic updates are
// `UPDATE … WHERE id = ? AND version = ?`; event Seq is an AUTOINCREMENT
// key, assigned and committed by the one writer, so Seq order is
// visibility order.
package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/paddock-dev/paddock/internal/store"
	"github.com/paddock-dev/paddock/internal/store/internal/storeutil"
)

// Store is a store.Store on one SQLite file.
type Store struct {
	path string
	w    *sql.DB // exactly one connection: every write
	r    *sql.DB // read-only connections

	closeOnce sync.Once
	closeErr  error
}

var _ store.Store = (*Store)(nil)

// readers is the size of the read pool.
const readers = 4

// Open opens (creating if needed) the database at path and brings its
// schema up to date.
func Open(path string) (*Store, error) {
	if path == "" || strings.ContainsAny(path, "?#") {
		return nil, fmt.Errorf("sqlite store: unusable path %q", path)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("sqlite store: %w", err)
	}
	// The database is the host's: only its owner reads it (SQLite gives
	// the -wal and -shm files the database file's mode).
	if err := os.MkdirAll(filepath.Dir(abs), 0o700); err != nil {
		return nil, fmt.Errorf("sqlite store: %w", err)
	}
	f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("sqlite store: %w", err)
	}
	f.Close()
	// busy_timeout first: it must be in force before journal_mode takes a lock.
	dsn := abs + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)" +
		"&_pragma=foreign_keys(1)&_txlock=immediate"
	w, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("sqlite store: open %s: %w", abs, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	s := &Store{path: abs, w: w}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.migrate(ctx); err != nil {
		w.Close()
		return nil, err
	}
	// Each connection keeps a page cache of its own (2 MB by default);
	// the readers' are small because they duplicate the kernel's page
	// cache of the same file: a soak grew paddock's RSS by 10% filling
	// them, for no measurable gain in read latency.
	r, err := sql.Open("sqlite", dsn+"&_pragma=query_only(1)&_pragma=cache_size(-256)")
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlite store: open %s: %w", abs, err)
	}
	r.SetMaxOpenConns(readers)
	r.SetMaxIdleConns(readers)
	s.r = r
	if err := r.PingContext(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("sqlite store: open %s: %w", abs, err)
	}
	return s, nil
}

// Path is the database file.
func (s *Store) Path() string { return s.path }

// Close closes the database; closing twice is harmless.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		var errs []error
		if s.r != nil {
			errs = append(errs, s.r.Close())
		}
		errs = append(errs, s.w.Close())
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

// LatestSchema is the schema version this package migrates to.
var LatestSchema = len(migrations)

// DB is the writer connection, for tests and maintenance (backups, VACUUM
// INTO); the store's own writes go through it too.
func (s *Store) DB() *sql.DB { return s.w }

// SchemaVersion is the number of migrations applied.
func (s *Store) SchemaVersion(ctx context.Context) (int, error) {
	var v int
	err := s.r.QueryRowContext(ctx, `SELECT version FROM schema_version`).Scan(&v)
	return v, err
}

// migrate applies the migrations the database lacks, all in one
// transaction, and records the new version.
func (s *Store) migrate(ctx context.Context) error {
	tx, err := s.w.BeginTx(ctx, nil) // BEGIN IMMEDIATE: one migrator at a time
	if err != nil {
		return fmt.Errorf("sqlite store: migrate: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)`); err != nil {
		return fmt.Errorf("sqlite store: migrate: %w", err)
	}
	var have int
	switch err := tx.QueryRowContext(ctx, `SELECT version FROM schema_version`).Scan(&have); {
	case errors.Is(err, sql.ErrNoRows):
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_version (version) VALUES (0)`); err != nil {
			return fmt.Errorf("sqlite store: migrate: %w", err)
		}
	case err != nil:
		return fmt.Errorf("sqlite store: migrate: %w", err)
	}
	if have > len(migrations) {
		return fmt.Errorf("sqlite store: %s has schema version %d, newer than this paddock's %d", s.path, have, len(migrations))
	}
	if have == len(migrations) {
		return nil
	}
	for i := have; i < len(migrations); i++ {
		if _, err := tx.ExecContext(ctx, migrations[i]); err != nil {
			return fmt.Errorf("sqlite store: migration %d: %w", i+1, err)
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE schema_version SET version = ?`, len(migrations)); err != nil {
		return fmt.Errorf("sqlite store: migrate: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlite store: migrate: %w", err)
	}
	return nil
}

// ---- column helpers ----

// ms is a time as its column holds it: Unix milliseconds, NULL if zero.
func ms(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixMilli()
}

// tm scans a ms column into *t.
type tm struct{ t *time.Time }

func (d tm) Scan(v any) error {
	switch x := v.(type) {
	case nil:
		*d.t = time.Time{}
	case int64:
		*d.t = time.UnixMilli(x).UTC()
	default:
		return fmt.Errorf("time column holds %T", v)
	}
	return nil
}

// jsonText is v as a JSON column: NULL if empty.
func jsonText(v any, empty bool) (any, error) {
	if empty {
		return nil, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return string(b), nil
}

// js scans a JSON column into dst (left alone if NULL).
type js struct{ dst any }

func (d js) Scan(v any) error {
	switch x := v.(type) {
	case nil:
		return nil
	case string:
		return json.Unmarshal([]byte(x), d.dst)
	case []byte:
		return json.Unmarshal(x, d.dst)
	}
	return fmt.Errorf("JSON column holds %T", v)
}

func isUnique(err error) bool {
	var e *sqlite.Error
	if !errors.As(err, &e) {
		return false
	}
	return e.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || e.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
}

func wrap(op string, err error) error {
	return fmt.Errorf("sqlite store: %s: %w", op, err)
}

type scanner interface{ Scan(dest ...any) error }

// pageWhere adds the keyset condition of cursor on (col, id) to where.
func pageWhere(where []string, args []any, col, cursor string) ([]string, []any, error) {
	k, ok, err := storeutil.Decode(cursor)
	if err != nil || !ok {
		return where, args, err
	}
	where = append(where, fmt.Sprintf("(%s > ? OR (%s = ? AND id > ?))", col, col))
	return where, append(args, k.Time.UnixMilli(), k.Time.UnixMilli(), k.ID), nil
}

func whereSQL(where []string) string {
	if len(where) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(where, " AND ")
}

// ---- teams ----

const teamCols = `id, name, created_at`

func scanTeam(r scanner) (store.Team, error) {
	var t store.Team
	err := r.Scan(&t.ID, &t.Name, tm{&t.CreatedAt})
	return t, err
}

func (s *Store) CreateTeam(ctx context.Context, t store.Team) error {
	t, err := storeutil.Team(t)
	if err != nil {
		return err
	}
	_, err = s.w.ExecContext(ctx, `INSERT INTO teams (`+teamCols+`) VALUES (?, ?, ?)`, t.ID, t.Name, ms(t.CreatedAt))
	if isUnique(err) {
		return store.Conflict("team_exists", "a team with id %s or name %q exists", t.ID, t.Name)
	}
	if err != nil {
		return wrap("create team", err)
	}
	return nil
}

func (s *Store) GetTeam(ctx context.Context, id string) (store.Team, error) {
	t, err := scanTeam(s.r.QueryRowContext(ctx, `SELECT `+teamCols+` FROM teams WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return t, store.NotFound("team", id)
	}
	if err != nil {
		return t, wrap("get team", err)
	}
	return t, nil
}

func (s *Store) ListTeams(ctx context.Context) ([]store.Team, error) {
	return list(ctx, s.r, scanTeam, "list teams", `SELECT `+teamCols+` FROM teams ORDER BY created_at, id`)
}

// list runs a query and scans every row.
func list[T any](ctx context.Context, db *sql.DB, scan func(scanner) (T, error), op, q string, args ...any) ([]T, error) {
	rows, err := db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, wrap(op, err)
	}
	defer rows.Close()
	out := []T{}
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, wrap(op, err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, wrap(op, err)
	}
	return out, nil
}

// ---- users ----

const userCols = `id, team_id, issuer, subject, email, name, role, created_at`

func scanUser(r scanner) (store.User, error) {
	var u store.User
	err := r.Scan(&u.ID, &u.TeamID, &u.Issuer, &u.Subject, &u.Email, &u.Name, &u.Role, tm{&u.CreatedAt})
	return u, err
}

func (s *Store) CreateUser(ctx context.Context, u store.User) error {
	u, err := storeutil.User(u)
	if err != nil {
		return err
	}
	_, err = s.w.ExecContext(ctx, `INSERT INTO users (`+userCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		u.ID, u.TeamID, u.Issuer, u.Subject, u.Email, u.Name, u.Role, ms(u.CreatedAt))
	if isUnique(err) {
		return store.Conflict("user_exists", "a user with id %s or the same identity exists", u.ID)
	}
	if err != nil {
		return wrap("create user", err)
	}
	return nil
}

func (s *Store) getUser(ctx context.Context, what, key, where string, args ...any) (store.User, error) {
	u, err := scanUser(s.r.QueryRowContext(ctx, `SELECT `+userCols+` FROM users WHERE `+where, args...))
	if errors.Is(err, sql.ErrNoRows) {
		return u, store.NotFound(what, key)
	}
	if err != nil {
		return u, wrap("get user", err)
	}
	return u, nil
}

func (s *Store) GetUser(ctx context.Context, id string) (store.User, error) {
	return s.getUser(ctx, "user", id, `id = ?`, id)
}

func (s *Store) GetUserBySubject(ctx context.Context, issuer, subject string) (store.User, error) {
	return s.getUser(ctx, "user", "", `issuer = ? AND subject = ? AND subject <> ''`, issuer, subject)
}

func (s *Store) ListUsers(ctx context.Context, teamID string) ([]store.User, error) {
	return list(ctx, s.r, scanUser, "list users",
		`SELECT `+userCols+` FROM users WHERE (? = '' OR team_id = ?) ORDER BY created_at, id`, teamID, teamID)
}

// ---- tokens ----

const tokenCols = `id, team_id, user_id, name, hash, role, created_at, expires_at`

func scanToken(r scanner) (store.Token, error) {
	var t store.Token
	err := r.Scan(&t.ID, &t.TeamID, &t.UserID, &t.Name, &t.Hash, &t.Role, tm{&t.CreatedAt}, tm{&t.ExpiresAt})
	return t, err
}

func (s *Store) CreateToken(ctx context.Context, t store.Token) error {
	t, err := storeutil.Token(t)
	if err != nil {
		return err
	}
	_, err = s.w.ExecContext(ctx, `INSERT INTO tokens (`+tokenCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		t.ID, t.TeamID, t.UserID, t.Name, t.Hash, t.Role, ms(t.CreatedAt), ms(t.ExpiresAt))
	if isUnique(err) {
		return store.Conflict("token_exists", "a token with id %s or the same hash exists", t.ID)
	}
	if err != nil {
		return wrap("create token", err)
	}
	return nil
}

func (s *Store) GetTokenByHash(ctx context.Context, hash []byte) (store.Token, error) {
	t, err := scanToken(s.r.QueryRowContext(ctx, `SELECT `+tokenCols+` FROM tokens WHERE hash = ?`, hash))
	if errors.Is(err, sql.ErrNoRows) {
		return t, store.NotFound("token", "")
	}
	if err != nil {
		return t, wrap("get token", err)
	}
	return t, nil
}

func (s *Store) ListTokens(ctx context.Context, teamID string) ([]store.Token, error) {
	return list(ctx, s.r, scanToken, "list tokens",
		`SELECT `+tokenCols+` FROM tokens WHERE (? = '' OR team_id = ?) ORDER BY created_at, id`, teamID, teamID)
}

func (s *Store) DeleteUser(ctx context.Context, id string) error {
	res, err := s.w.ExecContext(ctx, `DELETE FROM users WHERE id = ?`, id)
	return affected(res, err, "delete user", "user", id)
}

func (s *Store) DeleteToken(ctx context.Context, id string) error {
	res, err := s.w.ExecContext(ctx, `DELETE FROM tokens WHERE id = ?`, id)
	return affected(res, err, "delete token", "token", id)
}

// affected turns the result of a statement on one row into nil, or
// NotFound if it found no row.
func affected(res sql.Result, err error, op, what, id string) error {
	if err != nil {
		return wrap(op, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return wrap(op, err)
	}
	if n == 0 {
		return store.NotFound(what, id)
	}
	return nil
}

// ---- projects ----

const projectCols = `id, team_id, name, spec, active_activation, state_ref, version, created_at, updated_at`

func scanProject(r scanner) (store.Project, error) {
	var p store.Project
	var spec sql.NullString
	err := r.Scan(&p.ID, &p.TeamID, &p.Name, &spec, &p.ActiveActivation, &p.StateRef, &p.Version,
		tm{&p.CreatedAt}, tm{&p.UpdatedAt})
	if spec.Valid && spec.String != "" {
		p.Spec = json.RawMessage(spec.String)
	}
	return p, err
}

func specArg(spec json.RawMessage) any {
	if len(spec) == 0 {
		return nil
	}
	return string(spec)
}

func (s *Store) CreateProject(ctx context.Context, p store.Project) error {
	p, err := storeutil.Project(p, true)
	if err != nil {
		return err
	}
	_, err = s.w.ExecContext(ctx, `INSERT INTO projects (`+projectCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		p.ID, p.TeamID, p.Name, specArg(p.Spec), p.ActiveActivation, p.StateRef, p.Version, ms(p.CreatedAt), ms(p.UpdatedAt))
	if isUnique(err) {
		return store.Conflict("project_exists", "a project with id %s or name %q exists", p.ID, p.Name)
	}
	if err != nil {
		return wrap("create project", err)
	}
	return nil
}

func (s *Store) GetProject(ctx context.Context, teamID, id string) (store.Project, error) {
	p, err := scanProject(s.r.QueryRowContext(ctx,
		`SELECT `+projectCols+` FROM projects WHERE id = ? AND (? = '' OR team_id = ?)`, id, teamID, teamID))
	if errors.Is(err, sql.ErrNoRows) {
		return p, store.NotFound("project", id)
	}
	if err != nil {
		return p, wrap("get project", err)
	}
	return p, nil
}

func (s *Store) ListProjects(ctx context.Context, teamID string, page store.Page) ([]store.Project, string, error) {
	where, args := []string{`(? = '' OR team_id = ?)`}, []any{teamID, teamID}
	return listPage(ctx, s, scanProject, "list projects", `SELECT `+projectCols+` FROM projects`,
		where, args, "created_at", page, func(p store.Project) storeutil.Key { return storeutil.Key{Time: p.CreatedAt, ID: p.ID} })
}

// listPage runs a keyset-paged query ordered by (col, id).
func listPage[T any](ctx context.Context, s *Store, scan func(scanner) (T, error), op, sel string,
	where []string, args []any, col string, page store.Page, key func(T) storeutil.Key,
) ([]T, string, error) {
	where, args, err := pageWhere(where, args, col, page.Cursor)
	if err != nil {
		return nil, "", err
	}
	limit := storeutil.Limit(page)
	q := sel + whereSQL(where) + fmt.Sprintf(" ORDER BY %s, id LIMIT %d", col, limit+1)
	out, err := list(ctx, s.r, scan, op, q, args...)
	if err != nil {
		return nil, "", err
	}
	out, next := storeutil.Cut(out, limit, key)
	return out, next, nil
}

func (s *Store) UpdateProject(ctx context.Context, p store.Project) (store.Project, error) {
	p, err := storeutil.Project(p, false)
	if err != nil {
		return p, err
	}
	got, err := scanProject(s.w.QueryRowContext(ctx, `UPDATE projects
		SET name = ?, spec = ?, active_activation = ?, state_ref = ?, version = version + 1, updated_at = ?
		WHERE id = ? AND version = ? AND (? = '' OR team_id = ?)
		RETURNING `+projectCols,
		p.Name, specArg(p.Spec), p.ActiveActivation, p.StateRef, ms(storeutil.Now()),
		p.ID, p.Version, p.TeamID, p.TeamID))
	switch {
	case isUnique(err):
		return p, store.Conflict("project_exists", "a project named %q exists", p.Name)
	case errors.Is(err, sql.ErrNoRows):
		// Lost the race or gone? Ask.
		if _, err := s.GetProject(ctx, p.TeamID, p.ID); err != nil {
			return p, err
		}
		return p, store.Stale("project", p.ID)
	case err != nil:
		return p, wrap("update project", err)
	}
	return got, nil
}

func (s *Store) DeleteProject(ctx context.Context, teamID, id string) error {
	res, err := s.w.ExecContext(ctx, `DELETE FROM projects WHERE id = ? AND (? = '' OR team_id = ?)`, id, teamID, teamID)
	return affected(res, err, "delete project", "project", id)
}

// ---- activations ----

const activationCols = `id, project_id, team_id, sandbox_id, state, error, log_tail, end_reason,
	created_at, ready_at, ended_at, last_activity_at, version, image_digest, replica`

func scanActivation(r scanner) (store.Activation, error) {
	var a store.Activation
	err := r.Scan(&a.ID, &a.ProjectID, &a.TeamID, &a.SandboxID, &a.State, &a.Error, &a.LogTail, &a.EndReason,
		tm{&a.CreatedAt}, tm{&a.ReadyAt}, tm{&a.EndedAt}, tm{&a.LastActivityAt}, &a.Version, &a.ImageDigest, &a.Replica)
	return a, err
}

func (s *Store) CreateActivation(ctx context.Context, a store.Activation) error {
	a, err := storeutil.Activation(a, true)
	if err != nil {
		return err
	}
	_, err = s.w.ExecContext(ctx, `INSERT INTO activations (`+activationCols+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		a.ID, a.ProjectID, a.TeamID, a.SandboxID, a.State, a.Error, a.LogTail, a.EndReason,
		ms(a.CreatedAt), ms(a.ReadyAt), ms(a.EndedAt), ms(a.LastActivityAt), a.Version, a.ImageDigest, a.Replica)
	if isUnique(err) {
		return store.Exists("activation", a.ID)
	}
	if err != nil {
		return wrap("create activation", err)
	}
	return nil
}

func (s *Store) GetActivation(ctx context.Context, id string) (store.Activation, error) {
	a, err := scanActivation(s.r.QueryRowContext(ctx, `SELECT `+activationCols+` FROM activations WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return a, store.NotFound("activation", id)
	}
	if err != nil {
		return a, wrap("get activation", err)
	}
	return a, nil
}

func (s *Store) UpdateActivation(ctx context.Context, a store.Activation) (store.Activation, error) {
	a, err := storeutil.Activation(a, false)
	if err != nil {
		return a, err
	}
	got, err := scanActivation(s.w.QueryRowContext(ctx, `UPDATE activations
		SET sandbox_id = ?, image_digest = ?, state = ?, error = ?, log_tail = ?, end_reason = ?,
			ready_at = ?, ended_at = ?, last_activity_at = ?, replica = ?, version = version + 1
		WHERE id = ? AND version = ?
		RETURNING `+activationCols,
		a.SandboxID, a.ImageDigest, a.State, a.Error, a.LogTail, a.EndReason, ms(a.ReadyAt), ms(a.EndedAt), ms(a.LastActivityAt), a.Replica,
		a.ID, a.Version))
	switch {
	case errors.Is(err, sql.ErrNoRows):
		if _, err := s.GetActivation(ctx, a.ID); err != nil {
			return a, err
		}
		return a, store.Stale("activation", a.ID)
	case err != nil:
		return a, wrap("update activation", err)
	}
	return got, nil
}

func (s *Store) ListActivations(ctx context.Context, f store.ActivationFilter, page store.Page) ([]store.Activation, string, error) {
	var where []string
	var args []any
	if f.TeamID != "" {
		where, args = append(where, `team_id = ?`), append(args, f.TeamID)
	}
	if f.ProjectID != "" {
		where, args = append(where, `project_id = ?`), append(args, f.ProjectID)
	}
	if len(f.States) > 0 {
		where = append(where, `state IN (?`+strings.Repeat(`, ?`, len(f.States)-1)+`)`)
		for _, st := range f.States {
			args = append(args, st)
		}
	}
	return listPage(ctx, s, scanActivation, "list activations", `SELECT `+activationCols+` FROM activations`,
		where, args, "created_at", page, func(a store.Activation) storeutil.Key { return storeutil.Key{Time: a.CreatedAt, ID: a.ID} })
}

// ---- sandboxes ----

func scanSandbox(r scanner) (store.SandboxRecord, error) {
	var rec store.SandboxRecord
	err := r.Scan(&rec.Node, js{&rec.Sandbox})
	return rec, err
}

func (s *Store) PutSandbox(ctx context.Context, r store.SandboxRecord) error {
	r, data, err := storeutil.Sandbox(r)
	if err != nil {
		return err
	}
	sb := r.Sandbox
	_, err = s.w.ExecContext(ctx, `INSERT INTO sandboxes (id, node, team_id, state, created_at, data)
		VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET node = excluded.node, team_id = excluded.team_id, state = excluded.state,
			created_at = excluded.created_at, data = excluded.data`,
		sb.ID, r.Node, sb.TeamID, string(sb.State), ms(sb.CreatedAt), data)
	if err != nil {
		return wrap("put sandbox", err)
	}
	return nil
}

func (s *Store) GetSandbox(ctx context.Context, id string) (store.SandboxRecord, error) {
	rec, err := scanSandbox(s.r.QueryRowContext(ctx, `SELECT node, data FROM sandboxes WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return rec, store.NotFound("sandbox", id)
	}
	if err != nil {
		return rec, wrap("get sandbox", err)
	}
	return rec, nil
}

func (s *Store) DeleteSandbox(ctx context.Context, id string) error {
	if _, err := s.w.ExecContext(ctx, `DELETE FROM sandboxes WHERE id = ?`, id); err != nil {
		return wrap("delete sandbox", err)
	}
	return nil
}

// MoveSandbox is one UPDATE on (id, node): SQLite runs one writer at a
// time, so the condition and the write are one step.
func (s *Store) MoveSandbox(ctx context.Context, id, from, to string) (store.SandboxRecord, error) {
	rec, err := scanSandbox(s.w.QueryRowContext(ctx, `UPDATE sandboxes SET node = ? WHERE id = ? AND node = ? RETURNING node, data`, to, id, from))
	if errors.Is(err, sql.ErrNoRows) {
		cur, err := s.GetSandbox(ctx, id)
		if err != nil {
			return store.SandboxRecord{}, err
		}
		return store.SandboxRecord{}, store.Moved(id, cur.Node, from)
	}
	if err != nil {
		return store.SandboxRecord{}, wrap("move sandbox", err)
	}
	return rec, nil
}

func (s *Store) ListSandboxes(ctx context.Context, node string) ([]store.SandboxRecord, error) {
	return list(ctx, s.r, scanSandbox, "list sandboxes",
		`SELECT node, data FROM sandboxes WHERE (? = '' OR node = ?) ORDER BY created_at, id`, node, node)
}

// ---- commands ----

const commandCols = `sandbox_id, id, team_id, cmd, args, cwd, sudo, tag, pty_rows, pty_cols, started_at, finished_at, exit_code`

func scanCommand(r scanner) (store.Command, error) {
	var c store.Command
	var exit sql.NullInt64
	err := r.Scan(&c.SandboxID, &c.ID, &c.TeamID, &c.Cmd, js{&c.Args}, &c.Cwd, &c.Sudo, &c.Tag, &c.PTYRows, &c.PTYCols,
		tm{&c.StartedAt}, tm{&c.FinishedAt}, &exit)
	if exit.Valid {
		code := int(exit.Int64)
		c.ExitCode = &code
	}
	if len(c.Args) == 0 {
		c.Args = nil
	}
	return c, err
}

func (s *Store) AddCommand(ctx context.Context, c store.Command) error {
	c, err := storeutil.Command(c)
	if err != nil {
		return err
	}
	args, err := jsonText(c.Args, len(c.Args) == 0)
	if err != nil {
		return wrap("add command", err)
	}
	var exit any
	if c.ExitCode != nil {
		exit = *c.ExitCode
	}
	_, err = s.w.ExecContext(ctx, `INSERT INTO commands (`+commandCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		c.SandboxID, c.ID, c.TeamID, c.Cmd, args, c.Cwd, c.Sudo, c.Tag, c.PTYRows, c.PTYCols, ms(c.StartedAt), ms(c.FinishedAt), exit)
	if isUnique(err) {
		return store.Exists("command", c.ID)
	}
	if err != nil {
		return wrap("add command", err)
	}
	return nil
}

func (s *Store) FinishCommand(ctx context.Context, sandboxID, id string, exitCode int, finishedAt time.Time) error {
	res, err := s.w.ExecContext(ctx, `UPDATE commands SET exit_code = ?, finished_at = ? WHERE sandbox_id = ? AND id = ?`,
		exitCode, ms(storeutil.Finished(finishedAt)), sandboxID, id)
	return affected(res, err, "finish command", "command", id)
}

func (s *Store) ListCommands(ctx context.Context, sandboxID string, page store.Page) ([]store.Command, string, error) {
	return listPage(ctx, s, scanCommand, "list commands", `SELECT `+commandCols+` FROM commands`,
		[]string{`sandbox_id = ?`}, []any{sandboxID}, "started_at", page,
		func(c store.Command) storeutil.Key { return storeutil.Key{Time: c.StartedAt, ID: c.ID} })
}

func (s *Store) TrimCommands(ctx context.Context, sandboxID string, keep int) (int, error) {
	if keep < 0 {
		return 0, store.Invalid("trim commands: keep %d is negative", keep)
	}
	// The oldest command kept; everything at or before it in page order,
	// other than it, goes.
	var at int64
	var id string
	err := s.w.QueryRowContext(ctx, `SELECT started_at, id FROM commands WHERE sandbox_id = ?
		ORDER BY started_at DESC, id DESC LIMIT 1 OFFSET ?`, sandboxID, keep).Scan(&at, &id)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, wrap("trim commands", err)
	}
	res, err := s.w.ExecContext(ctx, `DELETE FROM commands WHERE sandbox_id = ? AND (started_at < ? OR (started_at = ? AND id <= ?))`,
		sandboxID, at, at, id)
	return deleted(res, err, "trim commands")
}

func (s *Store) PruneCommands(ctx context.Context, before time.Time) (int, error) {
	res, err := s.w.ExecContext(ctx, `DELETE FROM commands WHERE started_at < ?`, ms(before))
	return deleted(res, err, "prune commands")
}

// deleted is the row count of a DELETE.
func deleted(res sql.Result, err error, op string) (int, error) {
	if err != nil {
		return 0, wrap(op, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, wrap(op, err)
	}
	return int(n), nil
}

// ---- usage ----

const usageCols = `id, team_id, project_id, sandbox_id, start_at, end_at, cpu_seconds, memory_mb_hours, net_rx_bytes, net_tx_bytes,
	memory_peak_bytes, creations, storage_gb_hours, end_cpu_seconds, end_net_rx_bytes, end_net_tx_bytes`

func scanUsage(r scanner) (store.Usage, error) {
	var u store.Usage
	var rx, tx, peak, erx, etx int64
	err := r.Scan(&u.ID, &u.TeamID, &u.ProjectID, &u.SandboxID, tm{&u.Start}, tm{&u.End},
		&u.CPUSeconds, &u.MemoryMBHours, &rx, &tx, &peak, &u.Creations, &u.StorageGBHours, &u.EndCPUSeconds, &erx, &etx)
	u.NetRxBytes, u.NetTxBytes, u.MemoryPeakBytes = uint64(rx), uint64(tx), uint64(peak)
	u.EndNetRxBytes, u.EndNetTxBytes = uint64(erx), uint64(etx)
	return u, err
}

func usageArgs(u store.Usage) []any {
	return []any{u.ID, u.TeamID, u.ProjectID, u.SandboxID, ms(u.Start), ms(u.End), u.CPUSeconds, u.MemoryMBHours,
		int64(u.NetRxBytes), int64(u.NetTxBytes), int64(u.MemoryPeakBytes), u.Creations, u.StorageGBHours,
		u.EndCPUSeconds, int64(u.EndNetRxBytes), int64(u.EndNetTxBytes)}
}

const usagePlaceholders = `(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`

func (s *Store) AddUsage(ctx context.Context, u store.Usage) error {
	u, err := storeutil.Usage(u)
	if err != nil {
		return err
	}
	_, err = s.w.ExecContext(ctx, `INSERT INTO usage (`+usageCols+`) VALUES `+usagePlaceholders, usageArgs(u)...)
	if isUnique(err) {
		return store.Exists("usage", u.ID)
	}
	if err != nil {
		return wrap("add usage", err)
	}
	return nil
}

func (s *Store) ListUsage(ctx context.Context, f store.UsageFilter) ([]store.Usage, error) {
	return s.listUsage(ctx, "usage", f)
}

func (s *Store) listUsage(ctx context.Context, table string, f store.UsageFilter) ([]store.Usage, error) {
	var where []string
	var args []any
	for _, c := range []struct{ col, v string }{{"team_id", f.TeamID}, {"project_id", f.ProjectID}, {"sandbox_id", f.SandboxID}} {
		if c.v != "" {
			where, args = append(where, c.col+` = ?`), append(args, c.v)
		}
	}
	if !f.Until.IsZero() {
		where, args = append(where, `start_at < ?`), append(args, store.Time(f.Until).UnixMilli())
	}
	if !f.Since.IsZero() {
		where, args = append(where, `end_at > ?`), append(args, store.Time(f.Since).UnixMilli())
	}
	return list(ctx, s.r, scanUsage, "list "+table,
		`SELECT `+usageCols+` FROM `+table+whereSQL(where)+` ORDER BY start_at, id`, args...)
}

func (s *Store) PruneUsage(ctx context.Context, before time.Time) (int, error) {
	res, err := s.w.ExecContext(ctx, `DELETE FROM usage WHERE start_at < ?`, store.Time(before).UnixMilli())
	if err != nil {
		return 0, wrap("prune usage", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, wrap("prune usage", err)
	}
	return int(n), nil
}

func (s *Store) PutUsageRollup(ctx context.Context, u store.Usage) error {
	u, err := storeutil.Usage(u)
	if err != nil {
		return err
	}
	if _, err := s.w.ExecContext(ctx, `INSERT OR REPLACE INTO usage_rollups (`+usageCols+`) VALUES `+usagePlaceholders,
		usageArgs(u)...); err != nil {
		return wrap("put usage rollup", err)
	}
	return nil
}

func (s *Store) ListUsageRollups(ctx context.Context, f store.UsageFilter) ([]store.Usage, error) {
	return s.listUsage(ctx, "usage_rollups", f)
}

// ---- budgets ----

const budgetCols = `team_id, monthly_limit, thresholds, hard_cap, month, notified, version, updated_at`

func scanBudget(r scanner) (store.Budget, error) {
	var b store.Budget
	err := r.Scan(&b.TeamID, &b.MonthlyLimit, js{&b.Thresholds}, &b.HardCap, &b.Month, &b.Notified, &b.Version, tm{&b.UpdatedAt})
	return b, err
}

func (s *Store) PutBudget(ctx context.Context, b store.Budget) (store.Budget, error) {
	b, err := storeutil.Budget(b)
	if err != nil {
		return b, err
	}
	th, err := jsonText(b.Thresholds, len(b.Thresholds) == 0)
	if err != nil {
		return b, wrap("put budget", err)
	}
	now := ms(storeutil.Now())
	if b.Version == 0 {
		_, err := s.w.ExecContext(ctx, `INSERT INTO budgets (`+budgetCols+`) VALUES (?, ?, ?, ?, ?, ?, 1, ?)`,
			b.TeamID, b.MonthlyLimit, th, b.HardCap, b.Month, b.Notified, now)
		if isUnique(err) {
			return b, store.Exists("budget", b.TeamID)
		}
		if err != nil {
			return b, wrap("put budget", err)
		}
		return s.GetBudget(ctx, b.TeamID)
	}
	got, err := scanBudget(s.w.QueryRowContext(ctx, `UPDATE budgets
		SET monthly_limit = ?, thresholds = ?, hard_cap = ?, month = ?, notified = ?, version = version + 1, updated_at = ?
		WHERE team_id = ? AND version = ? RETURNING `+budgetCols,
		b.MonthlyLimit, th, b.HardCap, b.Month, b.Notified, now, b.TeamID, b.Version))
	switch {
	case errors.Is(err, sql.ErrNoRows):
		if _, err := s.GetBudget(ctx, b.TeamID); err != nil {
			return b, err
		}
		return b, store.Stale("budget", b.TeamID)
	case err != nil:
		return b, wrap("put budget", err)
	}
	return got, nil
}

func (s *Store) GetBudget(ctx context.Context, teamID string) (store.Budget, error) {
	b, err := scanBudget(s.r.QueryRowContext(ctx, `SELECT `+budgetCols+` FROM budgets WHERE team_id = ?`, teamID))
	if errors.Is(err, sql.ErrNoRows) {
		return b, store.NotFound("budget", teamID)
	}
	if err != nil {
		return b, wrap("get budget", err)
	}
	return b, nil
}

func (s *Store) ListBudgets(ctx context.Context) ([]store.Budget, error) {
	return list(ctx, s.r, scanBudget, "list budgets", `SELECT `+budgetCols+` FROM budgets ORDER BY team_id`)
}

func (s *Store) DeleteBudget(ctx context.Context, teamID string) error {
	res, err := s.w.ExecContext(ctx, `DELETE FROM budgets WHERE team_id = ?`, teamID)
	return affected(res, err, "delete budget", "budget", teamID)
}

// ---- events ----

const eventCols = `seq, time, team_id, project_id, activation_id, sandbox_id, type, message, data`

func scanEvent(r scanner) (store.Event, error) {
	var e store.Event
	err := r.Scan(&e.Seq, tm{&e.Time}, &e.TeamID, &e.ProjectID, &e.ActivationID, &e.SandboxID, &e.Type, &e.Message, js{&e.Data})
	return e, err
}

func (s *Store) AppendEvent(ctx context.Context, e store.Event) (store.Event, error) {
	e, err := storeutil.Event(e)
	if err != nil {
		return e, err
	}
	data, err := jsonText(e.Data, len(e.Data) == 0)
	if err != nil {
		return e, wrap("append event", err)
	}
	err = s.w.QueryRowContext(ctx, `INSERT INTO events (time, team_id, project_id, activation_id, sandbox_id, type, message, data)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING seq`,
		ms(e.Time), e.TeamID, e.ProjectID, e.ActivationID, e.SandboxID, e.Type, e.Message, data).Scan(&e.Seq)
	if err != nil {
		return e, wrap("append event", err)
	}
	return e, nil
}

func (s *Store) ListEvents(ctx context.Context, f store.EventFilter) ([]store.Event, error) {
	where, args := []string{`seq > ?`}, []any{f.AfterSeq}
	for _, c := range []struct{ col, v string }{{"team_id", f.TeamID}, {"project_id", f.ProjectID}, {"activation_id", f.ActivationID}} {
		if c.v != "" {
			where, args = append(where, c.col+` = ?`), append(args, c.v)
		}
	}
	return list(ctx, s.r, scanEvent, "list events",
		`SELECT `+eventCols+` FROM events`+whereSQL(where)+fmt.Sprintf(` ORDER BY seq LIMIT %d`, storeutil.EventLimit(f)), args...)
}
