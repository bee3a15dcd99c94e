package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/paddock-dev/paddock/internal/store"
	"github.com/paddock-dev/paddock/internal/store/internal/storeutil"
)

// Leases change in one immediate transaction on the one writer: read,
// decide (storeutil), write. Another process on the same file waits for
// the write lock (busy_timeout), so the read is never stale.

const leaseCols = `name, holder, token, expires_at, version`

func scanLease(r scanner) (store.Lease, error) {
	var l store.Lease
	err := r.Scan(&l.Name, &l.Holder, &l.Token, tm{&l.ExpiresAt}, &l.Version)
	return l, err
}

// changeLease reads lease name in a write transaction and stores what f
// makes of it (f returns write false to leave it).
func (s *Store) changeLease(ctx context.Context, op, name string, f func(cur store.Lease, found bool) (store.Lease, bool, error)) (store.Lease, error) {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return store.Lease{}, wrap(op, err)
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	cur, err := scanLease(tx.QueryRowContext(ctx, `SELECT `+leaseCols+` FROM leases WHERE name = ?`, name))
	found := err == nil
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return store.Lease{}, wrap(op, err)
	}
	nl, write, err := f(cur, found)
	if err != nil || !write {
		return nl, err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO leases (`+leaseCols+`) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, token = excluded.token,
			expires_at = excluded.expires_at, version = excluded.version`,
		nl.Name, nl.Holder, nl.Token, ms(nl.ExpiresAt), nl.Version); err != nil {
		return store.Lease{}, wrap(op, err)
	}
	if err := tx.Commit(); err != nil {
		return store.Lease{}, wrap(op, err)
	}
	return nl, nil
}

func (s *Store) AcquireLease(ctx context.Context, name, holder string, ttl time.Duration, now time.Time) (store.Lease, error) {
	return s.changeLease(ctx, "acquire lease", name, func(cur store.Lease, found bool) (store.Lease, bool, error) {
		nl, err := storeutil.AcquireLease(cur, found, name, holder, ttl, now)
		return nl, err == nil, err
	})
}

func (s *Store) RenewLease(ctx context.Context, l store.Lease, ttl time.Duration, now time.Time) (store.Lease, error) {
	return s.changeLease(ctx, "renew lease", l.Name, func(cur store.Lease, found bool) (store.Lease, bool, error) {
		if !found {
			return store.Lease{}, false, store.LeaseLost(l.Name)
		}
		nl, err := storeutil.RenewLease(cur, l, ttl, now)
		return nl, err == nil, err
	})
}

func (s *Store) ReleaseLease(ctx context.Context, l store.Lease) error {
	_, err := s.changeLease(ctx, "release lease", l.Name, func(cur store.Lease, found bool) (store.Lease, bool, error) {
		if !found {
			return cur, false, nil
		}
		nl, ok := storeutil.ReleaseLease(cur, l)
		return nl, ok, nil
	})
	return err
}

func (s *Store) GetLease(ctx context.Context, name string) (store.Lease, error) {
	l, err := scanLease(s.r.QueryRowContext(ctx, `SELECT `+leaseCols+` FROM leases WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return l, store.NotFound("lease", name)
	}
	if err != nil {
		return l, wrap("get lease", err)
	}
	return l, nil
}
