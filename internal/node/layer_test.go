package node

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/fake"
	"github.com/paddock-dev/paddock/internal/image"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

func TestDiskCap(t *testing.T) {
	capped := func(def, max int64) func(*Config) {
		return func(c *Config) {
			c.DefaultResources.DiskMB, c.MaxResources.DiskMB = def, max
		}
	}
	tests := []struct {
		name    string
		mod     func(*Config)
		diskCap bool // the driver's
		req     int64
		want    int64
		code    string
	}{
		{"server default", capped(1024, 4096), true, 0, 1024, ""},
		{"own cap", capped(1024, 4096), true, 4096, 4096, ""},
		{"over the maximum", capped(1024, 4096), true, 4097, 0, "invalid_resources"},
		{"under the minimum", capped(1024, 4096), true, sandbox.MinDiskMB - 1, 0, "invalid_resources"},
		{"negative", capped(1024, 4096), true, -1, 0, "invalid_resources"},
		{"uncapped by default", capped(0, 4096), true, 0, 0, ""},
		{"a cap on an uncapped host", capped(0, 4096), true, 128, 128, ""},
		{"default maximum", nil, true, 100 << 10, 100 << 10, ""},
		// A host that cannot make disks refuses capped sandboxes rather
		// than run them uncapped, unless its default is uncapped.
		{"driver without disks", capped(1024, 4096), false, 0, 0, "sandbox_disk_unsupported"},
		{"driver without disks, uncapped", capped(0, 4096), false, 0, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := fake.NewDriver(t, fake.DriverConfig{DiskCap: tt.diskCap})
			e := &env{d: d, clock: fake.NewClock(epoch), dir: t.TempDir()}
			e.m = e.manager(t, tt.mod)
			sb, err := e.m.Create(t.Context(), sandbox.CreateRequest{Resources: sandbox.Resources{DiskMB: tt.req}})
			if tt.code != "" {
				if err == nil {
					t.Fatalf("created with disk %d MiB, want %s", sb.Resources.DiskMB, tt.code)
				}
				if sandbox.CodeOf(err) != tt.code {
					t.Fatalf("error %v, want %s", err, tt.code)
				}
				if n := e.d.Count("create"); n != 0 {
					t.Errorf("driver saw %d creates", n)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if sb.Resources.DiskMB != tt.want {
				t.Errorf("disk %d MiB, want %d", sb.Resources.DiskMB, tt.want)
			}
		})
	}
}

// TestStoppedRetention: a stopped sandbox's layer goes once the retention
// has passed since it stopped; the record stays, marked, and a snapshot of
// it says why there is nothing to copy. A restart collects what fell due
// while paddock was down.
func TestStoppedRetention(t *testing.T) {
	store, err := image.OpenStore(filepath.Join(t.TempDir(), "images"), image.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	mod := func(c *Config) {
		c.Images = store
		c.Driver = snapDriver{c.Driver.(*fake.Driver)}
		c.StoppedRetention = time.Hour
	}
	e := newEnv(t, mod)
	ctx := t.Context()
	a, b := e.create(t), e.create(t)
	if _, err := e.m.Stop(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(30 * time.Minute)
	if _, err := e.m.Stop(ctx, b.ID); err != nil {
		t.Fatal(err)
	}
	// Within the retention: the layer stays and can be snapshotted.
	e.m.checkTimeouts(ctx)
	if n := e.d.Count("destroy"); n != 0 {
		t.Fatalf("driver saw %d destroys within the retention", n)
	}
	if _, err := e.m.Snapshot(ctx, a.ID); err != nil {
		t.Fatal(err)
	}

	e.clock.Advance(31 * time.Minute)
	e.m.checkTimeouts(ctx)
	if !e.d.Called("destroy", a.ID) {
		t.Fatal("the layer past its retention stays")
	}
	got := e.get(t, a.ID)
	if got.State != sandbox.Stopped || !got.LayerRemovedAt.Equal(e.clock.Now()) {
		t.Fatalf("record after its layer went: %+v", got)
	}
	_, err = e.m.Snapshot(ctx, a.ID)
	wantErr(t, err, sandbox.ErrConflict, "sandbox_layer_removed")
	_, err = e.m.Fork(ctx, a.ID, sandbox.CreateRequest{})
	wantErr(t, err, sandbox.ErrConflict, "sandbox_layer_removed")
	if e.d.Called("destroy", b.ID) || !e.get(t, b.ID).LayerRemovedAt.IsZero() {
		t.Fatal("the younger sandbox's layer went too")
	}

	// b falls due while no manager runs; the next one collects it at start.
	e.m.Close()
	e.clock.Advance(time.Hour)
	m2 := e.manager(t, mod)
	if !e.d.Called("destroy", b.ID) {
		t.Fatal("a layer due during the downtime was not collected at start")
	}
	if sb, err := m2.Get(ctx, b.ID); err != nil || sb.LayerRemovedAt.IsZero() {
		t.Fatalf("record after restart: %+v %v", sb, err)
	}
	// Collected once: a marked record is never due again.
	m2.checkTimeouts(ctx)
	if n := e.d.Count("destroy"); n != 2 {
		t.Fatalf("driver saw %d destroys, want 2", n)
	}
	// Deleting a collected sandbox still works.
	if err := m2.Delete(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
}

func TestStoppedRetentionOff(t *testing.T) {
	e := newEnv(t, nil)
	sb := e.create(t)
	if _, err := e.m.Stop(t.Context(), sb.ID); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(365 * 24 * time.Hour)
	e.m.checkTimeouts(t.Context())
	if n := e.d.Count("destroy"); n != 0 {
		t.Fatalf("driver saw %d destroys without a retention", n)
	}
}
