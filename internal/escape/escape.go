package escape

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/escape/wire"
)

// Who runs the probe inside the sandbox.
type Who string

const (
	User Who = "user" // the sandbox user, as commands run by default
	Sudo Who = "sudo" // root inside the sandbox, as `sudo: true` commands run
)

// Dir is where the probe goes inside a sandbox: on the sandbox's own root
// filesystem (not /tmp, a nosuid mount), so that its setuid-root copy tests
// no_new_privs rather than the mount flag.
const Dir = "/var/tmp/paddock-escape"

// peerHeld is how many inotify instances the peer sandbox's user holds
// while the battery runs (max_user_instances is 128 by default).
const peerHeld = 32

// Target is the sandbox under attack and what the host knows around it.
type Target struct {
	// Driver names the runtime driver (runtime.Capabilities.Name): the key
	// of knownOpen.
	Driver string
	Agent  *agent.Client
	// Peer, when set, is another sandbox on the same host (another
	// tenant's): its user holds per-uid kernel objects while the battery
	// runs.
	Peer *agent.Client
	// HostFiles are host paths the sandbox must not read, besides the
	// canary file Run makes itself.
	HostFiles []string
	// Connect lists TCP endpoints the sandbox must not reach (other
	// sandboxes' servers, host listeners); the caller checks from the host
	// that each one listens.
	Connect []netip.AddrPort
	// DNS lists resolvers that must not answer the sandbox (other
	// sandboxes').
	DNS []netip.AddrPort
	// Sockets are host unix socket paths the sandbox must not reach (the
	// agents').
	Sockets []string
}

// Finding is one check's result for one identity.
type Finding struct {
	Who Who
	wire.Result
}

func tag(who Who, rs []wire.Result) []Finding {
	out := make([]Finding, len(rs))
	for i, r := range rs {
		out[i] = Finding{Who: who, Result: r}
	}
	return out
}

// verdict is what the test does with one finding.
type verdict struct {
	name string // "<who>/<check>", the subtest
	fail bool
	skip bool
	msg  string
}

// verdicts weighs the findings against a knownOpen list: an escape fails
// (saying so when it is listed), a listed check that did not escape fails
// (the list must shrink with the fix), an inconclusive check fails, and a
// listed check the battery never ran fails (the list must not name what
// does not exist).
func verdicts(driver string, findings []Finding, open []known) []verdict {
	var out []verdict
	seen := map[string]bool{}
	for _, f := range findings {
		name := string(f.Who) + "/" + f.Check
		seen[name] = true
		var k *known
		for i := range open {
			if open[i].driver == driver && open[i].check == f.Check && open[i].who == f.Who {
				k = &open[i]
			}
		}
		v := verdict{name: name}
		switch {
		case f.Status == wire.Escaped && k != nil:
			v.fail, v.msg = true, fmt.Sprintf("escaped, known open until %s: %s", k.fixedBy, f.Detail)
		case f.Status == wire.Escaped:
			v.fail, v.msg = true, "ESCAPED: "+f.Detail
		case k != nil:
			v.fail, v.msg = true, fmt.Sprintf("in knownOpen (until %s) but %s: take it off knownOpen (%s)", k.fixedBy, f.Status, f.Detail)
		case f.Status == wire.Error:
			v.fail, v.msg = true, "inconclusive: "+f.Detail
		case f.Status == wire.Skipped:
			v.skip, v.msg = true, f.Detail
		case f.Status == wire.Blocked:
			v.msg = f.Detail
		default:
			v.fail, v.msg = true, fmt.Sprintf("unknown status %q: %s", f.Status, f.Detail)
		}
		out = append(out, v)
	}
	for _, k := range open {
		if name := string(k.who) + "/" + k.check; k.driver == driver && !seen[name] {
			out = append(out, verdict{name: name, fail: true, msg: "knownOpen lists it, but the battery does not run it"})
		}
	}
	return out
}

// judge applies the verdicts to t, one subtest per identity and check, and
// logs a summary.
func judge(t *testing.T, driver string, findings []Finding) {
	t.Helper()
	for _, v := range verdicts(driver, findings, knownOpen) {
		t.Run(v.name, func(t *testing.T) {
			switch {
			case v.fail:
				t.Error(v.msg)
			case v.skip:
				t.Skip(v.msg)
			default:
				t.Log(v.msg)
			}
		})
	}
	counts := map[wire.Status]int{}
	for _, f := range findings {
		counts[f.Status]++
	}
	t.Logf("escape battery on %s: %d checks: %d blocked, %d escaped, %d skipped, %d inconclusive", driver,
		len(findings), counts[wire.Blocked], counts[wire.Escaped], counts[wire.Skipped], counts[wire.Error])
}

// Install copies the probe into the sandbox at Dir, with a setuid-root,
// setgid-root copy beside it (written with sudo, which keeps those bits).
// Installing again replaces both.
func Install(ctx context.Context, c *agent.Client) error {
	probe, err := probeOnce()
	if err != nil {
		return err
	}
	data, err := os.ReadFile(probe)
	if err != nil {
		return fmt.Errorf("escape: %w", err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range []struct {
		name string
		mode int64
	}{{"probe", 0o755}, {"probe-suid", 0o6755}} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: f.mode, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		if _, err := tw.Write(data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if _, err := c.WriteTar(ctx, Dir, true, &buf); err != nil {
		return fmt.Errorf("escape: copy the probe into the sandbox: %w", err)
	}
	return nil
}

// RunProbe runs the installed probe once with args and returns its results;
// it fails unless the probe printed every result and its Done line.
func RunProbe(ctx context.Context, c *agent.Client, sudo bool, args ...string) ([]wire.Result, error) {
	cmd, err := c.Run(ctx, agent.CommandRequest{Cmd: Dir + "/probe", Args: args, Sudo: sudo, TimeoutMs: 4 * 60 * 1000})
	if err != nil {
		return nil, fmt.Errorf("run the probe: %w", err)
	}
	stdout, stderr, err := output(ctx, c, cmd.ID)
	if err != nil {
		return nil, err
	}
	var results []wire.Result
	var done *wire.Done
	for line := range strings.SplitSeq(strings.TrimSpace(stdout), "\n") {
		var d wire.Done
		if json.Unmarshal([]byte(line), &d) == nil && d.Done {
			done = &d
			continue
		}
		var r wire.Result
		if err := json.Unmarshal([]byte(line), &r); err != nil || r.Check == "" {
			return nil, fmt.Errorf("probe output line %q: %v", line, err)
		}
		results = append(results, r)
	}
	if done == nil || done.Checks != len(results) || cmd.Status != agent.StatusExited || cmd.ExitCode == nil || *cmd.ExitCode != 0 {
		return nil, fmt.Errorf("the probe did not finish (status %s, %d results, done %+v): stderr %q", cmd.Status, len(results), done, clip(stderr))
	}
	return results, nil
}

// output reads a finished command's stdout and stderr.
func output(ctx context.Context, c *agent.Client, id string) (string, string, error) {
	out, err := c.Output(ctx, id, 0, false)
	if err != nil {
		return "", "", err
	}
	defer out.Close()
	var stdout, stderr bytes.Buffer
	for {
		f, err := out.Next()
		if errors.Is(err, io.EOF) {
			return stdout.String(), stderr.String(), nil
		}
		if err != nil {
			return "", "", err
		}
		switch f.Kind {
		case agent.FrameStdout:
			stdout.Write(f.Data)
		case agent.FrameStderr:
			stderr.Write(f.Data)
		}
	}
}

func clip(s string) string {
	if len(s) > 2000 {
		return s[:2000] + "..."
	}
	return s
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
