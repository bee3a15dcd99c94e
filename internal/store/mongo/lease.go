package mongo

import (
	"context"
	"errors"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
	"github.com/paddock-dev/paddock/internal/store/internal/storeutil"
)

// A lease changes like every record: read, decide (storeutil), then an
// optimistic update on the version read (claimed first, see update), or
// an insert whose duplicate _id means another replica made it first.

type leaseDoc struct {
	Name      string    `bson:"_id"`
	Holder    string    `bson:"holder"`
	Token     int64     `bson:"token"`
	ExpiresAt time.Time `bson:"expiresAt,omitempty"`
	Version   int64     `bson:"version"`
}

func (d leaseDoc) rec() store.Lease {
	return store.Lease{Name: d.Name, Holder: d.Holder, Token: d.Token, ExpiresAt: d.ExpiresAt, Version: d.Version}
}

// readLease returns lease name, found false if there is none.
func (s *Store) readLease(ctx context.Context, name string) (store.Lease, bool, error) {
	var d leaseDoc
	err := s.leases.FindOne(ctx, bson.D{{Key: "_id", Value: name}}).Decode(&d)
	if noDoc(err) {
		return store.Lease{}, false, nil
	}
	if err != nil {
		return store.Lease{}, false, wrap("read lease", err)
	}
	return d.rec(), true, nil
}

// writeLease stores nl over cur (found false: inserts it); lost is the
// error when another writer changed the lease first.
func (s *Store) writeLease(ctx context.Context, cur store.Lease, found bool, nl store.Lease, lost error) (store.Lease, error) {
	if !found {
		_, err := s.leases.InsertOne(ctx, leaseDoc{Name: nl.Name, Holder: nl.Holder, Token: nl.Token, ExpiresAt: nl.ExpiresAt, Version: nl.Version})
		if isDup(err) {
			return store.Lease{}, lost
		}
		if err != nil {
			return store.Lease{}, wrap("write lease", err)
		}
		return nl, nil
	}
	set := bson.D{{Key: "holder", Value: nl.Holder}, {Key: "token", Value: nl.Token}}
	var unset bson.D
	set, unset = setTime(set, unset, "expiresAt", nl.ExpiresAt)
	var out leaseDoc
	err := s.update(ctx, s.leases, "lease", cur.Name, cur.Version, nil, set, unset, &out)
	if errors.Is(err, sandbox.ErrConflict) || errors.Is(err, sandbox.ErrNotFound) {
		return store.Lease{}, lost
	}
	if err != nil {
		return store.Lease{}, err
	}
	return out.rec(), nil
}

func (s *Store) AcquireLease(ctx context.Context, name, holder string, ttl time.Duration, now time.Time) (store.Lease, error) {
	cur, found, err := s.readLease(ctx, name)
	if err != nil {
		return store.Lease{}, err
	}
	nl, err := storeutil.AcquireLease(cur, found, name, holder, ttl, now)
	if err != nil {
		return store.Lease{}, err
	}
	return s.writeLease(ctx, cur, found, nl, store.LeaseHeld(name, "another replica"))
}

func (s *Store) RenewLease(ctx context.Context, l store.Lease, ttl time.Duration, now time.Time) (store.Lease, error) {
	cur, found, err := s.readLease(ctx, l.Name)
	if err != nil {
		return store.Lease{}, err
	}
	if !found {
		return store.Lease{}, store.LeaseLost(l.Name)
	}
	nl, err := storeutil.RenewLease(cur, l, ttl, now)
	if err != nil {
		return store.Lease{}, err
	}
	return s.writeLease(ctx, cur, true, nl, store.LeaseLost(l.Name))
}

func (s *Store) ReleaseLease(ctx context.Context, l store.Lease) error {
	cur, found, err := s.readLease(ctx, l.Name)
	if err != nil || !found {
		return err
	}
	nl, ok := storeutil.ReleaseLease(cur, l)
	if !ok {
		return nil
	}
	_, err = s.writeLease(ctx, cur, true, nl, nil)
	if err == nil || errors.Is(err, sandbox.ErrConflict) {
		return nil // lost meanwhile: not ours to release
	}
	return err
}

func (s *Store) GetLease(ctx context.Context, name string) (store.Lease, error) {
	l, found, err := s.readLease(ctx, name)
	if err == nil && !found {
		err = store.NotFound("lease", name)
	}
	return l, err
}
