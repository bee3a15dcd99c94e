package agent

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

const (
	testPasswd = "root:x:0:0:root:/root:/bin/sh\n" +
		"toor:x:0:0::/root:/bin/sh\n" +
		"user:x:1000:1000:user:/home/user:/bin/sh\n" +
		"app:x:1234:2345::/home/app:/bin/sh\n" +
		"rel:x:1500:1500::relative/home:/bin/sh\n" +
		"dup:x:1234:9999::/elsewhere:/bin/sh\n"
	testGroup = "root:x:0:\n" +
		"appgrp:x:2345:\n" +
		"docker:x:999:app,user\n" +
		"tools:x:777:app\n" +
		"short:x:888\n"
)

func TestResolveUser(t *testing.T) {
	def := DefaultUser("/home/user")
	for _, tc := range []struct {
		name, spec    string
		passwd, group string
		want          User
		wantCode      string
	}{
		{name: "empty", spec: "", want: def},
		{name: "root name", spec: "root", passwd: testPasswd, want: def},
		{name: "root uid", spec: "0", want: def},
		{name: "root uid and gid", spec: "0:0", want: def},
		{name: "root with a group", spec: "root:appgrp", passwd: testPasswd, group: testGroup, want: def},
		{name: "root without passwd", spec: "root", want: def},
		{name: "name of uid 0", spec: "toor", passwd: testPasswd, want: def},
		{name: "name", spec: "app", passwd: testPasswd, group: testGroup,
			want: User{UID: 1234, GID: 2345, Home: "/home/app", Name: "app", Groups: []uint32{999, 777}}},
		{name: "numeric listed", spec: "1234", passwd: testPasswd, group: testGroup,
			want: User{UID: 1234, GID: 2345, Home: "/home/app", Name: "app", Groups: []uint32{999, 777}}},
		{name: "numeric unlisted", spec: "4321", passwd: testPasswd, group: testGroup,
			want: User{UID: 4321, GID: 0, Home: "/"}},
		{name: "numeric without passwd", spec: "1234", want: User{UID: 1234, GID: 0, Home: "/"}},
		{name: "uid:gid", spec: "1234:1234", want: User{UID: 1234, GID: 1234, Home: "/"}},
		{name: "uid:gid listed uid", spec: "1234:42", passwd: testPasswd, group: testGroup,
			want: User{UID: 1234, GID: 42, Home: "/home/app", Name: "app", Groups: []uint32{999, 777}}},
		{name: "uid:group", spec: "4321:appgrp", passwd: testPasswd, group: testGroup,
			want: User{UID: 4321, GID: 2345, Home: "/"}},
		{name: "name:gid", spec: "app:5", passwd: testPasswd, group: testGroup,
			want: User{UID: 1234, GID: 5, Home: "/home/app", Name: "app", Groups: []uint32{999, 777}}},
		{name: "name:group", spec: "user:appgrp", passwd: testPasswd, group: testGroup,
			want: User{UID: 1000, GID: 2345, Home: "/home/user", Name: "user", Groups: []uint32{999}}},
		{name: "primary group not repeated", spec: "app:tools", passwd: testPasswd, group: testGroup,
			want: User{UID: 1234, GID: 777, Home: "/home/app", Name: "app", Groups: []uint32{999}}},
		{name: "group line without members", spec: "4321:short", group: testGroup,
			want: User{UID: 4321, GID: 888, Home: "/"}},
		{name: "relative home", spec: "rel", passwd: testPasswd,
			want: User{UID: 1500, GID: 1500, Home: "/", Name: "rel"}},
		{name: "unknown name", spec: "nosuch", passwd: testPasswd, group: testGroup, wantCode: CodeUserUnknown},
		{name: "unknown name without passwd", spec: "app", wantCode: CodeUserUnknown},
		{name: "unknown group", spec: "app:nosuch", passwd: testPasswd, group: testGroup, wantCode: CodeUserUnknown},
		{name: "unknown group of uid", spec: "1234:nosuch", wantCode: CodeUserUnknown},
		{name: "two colons", spec: "a:b:c", wantCode: CodeUserInvalid},
		{name: "empty user", spec: ":1000", wantCode: CodeUserInvalid},
		{name: "empty group", spec: "1000:", wantCode: CodeUserInvalid},
		{name: "uid -1", spec: "4294967295", wantCode: CodeUserUnknown},
		{name: "uid too large", spec: "99999999999", wantCode: CodeUserUnknown},
		{name: "NUL", spec: "app\x00", wantCode: CodeUserInvalid},
		{name: "too long", spec: strings.Repeat("a", 300), wantCode: CodeUserInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ResolveUser(tc.spec, []byte(tc.passwd), []byte(tc.group), "/home/user")
			if tc.wantCode != "" {
				if !errors.Is(err, sandbox.ErrInvalid) || sandbox.CodeOf(err) != tc.wantCode {
					t.Fatalf("ResolveUser(%q) = %+v, %v; want ErrInvalid %s", tc.spec, got, err, tc.wantCode)
				}
				return
			}
			if err != nil {
				t.Fatalf("ResolveUser(%q): %v", tc.spec, err)
			}
			if got.UID != tc.want.UID || got.GID != tc.want.GID || got.Home != tc.want.Home ||
				got.Name != tc.want.Name || !slices.Equal(got.Groups, tc.want.Groups) {
				t.Errorf("ResolveUser(%q) = %+v, want %+v", tc.spec, got, tc.want)
			}
		})
	}
}

// TestResolveUserMalformed: garbage around a good line is skipped, never an
// error and never a wrong match.
func TestResolveUserMalformed(t *testing.T) {
	passwd := "\n" +
		"#app:x:1:1::/comment:/bin/sh\n" +
		"app:x:notanumber:1::/bad:/bin/sh\n" +
		"app:x:7:7\n" + // too few fields
		"app:x:8:8::/a:/bin/sh:extra\n" + // too many
		":x:9:9::/noname:/bin/sh\n" +
		"\xff\xfe\x00garbage\n" +
		"app:x:1234:1::/nul\x00home:/bin/sh\n" + // a NUL: skipped whole
		"app\x00:x:99:99::/home/nul:/bin/sh\n" +
		strings.Repeat("x", 100_000) + "\n" +
		"+nis::::::\n" +
		"app:x:1234:2345::/home/app:/bin/sh\r\n"
	group := "bad\nappgrp:x:-1:\nappgrp:x:2345:\n"
	got, err := ResolveUser("app:appgrp", []byte(passwd), []byte(group), "/home/user")
	if err != nil {
		t.Fatal(err)
	}
	if got.UID != 1234 || got.GID != 2345 || got.Home != "/home/app" {
		t.Errorf("got %+v, want 1234:2345 /home/app", got)
	}
}

// TestTruncateToLines: a user database cut at the cap loses its partial
// last line, so a cut entry never resolves with a truncated home.
func TestTruncateToLines(t *testing.T) {
	data := []byte("a:x:1:1::/home/a:/bin/sh\nb:x:2:2::/home/bbbb")
	got := truncateToLines(data, true)
	if _, err := ResolveUser("b", got, nil, "/home/user"); sandbox.CodeOf(err) != CodeUserUnknown {
		t.Errorf("b in a cut database: %v, want %s", err, CodeUserUnknown)
	}
	if u, err := ResolveUser("a", got, nil, "/home/user"); err != nil || u.Home != "/home/a" {
		t.Errorf("a: %+v, %v", u, err)
	}
	if string(truncateToLines(data, false)) != string(data) {
		t.Error("an uncut database changed")
	}
	if truncateToLines([]byte("no newline at all"), true) != nil {
		t.Error("a cut single line should be dropped")
	}
}

func TestInfoUser(t *testing.T) {
	var old Info // an agent that predates user resolution
	if u := old.RunAs(); u.UID != UserUID || u.GID != UserGID || u.Home != UserHome {
		t.Errorf("RunAs of an old agent = %+v", u)
	}
	if old.UserErr() != nil {
		t.Error("an old agent has no user error")
	}
	bad := Info{UserError: &UserError{Code: CodeUserUnknown, Message: "no user"}}
	if err := bad.UserErr(); !errors.Is(err, sandbox.ErrInvalid) || sandbox.CodeOf(err) != CodeUserUnknown {
		t.Errorf("UserErr = %v", err)
	}
}
