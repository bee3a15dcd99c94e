package agent

import (
	"bytes"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// User is who commands run as without sudo, and who owns what the agent
// writes for them: the default sandbox user, or the image config's User as
// the agent resolved it against the sandbox's own /etc/passwd and
// /etc/group.
type User struct {
	UID  uint32 `json:"uid"`
	GID  uint32 `json:"gid"`
	Home string `json:"home"`
	// Name is the passwd name, "" for a uid /etc/passwd does not list.
	Name string `json:"name,omitempty"`
	// Groups are the supplementary groups: those /etc/group lists Name in.
	Groups []uint32 `json:"groups,omitempty"`
}

// DefaultUser is the sandbox user commands run as when the image names no
// user, or names root: uid 1000, with home (normally UserHome).
func DefaultUser(home string) User {
	return User{UID: UserUID, GID: UserGID, Home: home, Name: UserName}
}

// MaxUserDBBytes caps what the agent reads of /etc/passwd and of
// /etc/group: both come from the image, and a huge one must not cost the
// agent its memory. Lines past the cap are ignored.
const MaxUserDBBytes = 1 << 20

// maxUserSpec bounds the image's User string.
const maxUserSpec = 256

// maxGroups bounds the supplementary groups one user gets.
const maxGroups = 64

// UserErrorCodes of a User the agent cannot resolve.
const (
	CodeUserUnknown = "image_user_unknown" // a name /etc/passwd or /etc/group does not have
	CodeUserInvalid = "image_user_invalid" // not of the forms below
)

// ResolveUser resolves an image config's User the way Docker does, against
// the contents of the sandbox's /etc/passwd and /etc/group (either may be
// nil: a file the image lacks). spec is one of "", "name", "uid",
// "name:group", "uid:gid", "uid:group", "name:gid".
//
//   - "" and any user that is root ("root", "0", "0:0", a name whose uid
//     is 0) give DefaultUser(defaultHome): code in a sandbox is untrusted,
//     so it never runs as root by default; sudo reaches root anyway.
//   - A name must be in /etc/passwd, a group name in /etc/group, else the
//     error has code CodeUserUnknown (ErrInvalid).
//   - A numeric uid need not be listed. Its gid is the passwd entry's, or 0
//     when there is none (Docker's rule); its home the entry's, else "/".
//   - Supplementary groups are the /etc/group entries that list the user's
//     name (Docker's rule too), none for a user without a name.
//
// Malformed lines of either file are ignored, never an error.
func ResolveUser(spec string, passwd, group []byte, defaultHome string) (User, error) {
	if spec == "" {
		return DefaultUser(defaultHome), nil
	}
	if len(spec) > maxUserSpec || strings.ContainsAny(spec, "\x00\n") {
		return User{}, sandbox.Errorf(sandbox.ErrInvalid, CodeUserInvalid, "image user %.64q is not a valid user", spec)
	}
	userPart, groupPart, hasGroup := strings.Cut(spec, ":")
	if userPart == "" || (hasGroup && (groupPart == "" || strings.Contains(groupPart, ":"))) {
		return User{}, sandbox.Errorf(sandbox.ErrInvalid, CodeUserInvalid,
			"image user %q: want user, uid, user:group or uid:gid", spec)
	}
	if userPart == "root" || isZero(userPart) {
		return DefaultUser(defaultHome), nil
	}

	users := parsePasswd(passwd)
	var u User
	if uid, ok := parseID(userPart); ok {
		u = User{UID: uid, GID: 0, Home: "/"}
		// The first entry with that uid names the user, as getpwuid would.
		for _, e := range users {
			if e.uid == uid {
				u = User{UID: uid, GID: e.gid, Home: e.home, Name: e.name}
				break
			}
		}
	} else {
		found := false
		for _, e := range users {
			if e.name == userPart {
				u, found = User{UID: e.uid, GID: e.gid, Home: e.home, Name: e.name}, true
				break
			}
		}
		if !found {
			return User{}, sandbox.Errorf(sandbox.ErrInvalid, CodeUserUnknown,
				"image user %q: no user %q in the image's /etc/passwd", spec, userPart)
		}
		if u.UID == 0 {
			return DefaultUser(defaultHome), nil
		}
	}

	groups := parseGroup(group)
	if hasGroup {
		if gid, ok := parseID(groupPart); ok {
			u.GID = gid
		} else {
			found := false
			for _, g := range groups {
				if g.name == groupPart {
					u.GID, found = g.gid, true
					break
				}
			}
			if !found {
				return User{}, sandbox.Errorf(sandbox.ErrInvalid, CodeUserUnknown,
					"image user %q: no group %q in the image's /etc/group", spec, groupPart)
			}
		}
	}
	if u.Name != "" {
		for _, g := range groups {
			if len(u.Groups) == maxGroups {
				break
			}
			if g.gid != u.GID && slices.Contains(g.members, u.Name) && !slices.Contains(u.Groups, g.gid) {
				u.Groups = append(u.Groups, g.gid)
			}
		}
	}
	return u, nil
}

// isZero reports whether s is uid 0 written in digits ("0", "00").
func isZero(s string) bool {
	id, ok := parseID(s)
	return ok && id == 0
}

// parseID parses a decimal uid or gid. 4294967295 is (uid_t)-1, which
// setuid takes as "unchanged": refused.
func parseID(s string) (uint32, bool) {
	if s == "" || len(s) > 10 {
		return 0, false
	}
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n == 1<<32-1 {
		return 0, false
	}
	return uint32(n), true
}

type passwdEntry struct {
	name     string
	uid, gid uint32
	home     string
}

// parsePasswd reads name:password:uid:gid:gecos:home:shell lines, skipping
// any line that does not have that shape. A home that is not an absolute,
// clean path becomes "/".
func parsePasswd(data []byte) []passwdEntry {
	var out []passwdEntry
	for line := range bytes.Lines(data) {
		if bytes.IndexByte(line, 0) >= 0 {
			continue // a NUL could not pass to the kernel as HOME or USER
		}
		f := strings.Split(strings.TrimRight(string(line), "\r\n"), ":")
		if len(f) != 7 || f[0] == "" || strings.HasPrefix(f[0], "#") {
			continue
		}
		uid, ok1 := parseID(f[2])
		gid, ok2 := parseID(f[3])
		if !ok1 || !ok2 {
			continue
		}
		home := f[5]
		if !path.IsAbs(home) || path.Clean(home) != home {
			home = "/"
		}
		out = append(out, passwdEntry{name: f[0], uid: uid, gid: gid, home: home})
	}
	return out
}

type groupEntry struct {
	name    string
	gid     uint32
	members []string
}

// parseGroup reads name:password:gid:member,member lines (the member list
// may be missing), skipping any line that does not have that shape.
func parseGroup(data []byte) []groupEntry {
	var out []groupEntry
	for line := range bytes.Lines(data) {
		f := strings.Split(strings.TrimRight(string(line), "\r\n"), ":")
		if len(f) < 3 || len(f) > 4 || f[0] == "" || strings.HasPrefix(f[0], "#") {
			continue
		}
		gid, ok := parseID(f[2])
		if !ok {
			continue
		}
		var members []string
		if len(f) == 4 && f[3] != "" {
			members = strings.Split(f[3], ",")
		}
		out = append(out, groupEntry{name: f[0], gid: gid, members: members})
	}
	return out
}

// truncateToLines drops a last line cut by MaxUserDBBytes: a cut entry
// could name a wrong home or gid.
func truncateToLines(data []byte, truncated bool) []byte {
	if !truncated {
		return data
	}
	if i := bytes.LastIndexByte(data, '\n'); i >= 0 {
		return data[:i+1]
	}
	return nil
}
