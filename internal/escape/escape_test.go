package escape

import (
	"strings"
	"testing"

	"github.com/paddock-dev/paddock/internal/escape/wire"
)

func TestVerdicts(t *testing.T) {
	open := []known{
		{"runc", "proc1-mem", Sudo, "the fix"},
		{"other", "caps", User, "another driver's fix"},
	}
	find := func(who Who, check string, st wire.Status) Finding {
		return Finding{Who: who, Result: wire.Result{Check: check, Status: st, Detail: "detail"}}
	}
	for _, tc := range []struct {
		name     string
		findings []Finding
		want     map[string]string // verdict name -> "pass", "skip" or a substring of the failure
	}{
		{"blocked passes", []Finding{find(User, "caps", wire.Blocked), find(Sudo, "proc1-mem", wire.Escaped)},
			map[string]string{"user/caps": "pass", "sudo/proc1-mem": "known open until the fix"}},
		{"skipped skips", []Finding{find(User, "io-uring", wire.Skipped), find(Sudo, "proc1-mem", wire.Escaped)},
			map[string]string{"user/io-uring": "skip", "sudo/proc1-mem": "known open"}},
		{"an escape fails", []Finding{find(Sudo, "mount-proc", wire.Escaped), find(Sudo, "proc1-mem", wire.Escaped)},
			map[string]string{"sudo/mount-proc": "ESCAPED", "sudo/proc1-mem": "known open"}},
		{"a listed escape fails too", []Finding{find(Sudo, "proc1-mem", wire.Escaped)},
			map[string]string{"sudo/proc1-mem": "known open until the fix"}},
		{"a listed check that holds fails", []Finding{find(Sudo, "proc1-mem", wire.Blocked)},
			map[string]string{"sudo/proc1-mem": "take it off knownOpen"}},
		{"listed for the other identity only", []Finding{find(User, "proc1-mem", wire.Blocked), find(Sudo, "proc1-mem", wire.Escaped)},
			map[string]string{"user/proc1-mem": "pass", "sudo/proc1-mem": "known open"}},
		{"a listed check that never ran fails", []Finding{find(User, "caps", wire.Blocked)},
			map[string]string{"user/caps": "pass", "sudo/proc1-mem": "does not run it"}},
		{"inconclusive fails", []Finding{find(User, "chroot", wire.Error), find(Sudo, "proc1-mem", wire.Escaped)},
			map[string]string{"user/chroot": "inconclusive", "sudo/proc1-mem": "known open"}},
		{"an unknown status fails", []Finding{find(User, "chroot", "maybe"), find(Sudo, "proc1-mem", wire.Escaped)},
			map[string]string{"user/chroot": "unknown status", "sudo/proc1-mem": "known open"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := verdicts("runc", tc.findings, open)
			if len(got) != len(tc.want) {
				t.Fatalf("%d verdicts %+v, want %d", len(got), got, len(tc.want))
			}
			for _, v := range got {
				want, ok := tc.want[v.name]
				switch {
				case !ok:
					t.Errorf("unexpected verdict %+v", v)
				case want == "pass" && (v.fail || v.skip), want == "skip" && !v.skip:
					t.Errorf("%s: %+v, want %s", v.name, v, want)
				case want != "pass" && want != "skip" && (!v.fail || !strings.Contains(v.msg, want)):
					t.Errorf("%s: %+v, want a failure saying %q", v.name, v, want)
				}
			}
		})
	}
}

// TestKnownOpenIsWellFormed: every entry names a check the probe has, an
// identity, a driver and its fix, once.
func TestKnownOpenIsWellFormed(t *testing.T) {
	seen := map[known]bool{}
	for _, k := range knownOpen {
		if k.driver == "" || k.fixedBy == "" || (k.who != User && k.who != Sudo) || k.check == "" {
			t.Errorf("malformed entry %+v", k)
		}
		key := known{driver: k.driver, check: k.check, who: k.who}
		if seen[key] {
			t.Errorf("duplicate entry %+v", k)
		}
		seen[key] = true
	}
}
