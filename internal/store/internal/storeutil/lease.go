package storeutil

import (
	"time"

	"github.com/paddock-dev/paddock/internal/store"
)

// checkLease refuses a lease request no store keeps.
func checkLease(name, holder string, ttl time.Duration) error {
	if err := required("lease", "name", name); err != nil {
		return err
	}
	if err := required("lease", "holder", holder); err != nil {
		return err
	}
	if ttl < store.TimePrecision {
		return store.Invalid("lease %s: ttl %s is too short", name, ttl)
	}
	return nil
}

// AcquireLease is what AcquireLease writes over cur (found false: no
// record yet), or its error: both stores then write it if cur's Version
// is still stored.
func AcquireLease(cur store.Lease, found bool, name, holder string, ttl time.Duration, now time.Time) (store.Lease, error) {
	if err := checkLease(name, holder, ttl); err != nil {
		return store.Lease{}, err
	}
	now = store.Time(now)
	exp := store.Time(now.Add(ttl))
	if !found {
		return store.Lease{Name: name, Holder: holder, Token: 1, ExpiresAt: exp, Version: 1}, nil
	}
	if cur.Live(now) && cur.Holder != holder {
		return store.Lease{}, store.LeaseHeld(name, cur.Holder)
	}
	return store.Lease{Name: name, Holder: holder, Token: cur.Token + 1, ExpiresAt: exp, Version: cur.Version + 1}, nil
}

// RenewLease is what RenewLease writes over cur for l. A lease past its
// expiry that nobody took (its Token unchanged) renews: no one else held
// it meanwhile.
func RenewLease(cur, l store.Lease, ttl time.Duration, now time.Time) (store.Lease, error) {
	if err := checkLease(l.Name, l.Holder, ttl); err != nil {
		return store.Lease{}, err
	}
	if cur.Holder != l.Holder || cur.Token != l.Token {
		return store.Lease{}, store.LeaseLost(l.Name)
	}
	cur.ExpiresAt, cur.Version = store.Time(now.Add(ttl)), cur.Version+1
	return cur, nil
}

// ReleaseLease is what ReleaseLease writes over cur for l; ok false if l
// no longer holds it (nothing to write).
func ReleaseLease(cur, l store.Lease) (_ store.Lease, ok bool) {
	if cur.Holder == "" || cur.Holder != l.Holder || cur.Token != l.Token {
		return cur, false
	}
	cur.Holder, cur.ExpiresAt, cur.Version = "", time.Time{}, cur.Version+1
	return cur, true
}
