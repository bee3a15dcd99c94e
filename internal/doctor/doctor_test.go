package doctor

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestRunReportsEveryCheck(t *testing.T) {
	var buf bytes.Buffer
	err := Run(context.Background(), &buf, Options{})
	out := buf.String()
	for _, c := range checks(Options{}) {
		if !strings.Contains(out, c.Name) {
			t.Errorf("report lacks check %q:\n%s", c.Name, out)
		}
	}
	if (err == nil) != (SandboxReady(context.Background()) == "") {
		t.Errorf("Run error %v disagrees with SandboxReady %q", err, SandboxReady(context.Background()))
	}
}
