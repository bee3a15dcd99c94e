package node

import (
	"testing"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/fake"
	"github.com/paddock-dev/paddock/internal/image"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// TestCreateResolvedUser: the image's User goes to the driver as it is, the
// user the agent resolved is recorded (and survives a restart), and the
// sandbox's volumes are given to it.
func TestCreateResolvedUser(t *testing.T) {
	imgs := &fakeImages{img: &image.Image{
		Ref: "127.0.0.1:5000/app:1", Digest: "sha256:abc", Layers: []string{"/l/base", "/l/top"},
		Config: image.ImageConfig{User: "app"},
	}}
	vols := newFakeVolumes()
	d := fake.NewDriver(t, fake.DriverConfig{})
	d.FakeAgent().SetPing(`{"version":"fake","pid":1,"user":{"uid":1234,"gid":2345,"home":"/home/app","name":"app"}}`)
	e := &env{d: d, clock: fake.NewClock(epoch), dir: t.TempDir()}
	e.m = e.manager(t, func(c *Config) { c.Images = imgs; c.Volumes = vols })

	sb, err := e.m.Create(t.Context(), sandbox.CreateRequest{Image: imgs.img.Ref,
		Volumes: []sandbox.VolumeMount{{Volume: "cache", Path: "/cache"}}})
	if err != nil {
		t.Fatal(err)
	}
	if got := d.Spec(sb.ID).User; got != "app" {
		t.Errorf("driver got user %q, want the image's %q", got, "app")
	}
	want := sandbox.User{UID: 1234, GID: 2345, Home: "/home/app"}
	if sb.User != want || e.get(t, sb.ID).User != want || sb.RunAs() != want {
		t.Errorf("recorded user %+v, want %+v", sb.User, want)
	}
	if got := vols.users[sb.ID]; got != "1234:2345" {
		t.Errorf("volumes given to %q, want 1234:2345", got)
	}

	if err := e.m.Close(); err != nil {
		t.Fatal(err)
	}
	e.m = e.manager(t, func(c *Config) { c.Images = imgs; c.Volumes = vols })
	if got := e.get(t, sb.ID); got.State != sandbox.Running || got.User != want {
		t.Errorf("after a restart: state %s user %+v, want running %+v", got.State, got.User, want)
	}
}

// TestCreateDefaultUser: an agent that reports no user (an older one) means
// the default user.
func TestCreateDefaultUser(t *testing.T) {
	e := newEnv(t, nil)
	sb := e.create(t)
	if sb.User != sandbox.DefaultUser {
		t.Errorf("user %+v, want %+v", sb.User, sandbox.DefaultUser)
	}
}

// TestCreateUnknownUser: an image whose User the agent cannot resolve fails
// the create as the request's fault, and nothing of the sandbox is kept.
func TestCreateUnknownUser(t *testing.T) {
	vols := newFakeVolumes()
	e := newEnv(t, func(c *Config) { c.Volumes = vols })
	e.d.FakeAgent().SetPing(`{"version":"fake","pid":1,"userError":{"code":"` + agent.CodeUserUnknown + `","message":"no user \"nosuch\""}}`)
	sb, err := e.m.Create(t.Context(), sandbox.CreateRequest{Volumes: []sandbox.VolumeMount{{Volume: "cache", Path: "/cache"}}})
	wantErr(t, err, sandbox.ErrInvalid, agent.CodeUserUnknown)
	if sb.State != sandbox.Failed {
		t.Errorf("state %s, want failed", sb.State)
	}
	if !e.d.Called("destroy", sb.ID) {
		t.Error("driver.Destroy not called")
	}
	if vols.holds(sb.ID) {
		t.Error("volumes still held")
	}
}
