package store

import (
	"context"
	"time"
)

// Leases is the part of Store that holds named leases: work that must run
// once among the replicas sharing the store (internal/lease keeps them).
// Each change is a compare-and-set on the record, so of several replicas
// asking at once one wins. Times come from the caller's clock (now): the
// replicas' clocks must agree to well within a lease's TTL (NTP does).
type Leases interface {
	// AcquireLease makes holder the holder of lease name until now+ttl, if
	// it is free, expired, or already holder's; each acquire gives the
	// lease a Token larger than any it had. ErrConflict "lease_held" if
	// another holder's lease is live (or another acquire won the race).
	AcquireLease(ctx context.Context, name, holder string, ttl time.Duration, now time.Time) (Lease, error)
	// RenewLease moves the expiry of l (as acquired: Name, Holder and
	// Token) to now+ttl. ErrConflict "lease_lost" if the lease has another
	// holder or Token since (it expired and was taken).
	RenewLease(ctx context.Context, l Lease, ttl time.Duration, now time.Time) (Lease, error)
	// ReleaseLease frees l if it is still l's (Holder and Token): it
	// expires at once, keeping its Token. A lease lost meanwhile is not an
	// error.
	ReleaseLease(ctx context.Context, l Lease) error
	// GetLease returns a lease as stored; ErrNotFound "lease_not_found" if
	// it was never acquired.
	GetLease(ctx context.Context, name string) (Lease, error)
}

// Lease is one named lease.
type Lease struct {
	Name   string `json:"name"`
	Holder string `json:"holder,omitempty"` // "" once released
	// Token is the fencing token: it grows with every acquire, so a
	// holder's writes can be told from those of an earlier holder.
	Token     int64     `json:"token"`
	ExpiresAt time.Time `json:"expiresAt,omitzero"`
	// Version counts the record's changes (renewals included): what the
	// stores compare and set on.
	Version int64 `json:"version"`
}

// Live reports whether l is held at now.
func (l Lease) Live(now time.Time) bool { return l.Holder != "" && now.Before(l.ExpiresAt) }

// LeaseHeld is AcquireLease's conflict.
func LeaseHeld(name, holder string) error {
	return Conflict("lease_held", "lease %s is held by %s", name, holder)
}

// LeaseLost is RenewLease's conflict.
func LeaseLost(name string) error {
	return Conflict("lease_lost", "lease %s was lost: it expired and was taken, or released", name)
}
