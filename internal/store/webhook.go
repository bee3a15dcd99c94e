package store

import (
	"context"
	"encoding/json"
	"strconv"
	"time"
)

// Webhooks is the part of Store that keeps teams' webhooks and the
// delivery of each event to each of them (internal/events delivers them).
type Webhooks interface {
	// LastEventSeq is the largest event Seq taken (0 if none): where a
	// feed that asks for new events only starts.
	LastEventSeq(ctx context.Context) (int64, error)

	CreateWebhook(ctx context.Context, w Webhook) error // ErrConflict "webhook_exists" if the ID exists
	// GetWebhook returns a webhook; teamID "" skips the ownership check,
	// else another team's webhook is ErrNotFound "webhook_not_found".
	GetWebhook(ctx context.Context, teamID, id string) (Webhook, error)
	ListWebhooks(ctx context.Context, teamID string) ([]Webhook, error) // teamID "" = every team
	// DeleteWebhook removes a webhook and its deliveries; ErrNotFound if
	// unknown or another team's (teamID "" skips the check).
	DeleteWebhook(ctx context.Context, teamID, id string) error

	// AddDelivery records one event to deliver to one webhook;
	// ErrConflict "delivery_exists" if its ID exists, so that enqueueing
	// an event twice (DeliveryID) is harmless.
	AddDelivery(ctx context.Context, d Delivery) error
	// UpdateDelivery is optimistic like UpdateProject: it replaces State,
	// Attempts, NextAttemptAt, LastAttemptAt, LastStatus and LastError of
	// the delivery whose ID and Version match d's, and returns it as
	// stored (Version+1, UpdatedAt now).
	UpdateDelivery(ctx context.Context, d Delivery) (Delivery, error)
	// ListDeliveries returns matching deliveries with EventSeq > AfterSeq,
	// ordered by (EventSeq, ID).
	ListDeliveries(ctx context.Context, f DeliveryFilter) ([]Delivery, error)
	// CountDeliveries counts the deliveries matching f's TeamID, WebhookID
	// and State (AfterSeq and Limit are ignored), stopping at upTo when it
	// is positive: a webhook's backlog is checked against a bound without
	// counting past it.
	CountDeliveries(ctx context.Context, f DeliveryFilter, upTo int) (int, error)
	// PruneDeliveries deletes the deliveries no longer pending (delivered,
	// failed, dropped) of events with Seq < beforeSeq, and returns how
	// many: delivery records live as long as their event. Pending ones
	// stay until they settle.
	PruneDeliveries(ctx context.Context, beforeSeq int64) (int, error)

	// PruneEvents deletes the events older than before (zero: none by
	// age) and those more than keep behind the newest by Seq (keep <= 0:
	// none by count), and returns how many. The newest event always stays,
	// so that Seqs never go back (a feed resumes after its last Seq, and
	// DeliveryID keys on it).
	PruneEvents(ctx context.Context, before time.Time, keep int64) (int, error)
}

// Webhook is a team's subscription to its events.
type Webhook struct {
	ID     string `json:"id"`
	TeamID string `json:"teamId"`
	URL    string `json:"url"`
	// Secret is the signing secret, sealed by its owner (the store keeps
	// it opaque).
	Secret []byte `json:"secret"`
	// Types lists the event types delivered; empty means all.
	Types     []string  `json:"types,omitempty"`
	CreatedAt time.Time `json:"createdAt"`
}

// Delivery states.
const (
	DeliveryPending   = "pending"
	DeliveryDelivered = "delivered"
	DeliveryFailed    = "failed"  // gave up after the last attempt
	DeliveryDropped   = "dropped" // never sent: its webhook's backlog was full when its event came
)

// Delivery is one event on its way to one webhook.
type Delivery struct {
	ID        string `json:"id"`
	WebhookID string `json:"webhookId"`
	TeamID    string `json:"teamId"`
	EventSeq  int64  `json:"eventSeq"`
	EventType string `json:"eventType"`
	// Payload is the request body, fixed when the delivery is made so
	// that every attempt sends the same bytes.
	Payload       json.RawMessage `json:"payload"`
	State         string          `json:"state"`
	Attempts      int             `json:"attempts"`
	NextAttemptAt time.Time       `json:"nextAttemptAt,omitzero"`
	LastAttemptAt time.Time       `json:"lastAttemptAt,omitzero"`
	LastStatus    int             `json:"lastStatus,omitempty"`
	LastError     string          `json:"lastError,omitempty"`
	CreatedAt     time.Time       `json:"createdAt"`
	UpdatedAt     time.Time       `json:"updatedAt"`
	Version       int64           `json:"version"`
}

// DeliveryID is the ID of the delivery of event seq to webhook: the same
// on every replica, so an event is enqueued once per webhook.
func DeliveryID(webhookID string, seq int64) string {
	return webhookID + "-" + strconv.FormatInt(seq, 10)
}

// DeliveryFilter selects deliveries; zero fields match everything.
type DeliveryFilter struct {
	TeamID    string
	WebhookID string
	State     string
	AfterSeq  int64
	Limit     int // default 100, max 1000
}
