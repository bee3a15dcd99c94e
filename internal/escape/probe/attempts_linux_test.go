package main

import (
	"errors"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/paddock-dev/paddock/internal/escape/wire"
)

func TestAttempts(t *testing.T) {
	for _, tc := range []struct {
		name string
		do   func(a *attempts)
		want wire.Status
	}{
		{"nothing tried", func(a *attempts) {}, wire.Skipped},
		{"refused", func(a *attempts) { a.call("x", unix.EPERM, "") }, wire.Blocked},
		{"worked", func(a *attempts) { a.call("x", unix.EPERM, ""); a.call("y", nil, "evidence") }, wire.Escaped},
		{"the kernel lacks it", func(a *attempts) { a.call("x", unix.ENOSYS, "") }, wire.Skipped},
		{"lacking one of two", func(a *attempts) { a.call("x", unix.ENOSYS, ""); a.call("y", unix.EPERM, "") }, wire.Blocked},
		{"a failed control", func(a *attempts) { a.control("c", errors.New("no")); a.call("x", unix.EPERM, "") }, wire.Error},
		{"an escape beats a failed control", func(a *attempts) { a.control("c", errors.New("no")); a.call("x", nil, "") }, wire.Escaped},
		{"privileged: EPERM", func(a *attempts) { a.privileged("x", unix.EPERM) }, wire.Blocked},
		{"privileged: EACCES", func(a *attempts) { a.privileged("x", unix.EACCES) }, wire.Blocked},
		{"privileged: past the check", func(a *attempts) { a.privileged("x", unix.EINVAL) }, wire.Escaped},
		{"privileged: ok", func(a *attempts) { a.privileged("x", nil) }, wire.Escaped},
		{"privileged: ENOSYS", func(a *attempts) { a.privileged("x", unix.ENOSYS) }, wire.Skipped},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newAttempts("t")
			tc.do(a)
			if r := a.result("why"); r.Status != tc.want || r.Check != "t" {
				t.Errorf("%+v, want %s", r, tc.want)
			}
		})
	}
}

func TestCapMask(t *testing.T) {
	m, err := capMask([]string{"CAP_CHOWN", "sys_admin", " NET_BIND_SERVICE"})
	if err != nil || m != 1|1<<21|1<<10 || capList(m) != "CHOWN,NET_BIND_SERVICE,SYS_ADMIN" {
		t.Errorf("capMask = %#x %v (%s)", m, err, capList(m))
	}
	if _, err := capMask([]string{"CAP_NOPE"}); err == nil {
		t.Error("an unknown capability was accepted")
	}
}
