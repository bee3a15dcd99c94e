package fake_test

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/fake"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

var _ runtime.Driver = (*fake.Driver)(nil)

func TestClock(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	c := fake.NewClock(t0)
	c.Advance(time.Minute)
	if got := c.Now(); !got.Equal(t0.Add(time.Minute)) {
		t.Errorf("after Advance: %s", got)
	}
	c.Set(t0)
	if got := c.Now(); !got.Equal(t0) {
		t.Errorf("after Set: %s", got)
	}
}

// output reads a command's whole output through the real client.
func output(t *testing.T, ac *agent.Client, id string) string {
	t.Helper()
	r, err := ac.Output(t.Context(), id, 0, true)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var out []byte
	for {
		f, err := r.Next()
		if errors.Is(err, io.EOF) {
			return string(out)
		}
		if err != nil {
			t.Fatal(err)
		}
		if f.Kind == agent.FrameStdout || f.Kind == agent.FrameStderr {
			out = append(out, f.Data...)
		}
	}
}

// TestAgentCommands drives the Agent through agent.Client, as the host
// side does.
func TestAgentCommands(t *testing.T) {
	a := fake.StartAgent(t, fake.AgentConfig{Script: func(c *fake.Cmd) {
		if c.Req.Cmd == "stubborn" {
			c.OnSignal(func(sig int) bool { return sig != 15 })
			return
		}
		fake.Echo(c)
	}})
	ac := a.Client()
	ctx := t.Context()
	tests := []struct {
		name       string
		req        agent.CommandRequest
		signals    []int
		wantStatus string
		wantCode   int
		wantOut    string
	}{
		{"echo", agent.CommandRequest{Cmd: "echo", Args: []string{"hi", "there"}}, nil, agent.StatusExited, 0, "hi there\n"},
		{"fail", agent.CommandRequest{Cmd: "fail"}, nil, agent.StatusExited, 3, "boom\n"},
		{"runs until signalled", agent.CommandRequest{Cmd: "sleep"}, []int{15}, agent.StatusKilled, 143, ""},
		{"ignores SIGTERM", agent.CommandRequest{Cmd: "stubborn"}, []int{15, 9}, agent.StatusKilled, 137, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd, err := ac.Start(ctx, tt.req)
			if err != nil {
				t.Fatal(err)
			}
			if cmd.Status != agent.StatusRunning {
				t.Errorf("start answered %s, want the command as it started", cmd.Status)
			}
			for _, sig := range tt.signals {
				if got, _ := ac.Get(ctx, cmd.ID); got.Done() {
					t.Fatalf("ended before signal %d: %+v", sig, got)
				}
				if err := ac.Signal(ctx, cmd.ID, sig); err != nil {
					t.Fatal(err)
				}
			}
			done, err := ac.Wait(ctx, cmd.ID)
			if err != nil || done.Status != tt.wantStatus || done.ExitCode == nil || *done.ExitCode != tt.wantCode {
				t.Fatalf("Wait = %+v, %v; want %s %d", done, err, tt.wantStatus, tt.wantCode)
			}
			if got := output(t, ac, cmd.ID); got != tt.wantOut || a.Output(cmd.ID) != tt.wantOut {
				t.Errorf("output %q (agent says %q), want %q", got, a.Output(cmd.ID), tt.wantOut)
			}
		})
	}
	if got := len(a.Started()); got != len(tests) {
		t.Errorf("started %d, want %d", got, len(tests))
	}
	if got := a.Signals(); !slices.Equal(got, []int{15, 15, 9}) {
		t.Errorf("signals %v", got)
	}
	a.Refuse("GET /v1/commands")
	if _, err := ac.List(ctx); err == nil {
		t.Error("a refused route answered")
	}
}

func TestAgentFiles(t *testing.T) {
	a := fake.StartAgent(t, fake.AgentConfig{ArchiveTail: []tar.Header{{Typeflag: tar.TypeSymlink, Name: "evil", Linkname: "/etc"}}})
	ac := a.Client()
	ctx := t.Context()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "a.txt", Mode: 0o640, Size: 5})
	tw.Write([]byte("alpha"))
	tw.Close()
	if res, err := ac.WriteTar(ctx, "/work", false, &buf); err != nil || res.Files != 1 || res.Bytes != 5 {
		t.Fatalf("WriteTar = %+v, %v", res, err)
	}
	rc, info, err := ac.ReadFile(ctx, "/work/a.txt", false)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(rc)
	rc.Close()
	if string(data) != "alpha" || info.Mode != 0o640 {
		t.Errorf("read %q mode %o", data, info.Mode)
	}
	if err := ac.Mkdir(ctx, agent.MkdirRequest{Path: "/empty"}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		path string
		want []string
	}{
		{"/work", []string{"a.txt", "evil"}},
		{"/empty", []string{"evil"}},
	} {
		rc, err := ac.ReadArchive(ctx, tt.path, false)
		if err != nil {
			t.Fatalf("archive of %s: %v", tt.path, err)
		}
		var names []string
		tr := tar.NewReader(rc)
		for h, err := tr.Next(); err == nil; h, err = tr.Next() {
			names = append(names, h.Name)
		}
		rc.Close()
		if !slices.Equal(names, tt.want) {
			t.Errorf("archive of %s: %v, want %v", tt.path, names, tt.want)
		}
	}
	if _, err := ac.ReadArchive(ctx, "/missing", false); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("archive of a missing path: %v", err)
	}
}

func TestDriver(t *testing.T) {
	d := fake.NewDriver(t, fake.DriverConfig{})
	ctx := t.Context()
	if _, err := d.Create(ctx, runtime.Spec{ID: "sb-a", User: "app"}); err != nil {
		t.Fatal(err)
	}
	ac, err := d.Agent(ctx, "sb-a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ac.Ping(ctx); err != nil {
		t.Errorf("agent does not answer: %v", err)
	}
	if d.Spec("sb-a").User != "app" {
		t.Errorf("spec not recorded: %+v", d.Spec("sb-a"))
	}
	d.SetCreateErr(errors.New("no rootfs"))
	if _, err := d.Create(ctx, runtime.Spec{ID: "sb-b"}); err == nil {
		t.Error("Create succeeded though told to fail")
	}
	if err := d.Stop(ctx, "sb-a"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Agent(ctx, "sb-a"); !errors.Is(err, sandbox.ErrNotRunning) {
		t.Errorf("agent of a stopped sandbox: %v", err)
	}
	if err := d.Destroy(ctx, "sb-a"); err != nil {
		t.Fatal(err)
	}
	if _, known := d.Running("sb-a"); known || d.Count("create") != 2 || !d.Called("destroy", "sb-a") {
		t.Errorf("after destroy: known %v, %d creates", known, d.Count("create"))
	}
}

func TestSandboxes(t *testing.T) {
	a := fake.StartAgent(t, fake.AgentConfig{})
	f := fake.NewSandboxes(fake.SandboxesConfig{Agent: a.Client(), Resources: sandbox.Resources{VCPUs: 1, MemoryMB: 512, PIDs: 256},
		MaxResources: sandbox.Resources{VCPUs: 2, MemoryMB: 1024, PIDs: 512}, MaxTimeout: time.Hour, Images: []string{"host"}})
	ctx := t.Context()
	for _, tt := range []struct {
		name string
		req  sandbox.CreateRequest
		kind error
	}{
		{"too many vcpus", sandbox.CreateRequest{Resources: sandbox.Resources{VCPUs: 3}}, sandbox.ErrInvalid},
		{"timeout past the maximum", sandbox.CreateRequest{Timeout: 2 * time.Hour}, sandbox.ErrInvalid},
		{"unknown image", sandbox.CreateRequest{Image: "nope"}, sandbox.ErrNotFound},
	} {
		if _, err := f.Create(ctx, tt.req); !errors.Is(err, tt.kind) {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.kind)
		}
	}
	sb, err := f.Create(ctx, sandbox.CreateRequest{Env: map[string]string{"A": "sandbox", "B": "sandbox"}})
	if err != nil || sb.ID != "sb-001" || sb.Resources.MemoryMB != 512 || sb.Image != "host" {
		t.Fatalf("Create = %+v, %v", sb, err)
	}
	if _, err := f.Exec(ctx, sb.ID, sandbox.ExecRequest{Cmd: "echo", Env: map[string]string{"B": "req"},
		SecretEnv: map[string]string{"S": "secret"}, Wait: true}); err != nil {
		t.Fatal(err)
	}
	if env := a.Started()[0].Env; env["A"] != "sandbox" || env["B"] != "req" || env["S"] != "secret" {
		t.Errorf("agent got env %v", env)
	}
	if _, err := f.Stop(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Exec(ctx, sb.ID, sandbox.ExecRequest{Cmd: "echo"}); !errors.Is(err, sandbox.ErrNotRunning) {
		t.Errorf("exec in a stopped sandbox: %v", err)
	}
	if err := f.Delete(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(f.Mutations(), ", "); got != "create sb-001, stop sb-001, delete sb-001" {
		t.Errorf("mutations: %s", got)
	}
}
