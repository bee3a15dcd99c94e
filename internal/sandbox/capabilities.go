package sandbox

// Capabilities is the bounding set every sandbox runs with (Linux names).
// The driver grants exactly these to the agent, and the agent's seccomp
// filter is Docker's default profile evaluated for them
// (internal/agent/seccompgen). Root inside a sandbox ("sudo") holds only
// these; the unprivileged user holds none. Compared with Docker's default
// it drops MKNOD, NET_RAW, SETFCAP, SYS_CHROOT and AUDIT_WRITE.
var Capabilities = []string{
	"CAP_CHOWN",
	"CAP_DAC_OVERRIDE",
	"CAP_FOWNER",
	"CAP_FSETID",
	"CAP_KILL",
	"CAP_SETGID",
	"CAP_SETUID",
	"CAP_SETPCAP",
	"CAP_NET_BIND_SERVICE",
}
