// Package soak is `paddock bench soak`: N workers loop create → write a
// file → exec a command that reads it → read it back → destroy against a
// running server for a bounded time, and the report says how fast
// (iterations per second, p50/p99 of each step), what failed and why, how
// the server's memory and open files moved, and whether anything of the
// soak's sandboxes was left behind (on the server, or on the host: mounts,
// cgroups, processes, veths).
//
// A warm-up runs the same loop first and is reported apart: the server's
// figures "before" are taken after it, once every connection has closed,
// so the heap, pools and caches a loaded server keeps are in the baseline
// and growth past it points at a leak.
package soak

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sync"
	"time"
)

// Bounds of a soak run: a typo in a flag must not start a day-long run or
// a thousand workers.
const (
	DefaultConcurrency = 16
	MaxConcurrency     = 256
	DefaultDuration    = 5 * time.Minute
	MaxDuration        = 24 * time.Hour
	DefaultStepTimeout = 2 * time.Minute
	DefaultFileBytes   = 4 << 10
	MaxFileBytes       = 16 << 20
	// maxSamples caps the latencies kept per step (a 5-minute run at 16
	// workers makes a few thousand).
	maxSamples = 1 << 20
	// maxReasons caps the distinct failure reasons kept; more count as
	// "other".
	maxReasons = 50
	// sampleEvery is how often the server is sampled during the run, for
	// its peak.
	sampleEvery = 2 * time.Second
	// progressEvery is how often Progress gets a line.
	progressEvery = 15 * time.Second
	// maxTrend bounds the trend's points (about one per duration/60).
	maxTrend = 64 // 61 at most: the start, one per duration/60, the end
)

// Steps of one iteration, in order.
const (
	StepCreate  = "create"
	StepWrite   = "write"
	StepExec    = "exec"
	StepRead    = "read"
	StepDestroy = "destroy"
)

// Steps lists the steps in order.
var Steps = []string{StepCreate, StepWrite, StepExec, StepRead, StepDestroy}

// FilePath is where each iteration writes its file in the sandbox.
const FilePath = "/home/user/soak.bin"

// Client is the server's API as the soak drives it.
type Client interface {
	Create(ctx context.Context) (id string, err error)
	Write(ctx context.Context, id, path string, data []byte) error
	// Exec runs argv to completion and returns its stdout, at most max
	// bytes of it, and its exit code.
	Exec(ctx context.Context, id string, argv []string, max int) (stdout []byte, exit int, err error)
	// Read returns the file's content, at most max bytes.
	Read(ctx context.Context, id, path string, max int) ([]byte, error)
	Destroy(ctx context.Context, id string) error
	// List returns the ids of the sandboxes the server has (of the
	// caller's team).
	List(ctx context.Context) ([]string, error)
	// CloseIdle closes idle connections, so the server's open files are
	// counted without the client's pool.
	CloseIdle()
}

// Host sees the server's process and the host it runs on.
type Host interface {
	// Sample reads the server's figures.
	Sample() (Process, error)
	// Leaks lists what the host still has of these sandboxes: mounts,
	// cgroups, processes, and veths not there when the run began.
	Leaks(ids []string) []string
}

// Process is one sample of the server's process.
type Process struct {
	RSSBytes int64 `json:"rssBytes"`
	// RSSAnonBytes is the part of RSS that is not file-backed (heap,
	// stacks): what a leak grows, where RSS also counts the binary's pages
	// as they are first used.
	RSSAnonBytes int64 `json:"rssAnonBytes"`
	FDs          int   `json:"fds"`
	// FDKinds counts the open files by kind: socket, pipe, pidfd (process
	// handles, closed when the Go runtime collects them), anon (other
	// anonymous inodes), file.
	FDKinds map[string]int `json:"fdKinds"`
	Threads int            `json:"threads"`
}

// Config configures a run.
type Config struct {
	Client      Client
	Host        Host          // nil: no server figures, no host leak check
	Concurrency int           // 0: DefaultConcurrency
	Duration    time.Duration // 0: DefaultDuration
	// Warmup runs before the measured run; 0 takes min(1 min, Duration/5),
	// negative none.
	Warmup      time.Duration
	StepTimeout time.Duration // 0: DefaultStepTimeout
	FileBytes   int           // 0: DefaultFileBytes
	// Progress, if set, gets a line now and then while the run goes.
	Progress func(string)
	Now      func() time.Time // the clock; time.Now if nil
}

// SetDefaults fills in the zero fields.
func (c *Config) SetDefaults() {
	if c.Concurrency == 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.Duration == 0 {
		c.Duration = DefaultDuration
	}
	if c.Warmup == 0 {
		c.Warmup = min(time.Minute, c.Duration/5)
	}
	if c.StepTimeout == 0 {
		c.StepTimeout = DefaultStepTimeout
	}
	if c.FileBytes == 0 {
		c.FileBytes = DefaultFileBytes
	}
	if c.Progress == nil {
		c.Progress = func(string) {}
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Validate reports a config out of bounds.
func (c *Config) Validate() error {
	switch {
	case c.Concurrency < 1 || c.Concurrency > MaxConcurrency:
		return fmt.Errorf("soak: concurrency must be 1 to %d, got %d", MaxConcurrency, c.Concurrency)
	case c.Duration <= 0 || c.Duration > MaxDuration:
		return fmt.Errorf("soak: duration must be positive and at most %s, got %s", MaxDuration, c.Duration)
	case c.Warmup > MaxDuration:
		return fmt.Errorf("soak: warm-up must be at most %s, got %s", MaxDuration, c.Warmup)
	case c.StepTimeout <= 0:
		return fmt.Errorf("soak: step timeout must be positive, got %s", c.StepTimeout)
	case c.FileBytes < 1 || c.FileBytes > MaxFileBytes:
		return fmt.Errorf("soak: file size must be 1 to %d bytes, got %d", MaxFileBytes, c.FileBytes)
	}
	return nil
}

// Report is what a run found.
type Report struct {
	Concurrency int           `json:"concurrency"`
	Duration    time.Duration `json:"durationNs"` // the measured run, until its last iteration ended
	Warmup      Phase         `json:"warmup"`
	Run         Phase         `json:"run"`
	// Server figures (zero without a Host): at the start, after the
	// warm-up (before), at the end (after), and the highest RSS sampled
	// during the run. Before and after are taken with no client connection
	// open and no soak sandbox left.
	Start, Before, After Process
	PeakRSSBytes         int64 `json:"peakRssBytes"`
	// Trend samples the server under load during the run, evenly (every
	// 30 s, or duration/60 for runs past half an hour): a leak climbs to
	// the end, a cache that fills levels off.
	Trend []TrendPoint `json:"trend"`
	// RSSGrowth is After's RSS over Before's, minus one; RSSAnonGrowth
	// the same of the anonymous part.
	RSSGrowth     float64 `json:"rssGrowth"`
	RSSAnonGrowth float64 `json:"rssAnonGrowth"`
	FDGrowth      int     `json:"fdGrowth"`
	// Left are soak sandboxes the server still lists after the run.
	Left []string `json:"left"`
	// HostLeaks is what the host keeps of the soak's sandboxes.
	HostLeaks []string `json:"hostLeaks"`
	// Sampled says whether the server's figures were read.
	Sampled bool `json:"sampled"`
}

// Phase is the result of one phase (the warm-up or the measured run).
type Phase struct {
	Iterations int     `json:"iterations"` // completed without a failure
	Failures   int     `json:"failures"`   // iterations with a failed step
	PerSecond  float64 `json:"perSecond"`  // Iterations per second of the phase
	// Steps are the latencies of each step (successful calls), then of
	// the whole iteration.
	Steps []StepStats `json:"steps"`
	// Reasons counts failures by step and error (sandbox ids elided).
	Reasons map[string]int `json:"reasons"`
}

// StepStats are one step's latencies.
type StepStats struct {
	Name  string        `json:"name"`
	Count int           `json:"count"`
	P50   time.Duration `json:"p50Ns"`
	P99   time.Duration `json:"p99Ns"`
	Max   time.Duration `json:"maxNs"`
}

// OK reports whether the run had no failure and left nothing behind.
func (r *Report) OK() bool {
	return r.Warmup.Failures == 0 && r.Run.Failures == 0 && len(r.Left) == 0 && len(r.HostLeaks) == 0
}

// Run runs the soak: the warm-up, then the measured run, then the checks.
// It returns early, with what it has, when ctx ends.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Client == nil {
		return nil, errors.New("soak: no client")
	}
	r := &Report{Concurrency: cfg.Concurrency, Sampled: cfg.Host != nil}
	ids := &idSet{}
	if cfg.Host != nil {
		p, err := cfg.Host.Sample()
		if err != nil {
			return nil, fmt.Errorf("soak: read the server's process: %w", err)
		}
		r.Start = p
	}
	if cfg.Warmup > 0 {
		cfg.Progress(fmt.Sprintf("warm-up: %d workers for %s", cfg.Concurrency, cfg.Warmup))
		r.Warmup, _ = runPhase(ctx, &cfg, cfg.Warmup, ids, nil)
	}
	if cfg.Host != nil {
		p, err := quiesce(ctx, &cfg)
		if err != nil {
			return nil, err
		}
		r.Before = p
	}
	cfg.Progress(fmt.Sprintf("run: %d workers for %s", cfg.Concurrency, cfg.Duration))
	w := &watch{every: max(30*time.Second, cfg.Duration/60)}
	if cfg.Host != nil {
		w.observe(0, r.Before, false)
	}
	r.Run, r.Duration = runPhase(ctx, &cfg, cfg.Duration, ids, w)
	if cfg.Host != nil {
		p, err := quiesce(ctx, &cfg)
		if err != nil {
			return nil, err
		}
		r.After = p
		w.observe(r.Duration, p, true)
		r.PeakRSSBytes, r.Trend = w.result()
		if r.Before.RSSBytes > 0 {
			r.RSSGrowth = float64(r.After.RSSBytes)/float64(r.Before.RSSBytes) - 1
		}
		r.FDGrowth = r.After.FDs - r.Before.FDs
		if r.Before.RSSAnonBytes > 0 {
			r.RSSAnonGrowth = float64(r.After.RSSAnonBytes)/float64(r.Before.RSSAnonBytes) - 1
		}
	}

	// What is left: on the server, then on the host.
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.StepTimeout)
	defer cancel()
	listed, err := cfg.Client.List(lctx)
	if err != nil {
		return r, fmt.Errorf("soak: list the server's sandboxes: %w", err)
	}
	made := ids.all()
	r.Left = []string{}
	for _, id := range listed {
		if slices.Contains(made, id) {
			r.Left = append(r.Left, id)
		}
	}
	r.HostLeaks = []string{}
	if cfg.Host != nil {
		r.HostLeaks = append(r.HostLeaks, cfg.Host.Leaks(made)...)
	}
	return r, ctx.Err()
}

// quiesce closes the client's idle connections and waits until the
// server's open files stop moving (at most 10 s), then samples it.
func quiesce(ctx context.Context, cfg *Config) (Process, error) {
	cfg.Client.CloseIdle()
	var last Process
	stable := 0
	for deadline := cfg.Now().Add(10 * time.Second); ; {
		p, err := cfg.Host.Sample()
		if err != nil {
			return Process{}, fmt.Errorf("soak: read the server's process: %w", err)
		}
		if p.FDs == last.FDs && p.FDs > 0 {
			stable++
		} else {
			stable = 0
		}
		last = p
		if stable >= 3 || cfg.Now().After(deadline) || ctx.Err() != nil {
			return last, nil
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// runPhase runs the workers for d and returns the phase's figures and how
// long it took until the last iteration ended. w, if set, gets a sample of
// the server every sampleEvery.
func runPhase(ctx context.Context, cfg *Config, d time.Duration, ids *idSet, w *watch) (Phase, time.Duration) {
	start := cfg.Now()
	deadline := start.Add(d)
	rec := newRecorder()
	var wg sync.WaitGroup
	for range cfg.Concurrency {
		wg.Go(func() {
			for ctx.Err() == nil && cfg.Now().Before(deadline) {
				iteration(ctx, cfg, rec, ids)
			}
		})
	}
	stop := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Go(func() { // owned: stopped and waited for below
		t := time.NewTicker(sampleEvery)
		defer t.Stop()
		lastProgress := start
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			if w != nil && cfg.Host != nil {
				if p, err := cfg.Host.Sample(); err == nil {
					w.observe(cfg.Now().Sub(start), p, false)
				}
			}
			if now := cfg.Now(); now.Sub(lastProgress) >= progressEvery {
				lastProgress = now
				it, fails := rec.counts()
				cfg.Progress(fmt.Sprintf("%s: %d iterations, %d failures", now.Sub(start).Round(time.Second), it, fails))
			}
		}
	})
	wg.Wait()
	close(stop)
	sampler.Wait()
	took := cfg.Now().Sub(start)
	return rec.phase(took), took
}

// iteration runs the five steps on a fresh sandbox; a failed step ends the
// iteration, but the sandbox is still destroyed.
func iteration(ctx context.Context, cfg *Config, rec *recorder, ids *idSet) {
	begin := cfg.Now()
	data := make([]byte, cfg.FileBytes)
	_, _ = rand.Read(data)
	step := func(name string, fn func(context.Context) error) bool {
		sctx, cancel := context.WithTimeout(ctx, cfg.StepTimeout)
		defer cancel()
		t0 := cfg.Now()
		err := fn(sctx)
		if err != nil {
			rec.fail(name, err)
			return false
		}
		rec.step(name, cfg.Now().Sub(t0))
		return true
	}
	var id string
	if !step(StepCreate, func(ctx context.Context) (err error) {
		id, err = cfg.Client.Create(ctx)
		if err == nil {
			ids.add(id)
		}
		return err
	}) {
		return
	}
	ok := step(StepWrite, func(ctx context.Context) error { return cfg.Client.Write(ctx, id, FilePath, data) }) &&
		step(StepExec, func(ctx context.Context) error {
			out, code, err := cfg.Client.Exec(ctx, id, []string{"cat", FilePath}, len(data)+1)
			switch {
			case err != nil:
				return err
			case code != 0:
				return fmt.Errorf("cat exited %d", code)
			case !bytes.Equal(out, data):
				return fmt.Errorf("cat printed %d bytes that differ from the %d written", len(out), len(data))
			}
			return nil
		}) &&
		step(StepRead, func(ctx context.Context) error {
			got, err := cfg.Client.Read(ctx, id, FilePath, len(data)+1)
			switch {
			case err != nil:
				return err
			case !bytes.Equal(got, data):
				return fmt.Errorf("read %d bytes that differ from the %d written", len(got), len(data))
			}
			return nil
		})
	if !ok {
		// Destroyed all the same, not counted as a step: the iteration
		// has failed already. A sandbox this leaves shows in Left.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.StepTimeout)
		defer cancel()
		_ = cfg.Client.Destroy(dctx, id)
		return
	}
	// Destroy is not cut short by the end of ctx either: an interrupted
	// run must not leave its sandboxes.
	if step(StepDestroy, func(sctx context.Context) error {
		return cfg.Client.Destroy(context.WithoutCancel(sctx), id)
	}) {
		rec.done(cfg.Now().Sub(begin))
	}
}

// idSet is every sandbox the run created.
type idSet struct {
	mu  sync.Mutex // guards ids
	ids []string
}

func (s *idSet) add(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ids = append(s.ids, id)
}

func (s *idSet) all() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.ids)
}

// TrendPoint is one sample of the server during the run.
type TrendPoint struct {
	Elapsed      time.Duration `json:"elapsedNs"`
	RSSBytes     int64         `json:"rssBytes"`
	RSSAnonBytes int64         `json:"rssAnonBytes"`
}

// watch keeps the peak RSS of the samples and a point of the trend every
// `every` of the run.
type watch struct {
	every time.Duration
	mu    sync.Mutex // guards the fields below
	peak  int64
	trend []TrendPoint
}

// observe takes a sample elapsed into the run; it joins the trend when
// `every` has passed since the last point, or when last (the sample after
// the run) is set.
func (w *watch) observe(elapsed time.Duration, p Process, last bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.peak = max(w.peak, p.RSSBytes)
	due := last || len(w.trend) == 0 || elapsed >= w.trend[len(w.trend)-1].Elapsed+w.every
	if due && len(w.trend) < maxTrend {
		w.trend = append(w.trend, TrendPoint{Elapsed: elapsed, RSSBytes: p.RSSBytes, RSSAnonBytes: p.RSSAnonBytes})
	}
}

func (w *watch) result() (int64, []TrendPoint) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.peak, slices.Clone(w.trend)
}

// recorder collects one phase's latencies and failures.
type recorder struct {
	mu       sync.Mutex // guards the fields below
	samples  map[string][]time.Duration
	iters    []time.Duration
	failures int
	reasons  map[string]int
}

func newRecorder() *recorder {
	return &recorder{samples: map[string][]time.Duration{}, reasons: map[string]int{}}
}

func (r *recorder) step(name string, d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.samples[name]) < maxSamples {
		r.samples[name] = append(r.samples[name], d)
	}
}

func (r *recorder) done(d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.iters) < maxSamples {
		r.iters = append(r.iters, d)
	}
}

// sandboxIDs are elided from reasons so that one cause counts once.
var sandboxIDs = regexp.MustCompile(`sb-[a-z2-7]{16}`)

func (r *recorder) fail(step string, err error) {
	msg := sandboxIDs.ReplaceAllString(err.Error(), "sb-…")
	if len(msg) > 200 {
		msg = msg[:200] + "…"
	}
	key := step + ": " + msg
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failures++
	if _, ok := r.reasons[key]; !ok && len(r.reasons) >= maxReasons {
		key = step + ": other"
	}
	r.reasons[key]++
}

func (r *recorder) counts() (iterations, failures int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.iters), r.failures
}

func (r *recorder) phase(took time.Duration) Phase {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := Phase{Iterations: len(r.iters), Failures: r.failures, Reasons: map[string]int{}}
	for k, v := range r.reasons {
		p.Reasons[k] = v
	}
	if took > 0 {
		p.PerSecond = float64(len(r.iters)) / took.Seconds()
	}
	for _, name := range Steps {
		p.Steps = append(p.Steps, stats(name, r.samples[name]))
	}
	p.Steps = append(p.Steps, stats("iteration", r.iters))
	return p
}

// stats computes nearest-rank percentiles.
func stats(name string, ds []time.Duration) StepStats {
	s := StepStats{Name: name, Count: len(ds)}
	if len(ds) == 0 {
		return s
	}
	ds = slices.Clone(ds)
	slices.Sort(ds)
	rank := func(p float64) time.Duration {
		i := int(p*float64(len(ds))+0.999999) - 1
		return ds[min(max(i, 0), len(ds)-1)]
	}
	s.P50, s.P99, s.Max = rank(0.50), rank(0.99), ds[len(ds)-1]
	return s
}
