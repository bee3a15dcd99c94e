package claim_test

import (
	"context"
	"errors"
	"io"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/k8stest"
	"github.com/paddock-dev/paddock/internal/runtime"
	k8sdriver "github.com/paddock-dev/paddock/internal/runtime/kubernetes"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/volume/claim"
)

func TestMain(m *testing.M) { os.Exit(k8stest.Main(m)) }

func wantCode(t *testing.T, err error, kind error, code string) {
	t.Helper()
	var se *sandbox.Error
	if !errors.Is(err, kind) || !errors.As(err, &se) || se.Code != code {
		t.Fatalf("got %v, want %v %q", err, kind, code)
	}
}

// TestClaims runs the volumes of a namespace on the test cluster: a
// sandbox Pod writes a new volume as the default user, a second Pod reads
// it after the first is gone and cannot write through a read-only mount,
// and the API's rules hold as on the host (per-team names, sizes, quotas,
// in use while mounted, a read-write user alone, no copy-on-write).
func TestClaims(t *testing.T) {
	c := k8stest.Require(t)
	class := c.StorageClass(t, 2, "1Gi")
	im := c.PushSandboxImages(t)
	ns := c.Namespace(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	m, err := claim.New(claim.Config{Client: c.Client, Namespace: ns, StorageClass: class, Owner: "replica-1",
		DefaultSize: 32 << 20, MaxSize: 1 << 30, TeamMaxVolumes: 2, TeamMaxBytes: 96 << 20})
	if err != nil {
		t.Fatal(err)
	}
	// A second replica's view of the same namespace.
	m2, err := claim.New(claim.Config{Client: c.Client, Namespace: ns, StorageClass: class, Owner: "replica-2"})
	if err != nil {
		t.Fatal(err)
	}
	drv, err := k8sdriver.New(k8sdriver.Config{Client: c.Client, Namespace: ns, AgentImage: im.Agent,
		HostImage: k8sdriver.HostImage{Ref: im.Host, ReadOnlyBinds: im.HostBinds}, RequestFraction: 0.02, CgroupVersion: 1})
	if err != nil {
		t.Fatal(err)
	}

	// Validation and quotas.
	_, err = m.Create(ctx, "team-a", "Bad!", 0)
	wantCode(t, err, sandbox.ErrInvalid, "invalid_volume_name")
	_, err = m.Create(ctx, "team-a", "cache", 1<<10)
	wantCode(t, err, sandbox.ErrInvalid, "invalid_volume_size")
	v, err := m.Create(ctx, "team-a", "cache", 0)
	if err != nil || v.SizeBytes != 32<<20 || v.TeamID != "team-a" || v.CreatedAt.IsZero() {
		t.Fatalf("create: %+v, %v", v, err)
	}
	_, err = m2.Create(ctx, "team-a", "cache", 0)
	wantCode(t, err, sandbox.ErrConflict, "volume_exists")
	_, err = m.Create(ctx, "team-a", "big", 80<<20)
	wantCode(t, err, sandbox.ErrForbidden, "volume_quota_exceeded")
	if _, err = m.Create(ctx, "team-a", "second", 17<<20+1); err != nil {
		t.Fatal(err)
	}
	_, err = m.Create(ctx, "team-a", "third", 0)
	wantCode(t, err, sandbox.ErrForbidden, "volume_quota_exceeded")
	if vs, err := m2.List(ctx, "team-a"); err != nil || len(vs) != 2 || vs[0].Name != "cache" || vs[1].Name != "second" || vs[1].SizeBytes != 18<<20 {
		t.Fatalf("list: %+v, %v", vs, err)
	}

	// Another team's volume is not found, and its name is free.
	_, err = m.Get(ctx, "team-b", "cache")
	wantCode(t, err, sandbox.ErrNotFound, "volume_not_found")
	_, err = m.Acquire(ctx, "sb-b", "team-b", sandbox.VolumeMount{Volume: "cache", Path: "/data"})
	wantCode(t, err, sandbox.ErrNotFound, "volume_not_found")
	wantCode(t, m.Delete(ctx, "team-b", "cache"), sandbox.ErrNotFound, "volume_not_found")
	if vs, err := m.List(ctx, "team-b"); err != nil || len(vs) != 0 {
		t.Fatalf("list of team-b: %+v, %v", vs, err)
	}
	if _, err := m.Create(ctx, "team-b", "cache", 0); err != nil {
		t.Fatal(err)
	}
	all, err := m.ListAll(ctx)
	if err != nil || len(all) != 3 || all[2].TeamID != "team-b" {
		t.Fatalf("list all: %+v, %v", all, err)
	}

	_, err = m.Acquire(ctx, "sb-1", "team-a", sandbox.VolumeMount{Volume: "cache", Path: "/data", Mode: sandbox.VolumeCopyOnWrite})
	wantCode(t, err, sandbox.ErrUnsupported, "volume_mode_unsupported")

	// A first sandbox writes the new volume as the default user.
	d, err := m.Acquire(ctx, "sb-1", "team-a", sandbox.VolumeMount{Volume: "cache", Path: "/data"})
	if err != nil || d.Claim == "" {
		t.Fatalf("acquire: %+v, %v", d, err)
	}
	sb1 := start(ctx, t, drv, "sb-1", runtime.Mount{Claim: d.Claim, Dest: "/data"})
	if r := run(ctx, t, sb1, "echo kept > /data/f && test \"$(stat -c %u /data)\" = 1000"); r != 0 {
		t.Fatalf("the default user's write into a new volume: exit %d", r)
	}
	if v, err := m2.Get(ctx, "team-a", "cache"); err != nil || !slices.Equal(v.InUseBy(), []string{"sb-1"}) {
		t.Fatalf("in use: %+v, %v", v, err)
	}
	wantCode(t, m2.Delete(ctx, "team-a", "cache"), sandbox.ErrConflict, "volume_in_use")
	_, err = m2.Acquire(ctx, "sb-2", "team-a", sandbox.VolumeMount{Volume: "cache", Path: "/data"})
	wantCode(t, err, sandbox.ErrConflict, "volume_busy")
	sb1.Close()
	if err := drv.Destroy(ctx, "sb-1"); err != nil {
		t.Fatal(err)
	}

	// A second sandbox reads it, and cannot write through a read-only mount.
	if d, err = m2.Acquire(ctx, "sb-2", "team-a", sandbox.VolumeMount{Volume: "cache", Path: "/data"}); err != nil {
		t.Fatal(err)
	}
	sb2 := start(ctx, t, drv, "sb-2", runtime.Mount{Claim: d.Claim, Dest: "/data", ReadOnly: true})
	rc, _, err := sb2.ReadFile(ctx, "/data/f", false)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || string(got) != "kept\n" {
		t.Fatalf("read in the second sandbox: %q, %v", got, err)
	}
	// The file keeps its owner in a Pod of another id range: the claim is
	// an idmapped mount, whose ids on disk are those the Pods see.
	if r := run(ctx, t, sb2, "test \"$(stat -c %u:%g /data/f)\" = 1000:1000"); r != 0 {
		t.Fatal("the file is not the default user's in the second sandbox")
	}
	if r := run(ctx, t, sb2, "echo no > /data/g"); r == 0 {
		t.Fatal("a write through a read-only mount succeeded")
	}
	sb2.Close()
	if err := drv.Destroy(ctx, "sb-2"); err != nil {
		t.Fatal(err)
	}

	if err := m.Delete(ctx, "team-a", "cache"); err != nil {
		t.Fatal(err)
	}
	_, err = m.Get(ctx, "team-a", "cache")
	wantCode(t, err, sandbox.ErrNotFound, "volume_not_found")
	if _, err := m.Create(ctx, "team-a", "third", 0); err != nil {
		t.Fatalf("create after a delete freed the quota: %v", err)
	}
}

// start runs sandbox id with mounts and returns its agent.
func start(ctx context.Context, t *testing.T, drv *k8sdriver.Driver, id string, mounts ...runtime.Mount) *agent.Client {
	t.Helper()
	c, err := drv.Create(ctx, runtime.Spec{ID: id, Mounts: mounts})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// run runs a shell snippet as the sandbox user and returns its exit code.
func run(ctx context.Context, t *testing.T, c *agent.Client, script string) int {
	t.Helper()
	cmd, err := c.Run(ctx, agent.CommandRequest{Cmd: "sh", Args: []string{"-c", script}})
	if err != nil || cmd.ExitCode == nil {
		t.Fatalf("run %q: %+v, %v", script, cmd, err)
	}
	return *cmd.ExitCode
}
