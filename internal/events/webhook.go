package events

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/paddock-dev/paddock/internal/netguard"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
)

// Webhook delivery headers. The signature is
//
//	Paddock-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
//
// so a receiver checks the body and how old it is (replays).
const (
	HeaderSignature  = "Paddock-Signature"
	HeaderEventType  = "Paddock-Event-Type"
	HeaderEventSeq   = "Paddock-Event-Seq"
	HeaderDeliveryID = "Paddock-Delivery-Id"
	HeaderWebhookID  = "Paddock-Webhook-Id"
)

// Defaults and bounds of webhooks.
const (
	DefaultMaxAttempts = 10
	DefaultBackoff     = 2 * time.Second // doubles per failed attempt
	maxBackoff         = time.Hour
	DefaultTimeout     = 10 * time.Second
	// DefaultMaxBacklog bounds a webhook's pending deliveries: past it, a
	// new event's delivery is recorded as dropped, not sent.
	DefaultMaxBacklog  = 1000
	MaxWebhooksPerTeam = 10
	maxURLLen          = 2048
	minSecretLen       = 16
	maxSecretLen       = 256
	maxWorkers         = 16 // webhooks delivered to at once
	scanInterval       = 2 * time.Second
	teamCacheTTL       = 10 * time.Second
)

// WebhookConfig configures Webhooks.
type WebhookConfig struct {
	Store store.Store
	Bus   *Bus
	// Key seals the signing secrets at rest (the daemon's secrets key,
	// 32 bytes).
	Key []byte
	// Guard checks every address a delivery dials: tenants choose the
	// URLs, so no private, loopback or metadata target unless the
	// operator allows it.
	Guard       netguard.Guard
	MaxAttempts int           // default DefaultMaxAttempts
	Backoff     time.Duration // first retry delay, default DefaultBackoff
	Timeout     time.Duration // one attempt, default DefaultTimeout
	// MaxBacklog bounds each webhook's pending deliveries (default
	// DefaultMaxBacklog). A receiver that is down, or slower than its
	// events, would otherwise grow the store without bound. When the
	// backlog is full a new event's delivery is refused: recorded in state
	// "dropped" (listed with the others, never sent) rather than pushing
	// out the oldest pending one. Deliveries go in Seq order, the head
	// blocking the rest, so the receiver gets an unbroken run of the
	// oldest events and one gap at the end, which the dropped records
	// name; dropping the oldest instead would race the attempt in flight
	// on it and leave gaps in the middle.
	MaxBacklog int
	Logger     *slog.Logger
	Now        func() time.Time
	// Active, when set, gates the scan for due deliveries: replicas
	// sharing the store deliver from the one that holds the lease of
	// that work. Nil: always active (one host).
	Active func() bool
}

// Webhooks keeps teams' webhooks and delivers their events: one worker
// per webhook with pending deliveries sends them in Seq order, the head
// blocking the rest until it is delivered or given up (failed).
type Webhooks struct {
	cfg    WebhookConfig
	aead   cipher.AEAD
	client *http.Client
	log    *slog.Logger

	mu       sync.Mutex // guards the fields below
	busy     map[string]bool
	dropping map[string]time.Time // webhooks found with a full backlog, and when (see backlogFull)
	teams    map[string]teamHooks // cache of each team's webhooks
	poke     chan struct{}

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // the scanner and the workers
}

type teamHooks struct {
	hooks []store.Webhook
	at    time.Time
}

// NewWebhooks builds the deliverer and hooks it on the bus; Start starts
// delivering.
func NewWebhooks(cfg WebhookConfig) (*Webhooks, error) {
	if cfg.Store == nil || cfg.Bus == nil {
		return nil, errors.New("webhooks: Store and Bus are required")
	}
	block, err := aes.NewCipher(cfg.Key)
	if err != nil {
		return nil, fmt.Errorf("webhooks: secrets key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("webhooks: secrets key: %w", err)
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = DefaultBackoff
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxBacklog <= 0 {
		cfg.MaxBacklog = DefaultMaxBacklog
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Guard.Hint == "" {
		cfg.Guard.Hint = "paddock serve --webhook-allow-private"
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &Webhooks{
		cfg: cfg, aead: aead, log: cfg.Logger.With("component", "webhooks"),
		client: &http.Client{
			Transport: cfg.Guard.Transport(),
			Timeout:   cfg.Timeout,
			// A redirect would lead a delivery somewhere its owner did not
			// name (and past the guard's view of the URL): never follow.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		busy: map[string]bool{}, dropping: map[string]time.Time{}, teams: map[string]teamHooks{}, poke: make(chan struct{}, 1),
		ctx: ctx, cancel: cancel,
	}
	cfg.Bus.OnPublish(w.enqueue)
	return w, nil
}

// Start delivers until Close, beginning with what a previous run left
// pending.
func (w *Webhooks) Start() {
	w.wg.Add(1)
	go w.scan()
}

// Close stops delivering and waits for attempts in flight; pending
// deliveries stay in the store for the next start.
func (w *Webhooks) Close() error {
	w.cancel()
	w.wg.Wait()
	w.client.CloseIdleConnections()
	return nil
}

// Add creates a webhook of team for url. An empty secret is generated.
// The secret is returned here once and never again.
func (w *Webhooks) Add(ctx context.Context, teamID, rawURL, secret string, types []string) (store.Webhook, string, error) {
	if err := checkURL(rawURL); err != nil {
		return store.Webhook{}, "", err
	}
	if err := ValidTypes(types); err != nil {
		return store.Webhook{}, "", err
	}
	switch {
	case secret == "":
		b := make([]byte, 32)
		rand.Read(b) // never fails (crypto/rand panics rather)
		secret = "whsec_" + base64.RawURLEncoding.EncodeToString(b)
	case len(secret) < minSecretLen || len(secret) > maxSecretLen:
		return store.Webhook{}, "", sandbox.Errorf(sandbox.ErrInvalid, "invalid_webhook_secret", "secret must be %d-%d bytes", minSecretLen, maxSecretLen)
	}
	existing, err := w.cfg.Store.ListWebhooks(ctx, teamID)
	if err != nil {
		return store.Webhook{}, "", err
	}
	if len(existing) >= MaxWebhooksPerTeam {
		return store.Webhook{}, "", sandbox.Errorf(sandbox.ErrExhausted, "too_many_webhooks", "a team has at most %d webhooks", MaxWebhooksPerTeam)
	}
	id := newID("wh-")
	hook := store.Webhook{ID: id, TeamID: teamID, URL: rawURL, Types: types, Secret: w.seal(id, []byte(secret))}
	if err := w.cfg.Store.CreateWebhook(ctx, hook); err != nil {
		return store.Webhook{}, "", err
	}
	w.forget(teamID)
	hook, err = w.cfg.Store.GetWebhook(ctx, teamID, id)
	return hook, secret, err
}

// List returns a team's webhooks ("" = every team's).
func (w *Webhooks) List(ctx context.Context, teamID string) ([]store.Webhook, error) {
	return w.cfg.Store.ListWebhooks(ctx, teamID)
}

// Get returns one of a team's webhooks ("" skips the team check).
func (w *Webhooks) Get(ctx context.Context, teamID, id string) (store.Webhook, error) {
	return w.cfg.Store.GetWebhook(ctx, teamID, id)
}

// Delete removes a webhook and its pending deliveries.
func (w *Webhooks) Delete(ctx context.Context, teamID, id string) error {
	hook, err := w.cfg.Store.GetWebhook(ctx, teamID, id)
	if err != nil {
		return err
	}
	if err := w.cfg.Store.DeleteWebhook(ctx, teamID, id); err != nil {
		return err
	}
	w.forget(hook.TeamID)
	return nil
}

// Deliveries lists a webhook's deliveries after seq, by Seq.
func (w *Webhooks) Deliveries(ctx context.Context, teamID, id, state string, afterSeq int64, limit int) ([]store.Delivery, error) {
	if _, err := w.cfg.Store.GetWebhook(ctx, teamID, id); err != nil {
		return nil, err
	}
	return w.cfg.Store.ListDeliveries(ctx, store.DeliveryFilter{WebhookID: id, State: state, AfterSeq: afterSeq, Limit: limit})
}

func checkURL(raw string) error {
	u, err := url.Parse(raw)
	switch {
	case err != nil, len(raw) > maxURLLen, u.Scheme != "http" && u.Scheme != "https", u.Host == "":
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_webhook_url", "url must be an http(s) URL of at most %d bytes", maxURLLen)
	case u.User != nil:
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_webhook_url", "url must not carry credentials; use the signing secret")
	}
	return nil
}

// enqueue is the bus hook: one delivery per matching webhook of e's team.
func (w *Webhooks) enqueue(ctx context.Context, e store.Event) {
	if e.TeamID == "" {
		return
	}
	hooks, err := w.teamHooks(ctx, e.TeamID)
	if err != nil {
		w.log.Error("list webhooks", "team", e.TeamID, "err", err)
		return
	}
	var payload []byte
	added := false
	for _, h := range hooks {
		if !MatchType(h.Types, Type(e)) {
			continue
		}
		if payload == nil {
			payload, _ = json.Marshal(ToAPI(e)) // plain data always encodes
		}
		d := store.Delivery{ID: store.DeliveryID(h.ID, e.Seq), WebhookID: h.ID, TeamID: e.TeamID,
			EventSeq: e.Seq, EventType: Type(e), Payload: payload, State: store.DeliveryPending}
		full, err := w.backlogFull(ctx, h.ID)
		if err != nil {
			w.log.Error("count webhook backlog", "webhook", h.ID, "err", err)
			continue
		}
		if full {
			d.State = store.DeliveryDropped
			d.LastError = fmt.Sprintf("dropped: the webhook's backlog is full (%d pending deliveries)", w.cfg.MaxBacklog)
		}
		err = w.cfg.Store.AddDelivery(ctx, d)
		if err != nil && !errors.Is(err, sandbox.ErrConflict) {
			w.log.Error("enqueue webhook delivery", "webhook", h.ID, "seq", e.Seq, "err", err)
			continue
		}
		if full {
			continue
		}
		added = true
	}
	if added {
		w.wake()
	}
}

// recountEvery is how often a webhook whose backlog was full has it
// counted again, unless one of its deliveries settles here first:
// meanwhile its new deliveries are dropped without a count, which costs
// the store a scan of MaxBacklog index entries.
const recountEvery = time.Second

// backlogFull reports whether a webhook holds MaxBacklog pending
// deliveries. A full backlog is logged once per run of drops (a receiver
// that is down drops every event).
func (w *Webhooks) backlogFull(ctx context.Context, webhookID string) (bool, error) {
	now := w.cfg.Now()
	w.mu.Lock()
	since, dropping := w.dropping[webhookID]
	w.mu.Unlock()
	if dropping && now.Sub(since) < recountEvery {
		return true, nil
	}
	n, err := w.cfg.Store.CountDeliveries(ctx, store.DeliveryFilter{WebhookID: webhookID, State: store.DeliveryPending}, w.cfg.MaxBacklog)
	if err != nil {
		return false, err
	}
	full := n >= w.cfg.MaxBacklog
	w.mu.Lock()
	if full {
		w.dropping[webhookID] = now
	} else {
		delete(w.dropping, webhookID)
	}
	w.mu.Unlock()
	if full && !dropping {
		w.log.Warn("webhook backlog full: new deliveries are dropped until it drains", "webhook", webhookID, "backlog", n)
	}
	return full, nil
}

func (w *Webhooks) teamHooks(ctx context.Context, teamID string) ([]store.Webhook, error) {
	w.mu.Lock()
	c, ok := w.teams[teamID]
	w.mu.Unlock()
	// Other replicas' changes show within the TTL.
	if ok && w.cfg.Now().Sub(c.at) < teamCacheTTL {
		return c.hooks, nil
	}
	hooks, err := w.cfg.Store.ListWebhooks(ctx, teamID)
	if err != nil {
		return nil, err
	}
	w.mu.Lock()
	w.teams[teamID] = teamHooks{hooks, w.cfg.Now()}
	w.mu.Unlock()
	return hooks, nil
}

func (w *Webhooks) forget(teamID string) {
	w.mu.Lock()
	delete(w.teams, teamID)
	w.mu.Unlock()
}

func (w *Webhooks) wake() {
	select {
	case w.poke <- struct{}{}:
	default:
	}
}

// scanPages bounds the pending deliveries one scan reads (pages of
// store.MaxEventLimit), so a scan costs the same whatever the backlog.
const scanPages = 10

// scan starts a worker for every webhook whose head delivery (its pending
// one with the lowest Seq) is due, now, whenever woken, when the next
// head falls due, and at least every scanInterval. A head waiting for its
// retry holds no worker, so webhooks whose receivers are down do not keep
// the others waiting.
func (w *Webhooks) scan() {
	defer w.wg.Done()
	for {
		next := scanInterval
		heads := map[string]bool{}
		var after int64
		pages := scanPages
		if w.cfg.Active != nil && !w.cfg.Active() {
			pages = 0 // another replica delivers; look again next interval
		}
		for range pages {
			pending, err := w.cfg.Store.ListDeliveries(w.ctx, store.DeliveryFilter{State: store.DeliveryPending, AfterSeq: after, Limit: store.MaxEventLimit})
			if err != nil {
				if w.ctx.Err() == nil {
					w.log.Warn("list pending deliveries", "err", err)
				}
				break
			}
			now := w.cfg.Now()
			for _, d := range pending {
				if heads[d.WebhookID] {
					continue
				}
				heads[d.WebhookID] = true
				if wait := d.NextAttemptAt.Sub(now); wait > 0 {
					next = min(next, wait)
					continue
				}
				w.startWorker(d.WebhookID)
			}
			if len(pending) < store.MaxEventLimit {
				break
			}
			after = pending[len(pending)-1].EventSeq
		}
		t := time.NewTimer(next)
		select {
		case <-w.ctx.Done():
			t.Stop()
			return
		case <-w.poke:
			t.Stop()
		case <-t.C:
		}
	}
}

// startWorker starts webhookID's worker unless it runs or every worker
// slot is taken (the next scan tries again).
func (w *Webhooks) startWorker(webhookID string) {
	w.mu.Lock()
	start := !w.busy[webhookID] && len(w.busy) < maxWorkers
	if start {
		w.busy[webhookID] = true
		w.wg.Add(1)
	}
	w.mu.Unlock()
	if start {
		go w.work(webhookID)
	}
}

// work delivers one webhook's pending deliveries in Seq order, until none
// is left or the head waits for its retry; then it frees its slot and has
// the scanner schedule the retry.
func (w *Webhooks) work(webhookID string) {
	defer w.wg.Done()
	waiting := false
	defer func() {
		w.mu.Lock()
		delete(w.busy, webhookID)
		w.mu.Unlock()
		if waiting {
			w.wake()
		}
	}()
	for w.ctx.Err() == nil {
		head, err := w.cfg.Store.ListDeliveries(w.ctx, store.DeliveryFilter{WebhookID: webhookID, State: store.DeliveryPending, Limit: 1})
		if err != nil || len(head) == 0 {
			return
		}
		d := head[0]
		if d.NextAttemptAt.After(w.cfg.Now()) {
			waiting = true
			return
		}
		hook, err := w.cfg.Store.GetWebhook(w.ctx, "", webhookID)
		if errors.Is(err, sandbox.ErrNotFound) {
			return // deleted; its deliveries went with it
		}
		if err != nil {
			return
		}
		// Claim the attempt first: an optimistic update that counts it and
		// moves NextAttemptAt past the attempt's end. Of several replicas
		// that found the same head, one wins; the others see it not due,
		// and the webhook's later deliveries wait behind it. A replica
		// that dies mid-attempt leaves it due again once the lease ends.
		now := w.cfg.Now()
		d.Attempts++
		d.LastAttemptAt, d.NextAttemptAt = now, now.Add(2*w.cfg.Timeout)
		d, err = w.cfg.Store.UpdateDelivery(w.ctx, d)
		if errors.Is(err, sandbox.ErrConflict) {
			return // another replica's
		}
		if err != nil {
			if w.ctx.Err() == nil {
				w.log.Warn("claim webhook delivery", "delivery", head[0].ID, "err", err)
			}
			return
		}
		done, err := w.cfg.Store.UpdateDelivery(w.ctx, w.attempt(hook, d))
		if err != nil {
			if w.ctx.Err() == nil {
				w.log.Warn("record webhook delivery", "delivery", d.ID, "err", err)
			}
			return
		}
		if done.State != store.DeliveryPending {
			// The backlog shrank: the next event counts it again.
			w.mu.Lock()
			delete(w.dropping, webhookID)
			w.mu.Unlock()
		}
	}
}

// attempt sends d once and returns it with the outcome recorded.
func (w *Webhooks) attempt(hook store.Webhook, d store.Delivery) store.Delivery {
	now := d.LastAttemptAt
	status, err := w.send(hook, d, now)
	d.LastStatus = status
	switch {
	case err == nil:
		d.State, d.LastError, d.NextAttemptAt = store.DeliveryDelivered, "", time.Time{}
		return d
	case d.Attempts >= w.cfg.MaxAttempts:
		d.State, d.NextAttemptAt = store.DeliveryFailed, time.Time{}
	default:
		d.NextAttemptAt = now.Add(w.backoff(d.Attempts))
	}
	d.LastError = err.Error()
	if len(d.LastError) > 512 {
		d.LastError = d.LastError[:512]
	}
	w.log.Info("webhook delivery failed", "webhook", hook.ID, "delivery", d.ID, "attempt", d.Attempts, "state", d.State, "err", err)
	return d
}

// backoff is the wait after the n-th failed attempt: Backoff doubling,
// capped, with up to 10% jitter so retries of many webhooks spread out.
func (w *Webhooks) backoff(n int) time.Duration {
	b := w.cfg.Backoff << min(n-1, 30)
	if b <= 0 || b > maxBackoff {
		b = maxBackoff
	}
	return b + time.Duration(mrand.Int64N(int64(b)/10+1))
}

func (w *Webhooks) send(hook store.Webhook, d store.Delivery, now time.Time) (int, error) {
	secret, err := w.open(hook.ID, hook.Secret)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(w.ctx, w.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, hook.URL, strings.NewReader(string(d.Payload)))
	if err != nil {
		return 0, err
	}
	ts := strconv.FormatInt(now.Unix(), 10)
	h := req.Header
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", "paddock-webhooks/1")
	h.Set(HeaderSignature, "t="+ts+",v1="+Sign(secret, ts, d.Payload))
	h.Set(HeaderEventType, d.EventType)
	h.Set(HeaderEventSeq, strconv.FormatInt(d.EventSeq, 10))
	h.Set(HeaderDeliveryID, d.ID)
	h.Set(HeaderWebhookID, hook.ID)
	resp, err := w.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return resp.StatusCode, nil
}

// Sign is the v1 signature of a delivery: hex HMAC-SHA256 over
// "<timestamp>.<body>" with the webhook's secret.
func Sign(secret []byte, timestamp string, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(timestamp))
	m.Write([]byte("."))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// seal encrypts a signing secret; the webhook's ID is the additional data,
// so a sealed secret copied to another webhook does not open.
func (w *Webhooks) seal(id string, plain []byte) []byte {
	nonce := make([]byte, w.aead.NonceSize())
	rand.Read(nonce)
	return w.aead.Seal(nonce, nonce, plain, []byte("webhook:"+id))
}

func (w *Webhooks) open(id string, sealed []byte) ([]byte, error) {
	n := w.aead.NonceSize()
	if len(sealed) < n {
		return nil, errors.New("webhook secret is truncated")
	}
	plain, err := w.aead.Open(nil, sealed[:n], sealed[n:], []byte("webhook:"+id))
	if err != nil {
		return nil, fmt.Errorf("open webhook secret (wrong secrets key?): %w", err)
	}
	return plain, nil
}

func newID(prefix string) string {
	b := make([]byte, 10)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}
