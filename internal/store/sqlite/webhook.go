package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/paddock-dev/paddock/internal/store"
	"github.com/paddock-dev/paddock/internal/store/internal/storeutil"
)

func (s *Store) LastEventSeq(ctx context.Context) (int64, error) {
	var seq sql.NullInt64
	if err := s.r.QueryRowContext(ctx, `SELECT MAX(seq) FROM events`).Scan(&seq); err != nil {
		return 0, wrap("last event seq", err)
	}
	return seq.Int64, nil
}

func scanDoc[T any](sc scanner) (T, error) {
	var v T
	var doc string
	if err := sc.Scan(&doc); err != nil {
		return v, err
	}
	return v, json.Unmarshal([]byte(doc), &v)
}

func (s *Store) CreateWebhook(ctx context.Context, w store.Webhook) error {
	w, err := storeutil.Webhook(w)
	if err != nil {
		return err
	}
	doc, err := json.Marshal(w)
	if err != nil {
		return wrap("create webhook", err)
	}
	_, err = s.w.ExecContext(ctx, `INSERT INTO webhooks (id, team_id, created_at, doc) VALUES (?, ?, ?, ?)`,
		w.ID, w.TeamID, ms(w.CreatedAt), string(doc))
	if isUnique(err) {
		return store.Exists("webhook", w.ID)
	}
	if err != nil {
		return wrap("create webhook", err)
	}
	return nil
}

func (s *Store) GetWebhook(ctx context.Context, teamID, id string) (store.Webhook, error) {
	w, err := scanDoc[store.Webhook](s.r.QueryRowContext(ctx,
		`SELECT doc FROM webhooks WHERE id = ? AND (? = '' OR team_id = ?)`, id, teamID, teamID))
	if errors.Is(err, sql.ErrNoRows) {
		return w, store.NotFound("webhook", id)
	}
	if err != nil {
		return w, wrap("get webhook", err)
	}
	return w, nil
}

func (s *Store) ListWebhooks(ctx context.Context, teamID string) ([]store.Webhook, error) {
	return list(ctx, s.r, scanDoc[store.Webhook], "list webhooks",
		`SELECT doc FROM webhooks WHERE (? = '' OR team_id = ?) ORDER BY created_at, id`, teamID, teamID)
}

func (s *Store) DeleteWebhook(ctx context.Context, teamID, id string) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return wrap("delete webhook", err)
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	res, err := tx.ExecContext(ctx, `DELETE FROM webhooks WHERE id = ? AND (? = '' OR team_id = ?)`, id, teamID, teamID)
	if err := affected(res, err, "delete webhook", "webhook", id); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM webhook_deliveries WHERE webhook_id = ?`, id); err != nil {
		return wrap("delete webhook deliveries", err)
	}
	if err := tx.Commit(); err != nil {
		return wrap("delete webhook", err)
	}
	return nil
}

func (s *Store) AddDelivery(ctx context.Context, d store.Delivery) error {
	d, err := storeutil.Delivery(d, true)
	if err != nil {
		return err
	}
	doc, err := json.Marshal(d)
	if err != nil {
		return wrap("add delivery", err)
	}
	_, err = s.w.ExecContext(ctx, `INSERT INTO webhook_deliveries (id, webhook_id, team_id, event_seq, state, version, doc)
		VALUES (?, ?, ?, ?, ?, ?, ?)`, d.ID, d.WebhookID, d.TeamID, d.EventSeq, d.State, d.Version, string(doc))
	if isUnique(err) {
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
	old, err := scanDoc[store.Delivery](s.r.QueryRowContext(ctx, `SELECT doc FROM webhook_deliveries WHERE id = ?`, d.ID))
	if errors.Is(err, sql.ErrNoRows) {
		return d, store.NotFound("delivery", d.ID)
	}
	if err != nil {
		return d, wrap("update delivery", err)
	}
	if old.Version != d.Version {
		return d, store.Stale("delivery", d.ID)
	}
	// Only the delivery's progress changes; what it carries is fixed.
	nd := old
	nd.State, nd.Attempts, nd.NextAttemptAt, nd.LastAttemptAt = d.State, d.Attempts, d.NextAttemptAt, d.LastAttemptAt
	nd.LastStatus, nd.LastError = d.LastStatus, d.LastError
	nd.Version, nd.UpdatedAt = old.Version+1, storeutil.Now()
	doc, err := json.Marshal(nd)
	if err != nil {
		return d, wrap("update delivery", err)
	}
	res, err := s.w.ExecContext(ctx, `UPDATE webhook_deliveries SET state = ?, version = ?, doc = ? WHERE id = ? AND version = ?`,
		nd.State, nd.Version, string(doc), d.ID, d.Version)
	if err != nil {
		return d, wrap("update delivery", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return d, wrap("update delivery", err)
	} else if n == 0 {
		return d, store.Stale("delivery", d.ID)
	}
	return nd, nil
}

func (s *Store) ListDeliveries(ctx context.Context, f store.DeliveryFilter) ([]store.Delivery, error) {
	where, args := []string{`event_seq > ?`}, []any{f.AfterSeq}
	for _, c := range []struct{ col, v string }{{"team_id", f.TeamID}, {"webhook_id", f.WebhookID}, {"state", f.State}} {
		if c.v != "" {
			where, args = append(where, c.col+` = ?`), append(args, c.v)
		}
	}
	return list(ctx, s.r, scanDoc[store.Delivery], "list deliveries",
		`SELECT doc FROM webhook_deliveries`+whereSQL(where)+fmt.Sprintf(` ORDER BY event_seq, id LIMIT %d`, storeutil.DeliveryLimit(f)), args...)
}

func (s *Store) CountDeliveries(ctx context.Context, f store.DeliveryFilter, upTo int) (int, error) {
	where, args := []string{}, []any{}
	for _, c := range []struct{ col, v string }{{"team_id", f.TeamID}, {"webhook_id", f.WebhookID}, {"state", f.State}} {
		if c.v != "" {
			where, args = append(where, c.col+` = ?`), append(args, c.v)
		}
	}
	limit := ""
	if upTo > 0 {
		limit = fmt.Sprintf(` LIMIT %d`, upTo)
	}
	var n int
	err := s.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM (SELECT 1 FROM webhook_deliveries`+whereSQL(where)+limit+`)`, args...).Scan(&n)
	if err != nil {
		return 0, wrap("count deliveries", err)
	}
	return n, nil
}

func (s *Store) PruneDeliveries(ctx context.Context, beforeSeq int64) (int, error) {
	res, err := s.w.ExecContext(ctx, `DELETE FROM webhook_deliveries WHERE event_seq < ? AND state != ?`, beforeSeq, store.DeliveryPending)
	return deleted(res, err, "prune deliveries")
}

func (s *Store) PruneEvents(ctx context.Context, before time.Time, keep int64) (int, error) {
	last, err := s.LastEventSeq(ctx)
	if err != nil || last == 0 {
		return 0, err
	}
	// Always below the newest: Seqs must never go back.
	var conds []string
	var args []any
	if keep > 0 && last-keep+1 > 1 {
		conds, args = append(conds, `seq < ?`), append(args, last-keep+1)
	}
	if !before.IsZero() {
		conds, args = append(conds, `(seq < ? AND time < ?)`), append(args, last, ms(before))
	}
	if len(conds) == 0 {
		return 0, nil
	}
	res, err := s.w.ExecContext(ctx, `DELETE FROM events WHERE `+strings.Join(conds, ` OR `), args...)
	return deleted(res, err, "prune events")
}
