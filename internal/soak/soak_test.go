package soak

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClient is a server in memory. exec fails every failExecEvery-th call
// (0: never); destroy of the failDestroy-th sandbox fails (0: never).
type fakeClient struct {
	mu            sync.Mutex
	n             int
	files         map[string][]byte // id -> the file
	execs         int
	failExecEvery int
	failDestroy   int
	idle          int
}

func newFakeClient() *fakeClient { return &fakeClient{files: map[string][]byte{}} }

// fakeID spells n as a sandbox id does (16 letters of base32).
func fakeID(n int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz234567"
	b := []byte("sb-aaaaaaaaaaaaaaaa")
	for i := len(b) - 1; n > 0; i-- {
		b[i] = alphabet[n%32]
		n /= 32
	}
	return string(b)
}

func (f *fakeClient) Create(ctx context.Context) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	id := fakeID(f.n)
	f.files[id] = nil
	return id, nil
}

func (f *fakeClient) Write(ctx context.Context, id, path string, data []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.files[id] = append([]byte(nil), data...)
	return nil
}

func (f *fakeClient) Exec(ctx context.Context, id string, argv []string, max int) ([]byte, int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.execs++
	if f.failExecEvery > 0 && f.execs%f.failExecEvery == 0 {
		return nil, 0, fmt.Errorf("agent of sandbox %s does not answer", id)
	}
	if len(argv) != 2 || argv[0] != "cat" || argv[1] != FilePath {
		return nil, 2, nil
	}
	return f.files[id], 0, nil
}

func (f *fakeClient) Read(ctx context.Context, id, path string, max int) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.files[id], nil
}

func (f *fakeClient) Destroy(ctx context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failDestroy > 0 && id == fakeID(f.failDestroy) {
		return errors.New("destroy failed")
	}
	delete(f.files, id)
	return nil
}

func (f *fakeClient) List(ctx context.Context) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ids := []string{"sb-someone-elses"}
	for id := range f.files {
		ids = append(ids, id)
	}
	return ids, nil
}

func (f *fakeClient) CloseIdle() {
	f.mu.Lock()
	f.idle++
	f.mu.Unlock()
}

// fakeHost is a server process whose RSS grows by grow bytes per sample.
type fakeHost struct {
	mu    sync.Mutex
	rss   int64
	grow  int64
	leaks []string
}

func (h *fakeHost) Sample() (Process, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.rss += h.grow
	return Process{RSSBytes: h.rss, FDs: 12, Threads: 9}, nil
}

func (h *fakeHost) Leaks(ids []string) []string { return h.leaks }

func TestRun(t *testing.T) {
	for _, tc := range []struct {
		name      string
		client    func() *fakeClient
		host      *fakeHost
		ok        bool
		reason    string // a failure reason the report must hold
		left      bool
		hostLeaks bool
	}{
		{name: "clean", client: newFakeClient, host: &fakeHost{rss: 100 << 20}, ok: true},
		{name: "without a host", client: newFakeClient, ok: true},
		{name: "exec fails", client: func() *fakeClient {
			f := newFakeClient()
			f.failExecEvery = 3
			return f
		}, host: &fakeHost{rss: 100 << 20}, reason: "exec: agent of sandbox sb-… does not answer"},
		{name: "a sandbox left", client: func() *fakeClient {
			f := newFakeClient()
			f.failDestroy = 2
			return f
		}, host: &fakeHost{rss: 100 << 20}, reason: "destroy: destroy failed", left: true},
		{name: "host leaks", client: newFakeClient, host: &fakeHost{rss: 100 << 20, leaks: []string{"link pd0001"}}, hostLeaks: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fc := tc.client()
			cfg := Config{Client: fc, Concurrency: 4, Duration: 150 * time.Millisecond, Warmup: 30 * time.Millisecond, FileBytes: 64}
			if tc.host != nil {
				cfg.Host = tc.host
			}
			r, err := Run(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			if r.OK() != tc.ok {
				t.Errorf("OK() = %v, want %v: %+v", r.OK(), tc.ok, r)
			}
			if r.Run.Iterations == 0 || r.Warmup.Iterations == 0 {
				t.Fatalf("no iterations: warm-up %d, run %d", r.Warmup.Iterations, r.Run.Iterations)
			}
			steps := map[string]StepStats{}
			for _, s := range r.Run.Steps {
				steps[s.Name] = s
			}
			if it := steps["iteration"]; it.Count != r.Run.Iterations || it.P50 <= 0 || it.P99 < it.P50 || it.Max < it.P99 {
				t.Errorf("iteration stats %+v for %d iterations", it, r.Run.Iterations)
			}
			if c := steps[StepDestroy].Count; c < r.Run.Iterations {
				t.Errorf("%d destroys for %d iterations", c, r.Run.Iterations)
			}
			if tc.reason != "" {
				if r.Run.Reasons[tc.reason]+r.Warmup.Reasons[tc.reason] == 0 {
					t.Errorf("reasons %v %v lack %q", r.Warmup.Reasons, r.Run.Reasons, tc.reason)
				}
			} else if r.Run.Failures+r.Warmup.Failures != 0 {
				t.Errorf("failures: %v %v", r.Warmup.Reasons, r.Run.Reasons)
			}
			if (len(r.Left) > 0) != tc.left || (len(r.HostLeaks) > 0) != tc.hostLeaks {
				t.Errorf("left %v, host leaks %v", r.Left, r.HostLeaks)
			}
			if tc.left && (len(r.Left) != 1 || r.Left[0] != fakeID(2)) {
				t.Errorf("left %v, want the one sandbox destroy failed for (never another's)", r.Left)
			}
			if tc.host == nil {
				if r.Sampled || r.Before.RSSBytes != 0 || r.Before.FDs != 0 {
					t.Errorf("figures without a host: %+v", r)
				}
				return
			}
			if !r.Sampled || r.Before.RSSBytes == 0 || r.After.RSSBytes < r.Before.RSSBytes || r.PeakRSSBytes < r.After.RSSBytes {
				t.Errorf("server figures: start %+v before %+v after %+v peak %d", r.Start, r.Before, r.After, r.PeakRSSBytes)
			}
			if len(r.Trend) < 2 || r.Trend[0].RSSBytes != r.Before.RSSBytes || r.Trend[len(r.Trend)-1].RSSBytes != r.After.RSSBytes {
				t.Errorf("trend %+v from %+v to %+v", r.Trend, r.Before, r.After)
			}
			if want := float64(r.After.RSSBytes)/float64(r.Before.RSSBytes) - 1; r.RSSGrowth != want {
				t.Errorf("RSS growth %v, want %v", r.RSSGrowth, want)
			}
			if fc.idle < 2 {
				t.Errorf("idle connections closed %d times, want before each measurement", fc.idle)
			}
		})
	}
}

// TestRunStopsWithContext: a cancelled run returns its figures so far and
// the context's error, and destroys what it made.
func TestRunStopsWithContext(t *testing.T) {
	fc := newFakeClient()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	r, err := Run(ctx, Config{Client: fc, Concurrency: 2, Duration: time.Hour, Warmup: -1})
	if !errors.Is(err, context.DeadlineExceeded) || r == nil {
		t.Fatalf("Run = %v, %v", r, err)
	}
	if len(r.Left) != 0 {
		t.Errorf("left %v", r.Left)
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"defaults", Config{}, true},
		{"too many workers", Config{Concurrency: MaxConcurrency + 1}, false},
		{"negative workers", Config{Concurrency: -1}, false},
		{"a day and more", Config{Duration: MaxDuration + time.Second}, false},
		{"negative duration", Config{Duration: -time.Second}, false},
		{"no warm-up", Config{Warmup: -1}, true},
		{"huge file", Config{FileBytes: MaxFileBytes + 1}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.SetDefaults()
			if err := tc.cfg.Validate(); (err == nil) != tc.ok {
				t.Errorf("Validate = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestStats(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	s := stats("x", ds)
	if s.Count != 100 || s.P50 != 50*time.Millisecond || s.P99 != 99*time.Millisecond || s.Max != 100*time.Millisecond {
		t.Errorf("stats = %+v", s)
	}
	if s := stats("one", []time.Duration{time.Second}); s.P50 != time.Second || s.P99 != time.Second {
		t.Errorf("one sample: %+v", s)
	}
	if s := stats("none", nil); s.Count != 0 || s.P99 != 0 {
		t.Errorf("no sample: %+v", s)
	}
}

// TestReasonsBounded: distinct failure reasons past maxReasons count as
// "other", so a run failing in endless ways stays small.
func TestReasonsBounded(t *testing.T) {
	r := newRecorder()
	for i := range maxReasons + 10 {
		r.fail(StepExec, fmt.Errorf("failure %d", i))
	}
	p := r.phase(time.Second)
	if len(p.Reasons) != maxReasons+1 || p.Reasons[StepExec+": other"] != 10 || p.Failures != maxReasons+10 {
		t.Errorf("%d reasons, other %d, failures %d", len(p.Reasons), p.Reasons[StepExec+": other"], p.Failures)
	}
	r.fail(StepCreate, errors.New(strings.Repeat("x", 500)))
	for k := range r.phase(time.Second).Reasons {
		if len(k) > 250 {
			t.Errorf("reason of %d bytes kept", len(k))
		}
	}
}
