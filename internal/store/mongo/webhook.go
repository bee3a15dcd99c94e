package mongo

import (
	"context"
	"encoding/json"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/paddock-dev/paddock/internal/store"
	"github.com/paddock-dev/paddock/internal/store/internal/storeutil"
)

func (s *Store) LastEventSeq(ctx context.Context) (int64, error) {
	seq, err := s.lastSeq(ctx)
	if err != nil {
		return 0, wrap("last event seq", err)
	}
	return seq, nil
}

// webhookDoc and deliveryDoc keep the record as JSON (Data) beside the
// fields lists filter and sort on.
type webhookDoc struct {
	ID        string    `bson:"_id"`
	TeamID    string    `bson:"teamId"`
	CreatedAt time.Time `bson:"createdAt"`
	Data      string    `bson:"data"`
}

func (d webhookDoc) rec() store.Webhook {
	var w store.Webhook
	_ = json.Unmarshal([]byte(d.Data), &w) // written by CreateWebhook from a record
	return w
}

type deliveryDoc struct {
	ID        string `bson:"_id"`
	WebhookID string `bson:"webhookId"`
	TeamID    string `bson:"teamId"`
	EventSeq  int64  `bson:"eventSeq"`
	State     string `bson:"state"`
	Version   int64  `bson:"version"`
	Data      string `bson:"data"`
}

func (d deliveryDoc) rec() store.Delivery {
	var r store.Delivery
	_ = json.Unmarshal([]byte(d.Data), &r) // written from a record
	r.State, r.Version = d.State, d.Version
	return r
}

func (s *Store) CreateWebhook(ctx context.Context, w store.Webhook) error {
	w, err := storeutil.Webhook(w)
	if err != nil {
		return err
	}
	b, err := json.Marshal(w)
	if err != nil {
		return wrap("create webhook", err)
	}
	_, err = s.webhooks.InsertOne(ctx, webhookDoc{ID: w.ID, TeamID: w.TeamID, CreatedAt: w.CreatedAt, Data: string(b)})
	if isDup(err) {
		return store.Exists("webhook", w.ID)
	}
	if err != nil {
		return wrap("create webhook", err)
	}
	return nil
}

func (s *Store) GetWebhook(ctx context.Context, teamID, id string) (store.Webhook, error) {
	var d webhookDoc
	err := findOne(ctx, s.webhooks, eq(bson.D{{Key: "_id", Value: id}}, "teamId", teamID), &d, "webhook", id)
	return d.rec(), err
}

func (s *Store) ListWebhooks(ctx context.Context, teamID string) ([]store.Webhook, error) {
	return findAll(ctx, s.webhooks, eq(bson.D{}, "teamId", teamID), sortBy("createdAt", "_id"), webhookDoc.rec, "list webhooks")
}

func (s *Store) DeleteWebhook(ctx context.Context, teamID, id string) error {
	if err := deleteOne(ctx, s.webhooks, eq(bson.D{{Key: "_id", Value: id}}, "teamId", teamID), "webhook", id); err != nil {
		return err
	}
	// No transactions: a crash here leaves deliveries of a deleted
	// webhook, which the deliverer drops when it finds no webhook.
	if _, err := s.deliveries.DeleteMany(ctx, bson.D{{Key: "webhookId", Value: id}}); err != nil {
		return wrap("delete webhook deliveries", err)
	}
	return nil
}

func (s *Store) AddDelivery(ctx context.Context, d store.Delivery) error {
	d, err := storeutil.Delivery(d, true)
	if err != nil {
		return err
	}
	b, err := json.Marshal(d)
	if err != nil {
		return wrap("add delivery", err)
	}
	_, err = s.deliveries.InsertOne(ctx, deliveryDoc{ID: d.ID, WebhookID: d.WebhookID, TeamID: d.TeamID, EventSeq: d.EventSeq,
		State: d.State, Version: d.Version, Data: string(b)})
	if isDup(err) {
		return store.Exists("delivery", d.ID)
	}
	if err != nil {
		return wrap("add delivery", err)
	}
	return nil
}

func (s *Store) UpdateDelivery(ctx context.Context, d store.Delivery) (store.Delivery, error) {
	d, err := storeutil.Delivery(d, false)
	if err != nil {
		return d, err
	}
	var cur deliveryDoc
	if err := findOne(ctx, s.deliveries, bson.D{{Key: "_id", Value: d.ID}}, &cur, "delivery", d.ID); err != nil {
		return d, err
	}
	if cur.Version != d.Version {
		return d, store.Stale("delivery", d.ID)
	}
	// Only the delivery's progress changes; what it carries is fixed.
	nd := cur.rec()
	nd.State, nd.Attempts, nd.NextAttemptAt, nd.LastAttemptAt = d.State, d.Attempts, d.NextAttemptAt, d.LastAttemptAt
	nd.LastStatus, nd.LastError = d.LastStatus, d.LastError
	nd.Version, nd.UpdatedAt = d.Version+1, storeutil.Now()
	b, err := json.Marshal(nd)
	if err != nil {
		return d, wrap("update delivery", err)
	}
	var out deliveryDoc
	set := bson.D{{Key: "state", Value: nd.State}, {Key: "data", Value: string(b)}}
	if err := s.update(ctx, s.deliveries, "delivery", d.ID, d.Version, nil, set, nil, &out); err != nil {
		return d, err
	}
	return out.rec(), nil
}

func (s *Store) ListDeliveries(ctx context.Context, f store.DeliveryFilter) ([]store.Delivery, error) {
	filter := bson.D{{Key: "eventSeq", Value: bson.D{{Key: "$gt", Value: f.AfterSeq}}}}
	filter = eq(eq(eq(filter, "teamId", f.TeamID), "webhookId", f.WebhookID), "state", f.State)
	opts := options.Find().SetSort(bson.D{{Key: "eventSeq", Value: 1}, {Key: "_id", Value: 1}}).SetLimit(int64(storeutil.DeliveryLimit(f)))
	return findAll(ctx, s.deliveries, filter, opts, deliveryDoc.rec, "list deliveries")
}

func (s *Store) CountDeliveries(ctx context.Context, f store.DeliveryFilter, upTo int) (int, error) {
	filter := eq(eq(eq(bson.D{}, "teamId", f.TeamID), "webhookId", f.WebhookID), "state", f.State)
	opts := options.Count()
	if upTo > 0 {
		opts.SetLimit(int64(upTo))
	}
	n, err := s.deliveries.CountDocuments(ctx, filter, opts)
	if err != nil {
		return 0, wrap("count deliveries", err)
	}
	return int(n), nil
}

func (s *Store) PruneDeliveries(ctx context.Context, beforeSeq int64) (int, error) {
	res, err := s.deliveries.DeleteMany(ctx, bson.D{{Key: "eventSeq", Value: bson.D{{Key: "$lt", Value: beforeSeq}}},
		{Key: "state", Value: bson.D{{Key: "$ne", Value: store.DeliveryPending}}}})
	if err != nil {
		return 0, wrap("prune deliveries", err)
	}
	return int(res.DeletedCount), nil
}

func (s *Store) PruneEvents(ctx context.Context, before time.Time, keep int64) (int, error) {
	last, err := s.lastSeq(ctx)
	if err != nil {
		return 0, wrap("prune events", err)
	}
	// Always below the newest: Seqs are taken from the largest one, and
	// must never go back.
	var or bson.A
	if keep > 0 && last-keep+1 > 1 {
		or = append(or, bson.D{{Key: "_id", Value: bson.D{{Key: "$lt", Value: last - keep + 1}}}})
	}
	if !before.IsZero() {
		or = append(or, bson.D{{Key: "_id", Value: bson.D{{Key: "$lt", Value: last}}},
			{Key: "time", Value: bson.D{{Key: "$lt", Value: store.Time(before)}}}})
	}
	if last == 0 || len(or) == 0 {
		return 0, nil
	}
	res, err := s.events.DeleteMany(ctx, bson.D{{Key: "$or", Value: or}})
	if err != nil {
		return 0, wrap("prune events", err)
	}
	return int(res.DeletedCount), nil
}
