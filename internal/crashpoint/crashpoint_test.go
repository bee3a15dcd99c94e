package crashpoint

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

func TestParse(t *testing.T) {
	for name, tc := range map[string]struct {
		in   string
		want point
	}{
		"unset":      {"", point{}},
		"name":       {"node/create/after-driver", point{"node/create/after-driver", 1}},
		"nth":        {"server/upload/read@40", point{"server/upload/read", 40}},
		"zero":       {"a@0", point{}},
		"negative":   {"a@-1", point{}},
		"not number": {"a@x", point{}},
		"no name":    {"@3", point{}},
	} {
		t.Run(name, func(t *testing.T) {
			if got := parse(tc.in); got != tc.want {
				t.Errorf("parse(%q) = %+v, want %+v", tc.in, got, tc.want)
			}
		})
	}
}

// childEnv marks the test binary run as the process that crashes.
const childEnv = "CRASHPOINT_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		// Three hits of "b" and one of "a": only the armed one counts.
		for range 3 {
			Hit("a")
			Hit("b")
			os.Stdout.WriteString("past\n")
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestHit runs this binary as a child armed at a point and checks that it
// dies of SIGKILL exactly there, saying so on stderr.
func TestHit(t *testing.T) {
	for name, tc := range map[string]struct {
		env        string
		killed     bool
		past       int // "past" lines printed before the crash
		stderrLine string
	}{
		"disarmed":      {env: "", past: 3},
		"other point":   {env: "c", past: 3},
		"first hit":     {env: "b", killed: true, past: 0, stderrLine: "crashpoint: b (hit 1)"},
		"second hit":    {env: "b@2", killed: true, past: 1, stderrLine: "crashpoint: b (hit 2)"},
		"past the hits": {env: "b@4", past: 3},
	} {
		t.Run(name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), childEnv+"=1", EnvVar+"="+tc.env)
			var stdout, stderr strings.Builder
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			var exit *exec.ExitError
			killed := errors.As(err, &exit) && exit.Sys().(syscall.WaitStatus).Signal() == syscall.SIGKILL
			if killed != tc.killed || (!tc.killed && err != nil) {
				t.Fatalf("child: %v (stderr %q), want killed %v", err, stderr.String(), tc.killed)
			}
			if got := strings.Count(stdout.String(), "past\n"); got != tc.past {
				t.Errorf("child got past %d hits, want %d", got, tc.past)
			}
			if tc.stderrLine != "" && !strings.Contains(stderr.String(), tc.stderrLine) {
				t.Errorf("stderr %q lacks %q", stderr.String(), tc.stderrLine)
			}
		})
	}
}
