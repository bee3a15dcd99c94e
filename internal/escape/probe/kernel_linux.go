package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/paddock-dev/paddock/internal/escape/wire"
)

// bpfMapCreate and bpfProgLoad are the leading fields of union bpf_attr
// for BPF_MAP_CREATE and BPF_PROG_LOAD; the rest stays zero.
type bpfMapCreate struct {
	mapType, keySize, valueSize, maxEntries, mapFlags uint32
	_                                                 [108]byte
}

type bpfProgLoad struct {
	progType, insnCnt uint32
	insns, license    uint64
	logLevel, logSize uint32
	logBuf            uint64
	kernVersion       uint32
	_                 [84]byte
}

// checkBPF creates a map and loads a socket filter that returns 0.
func checkBPF(cfg *config) wire.Result {
	a := newAttempts("bpf")
	m := bpfMapCreate{mapType: 2 /* ARRAY */, keySize: 4, valueSize: 4, maxEntries: 1}
	fd, _, e := unix.Syscall(unix.SYS_BPF, 0 /* BPF_MAP_CREATE */, uintptr(unsafe.Pointer(&m)), unsafe.Sizeof(m))
	if e == 0 {
		unix.Close(int(fd))
	}
	a.call("bpf(MAP_CREATE)", errnoErr(e), "created a map")
	// mov r0, 0; exit
	insns := []uint64{0xb7, 0x95}
	license := []byte("GPL\x00")
	p := bpfProgLoad{progType: 1 /* SOCKET_FILTER */, insnCnt: 2,
		insns: uint64(uintptr(unsafe.Pointer(&insns[0]))), license: uint64(uintptr(unsafe.Pointer(&license[0])))}
	fd, _, e = unix.Syscall(unix.SYS_BPF, 5 /* BPF_PROG_LOAD */, uintptr(unsafe.Pointer(&p)), unsafe.Sizeof(p))
	if e == 0 {
		unix.Close(int(fd))
	}
	a.call("bpf(PROG_LOAD socket filter)", errnoErr(e), "loaded a program")
	return a.result("")
}

// checkPerf opens a software counter on itself and one on the whole CPU.
func checkPerf(cfg *config) wire.Result {
	a := newAttempts("perf-event")
	attr := unix.PerfEventAttr{Type: unix.PERF_TYPE_SOFTWARE, Config: unix.PERF_COUNT_SW_CPU_CLOCK,
		Size: uint32(unsafe.Sizeof(unix.PerfEventAttr{})), Bits: unix.PerfBitDisabled}
	for _, t := range []struct {
		what     string
		pid, cpu int
	}{{"self", 0, -1}, {"all of CPU 0", -1, 0}} {
		fd, err := unix.PerfEventOpen(&attr, t.pid, t.cpu, -1, unix.PERF_FLAG_FD_CLOEXEC)
		if err == nil {
			unix.Close(fd)
		}
		a.call("perf_event_open("+t.what+")", err, "opened")
	}
	return a.result("")
}

// checkKeyctl: kernel keyrings are not namespaced; the user keyring of a
// uid is the host's.
func checkKeyctl(cfg *config) wire.Result {
	a := newAttempts("keyctl")
	id, err := unix.KeyctlGetKeyringID(unix.KEY_SPEC_USER_KEYRING, false)
	a.call("keyctl(GET_KEYRING_ID, user keyring)", err, fmt.Sprintf("keyring %d", id))
	id, err = unix.AddKey("user", "paddock-escape-probe", []byte("x"), unix.KEY_SPEC_PROCESS_KEYRING)
	a.call("add_key(user, process keyring)", err, fmt.Sprintf("key %d", id))
	_, err = unix.RequestKey("user", "paddock-escape-none", "", unix.KEY_SPEC_PROCESS_KEYRING)
	if !errors.Is(err, unix.ENOKEY) {
		a.call("request_key", err, "answered")
	} else {
		a.worked("request_key", "ENOKEY: the keyring was searched")
	}
	return a.result("")
}

// checkIOUring sets up a ring: its operations bypass the seccomp filter.
func checkIOUring(cfg *config) wire.Result {
	a := newAttempts("io-uring")
	var params [120]byte
	fd, _, e := unix.Syscall(unix.SYS_IO_URING_SETUP, 1, uintptr(unsafe.Pointer(&params)), 0)
	if e == 0 {
		unix.Close(int(fd))
	}
	a.call("io_uring_setup(1)", errnoErr(e), "set up a ring (its operations are not filtered by seccomp)")
	return a.result("")
}

// checkUserfaultfd: userfaultfd turns kernel races into reliable exploits.
func checkUserfaultfd(cfg *config) wire.Result {
	a := newAttempts("userfaultfd")
	for _, f := range []struct {
		what  string
		flags uintptr
	}{{"userfaultfd()", unix.O_CLOEXEC | unix.O_NONBLOCK}, {"userfaultfd(USER_MODE_ONLY)", unix.O_CLOEXEC | unix.O_NONBLOCK | 1}} {
		fd, _, e := unix.Syscall(unix.SYS_USERFAULTFD, f.flags, 0, 0)
		if e == 0 {
			unix.Close(int(fd))
		}
		a.call(f.what, errnoErr(e), "opened")
	}
	if fd, err := unix.Open("/dev/userfaultfd", unix.O_RDWR|unix.O_CLOEXEC, 0); err == nil {
		unix.Close(fd)
		a.worked("open /dev/userfaultfd", "opened")
	}
	return a.result("")
}

// checkFanotify: fanotify watches whole filesystems, the host's included.
func checkFanotify(cfg *config) wire.Result {
	a := newAttempts("fanotify")
	fd, err := unix.FanotifyInit(unix.FAN_CLASS_NOTIF|unix.FAN_CLOEXEC, unix.O_RDONLY)
	if err == nil {
		unix.Close(fd)
	}
	a.call("fanotify_init", err, "opened")
	return a.result("")
}

// socketTry opens a socket; success is the escape.
func socketTry(a *attempts, what string, domain, typ, proto int) {
	fd, err := unix.Socket(domain, typ|unix.SOCK_CLOEXEC, proto)
	if err == nil {
		unix.Close(fd)
	}
	if errors.Is(err, unix.EAFNOSUPPORT) || errors.Is(err, unix.EPROTONOSUPPORT) {
		a.absent = append(a.absent, what+": "+errText(err))
		return
	}
	a.call(what, err, "opened")
}

func checkRawSocket(cfg *config) wire.Result {
	a := newAttempts("raw-socket")
	if fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0); a.control("UDP socket", err) {
		unix.Close(fd)
	}
	socketTry(a, "socket(INET, RAW, ICMP)", unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_ICMP)
	socketTry(a, "socket(INET, RAW, RAW)", unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
	socketTry(a, "socket(INET6, RAW, ICMPV6)", unix.AF_INET6, unix.SOCK_RAW, unix.IPPROTO_ICMPV6)
	return a.result("")
}

func checkPacketSocket(cfg *config) wire.Result {
	a := newAttempts("packet-socket")
	all := int(htons(unix.ETH_P_ALL))
	socketTry(a, "socket(PACKET, RAW)", unix.AF_PACKET, unix.SOCK_RAW, all)
	socketTry(a, "socket(PACKET, DGRAM)", unix.AF_PACKET, unix.SOCK_DGRAM, all)
	return a.result("")
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// checkVsock: AF_VSOCK is not namespaced: a socket reaches the VM host's
// and every sandbox's vsock ports. Nothing is connected.
func checkVsock(cfg *config) wire.Result {
	a := newAttempts("vsock")
	socketTry(a, "socket(VSOCK, STREAM)", unix.AF_VSOCK, unix.SOCK_STREAM, 0)
	return a.result("")
}

// netlinkErrno sends one netlink request and returns the kernel's answer:
// nil for data or a zero ack, else the errno of its error message.
func netlinkErrno(proto int, typ, flags uint16, payload []byte) (error, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return nil, fmt.Errorf("netlink socket: %w", err)
	}
	defer unix.Close(fd)
	tv := unix.NsecToTimeval(pause.Nanoseconds())
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	msg := make([]byte, unix.NLMSG_HDRLEN+len(payload))
	binary.NativeEndian.PutUint32(msg[0:], uint32(len(msg)))
	binary.NativeEndian.PutUint16(msg[4:], typ)
	binary.NativeEndian.PutUint16(msg[6:], flags|unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	binary.NativeEndian.PutUint32(msg[8:], 1)
	copy(msg[unix.NLMSG_HDRLEN:], payload)
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("netlink send: %w", err)
	}
	buf := make([]byte, 1<<16)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return nil, fmt.Errorf("netlink receive: %w", err)
	}
	if n < unix.NLMSG_HDRLEN {
		return nil, fmt.Errorf("netlink: short answer of %d bytes", n)
	}
	if binary.NativeEndian.Uint16(buf[4:]) == unix.NLMSG_ERROR && n >= unix.NLMSG_HDRLEN+4 {
		if code := int32(binary.NativeEndian.Uint32(buf[unix.NLMSG_HDRLEN:])); code != 0 {
			return unix.Errno(-code), nil
		}
	}
	return nil, nil
}

// checkNetlinkAdmin changes the sandbox's own network configuration: with
// CAP_NET_ADMIN it could drop its egress rules. The requests are harmless
// (remove an address lo does not have; list nftables tables).
func checkNetlinkAdmin(cfg *config) wire.Result {
	a := newAttempts("netlink-admin")
	// ifaddrmsg{AF_INET, /32, 0, 0, lo} + IFA_LOCAL 192.0.2.123
	del := []byte{unix.AF_INET, 32, 0, 0, 1, 0, 0, 0, 8, 0, unix.IFA_LOCAL, 0, 192, 0, 2, 123}
	binary.NativeEndian.PutUint32(del[4:], 1)
	binary.NativeEndian.PutUint16(del[8:], 8)
	binary.NativeEndian.PutUint16(del[10:], unix.IFA_LOCAL)
	answer, err := netlinkErrno(unix.NETLINK_ROUTE, unix.RTM_DELADDR, 0, del)
	if a.control("rtnetlink", err) {
		a.privileged("RTM_DELADDR 192.0.2.123 from lo", answer)
	}
	// nfgenmsg{NFPROTO_UNSPEC, NFNETLINK_V0, 0}; every nfnetlink message
	// needs CAP_NET_ADMIN.
	answer, err = netlinkErrno(unix.NETLINK_NETFILTER, unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_GETTABLE, unix.NLM_F_DUMP, []byte{0, 0, 0, 0})
	if errors.Is(err, unix.EPROTONOSUPPORT) {
		a.absent = append(a.absent, "nfnetlink: EPROTONOSUPPORT")
	} else if a.control("nfnetlink", err) {
		a.privileged("NFT_MSG_GETTABLE", answer)
	}
	return a.result("")
}

// checkConnect opens TCP connections the runner says must fail: other
// sandboxes' servers, the host's listeners. All at once, each bounded.
func checkConnect(cfg *config) wire.Result {
	a := newAttempts("tcp-connect")
	errs := parallel(len(cfg.connect), func(i int) error {
		c, err := net.DialTimeout("tcp", cfg.connect[i].String(), pause)
		if err == nil {
			c.Close()
		}
		return err
	})
	for i, ap := range cfg.connect {
		a.call("connect "+ap.String(), errs[i], "connected")
	}
	return a.result("no -connect targets given")
}

// parallel runs fn(0..n-1) at once and returns their errors in order.
func parallel(n int, fn func(i int) error) []error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = fn(i) })
	}
	wg.Wait()
	return errs
}

// dnsQuery is a query for paddock-escape.invalid (A, IN, id 0x7064).
var dnsQuery = []byte{0x70, 0x64, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0,
	14, 'p', 'a', 'd', 'd', 'o', 'c', 'k', '-', 'e', 's', 'c', 'a', 'p', 'e', 7, 'i', 'n', 'v', 'a', 'l', 'i', 'd', 0,
	0, 1, 0, 1}

// checkDNS asks resolvers the runner names (other sandboxes') for a name;
// any answer at all is an escape.
func checkDNS(cfg *config) wire.Result {
	a := newAttempts("dns-query")
	answers := make([]string, len(cfg.dns))
	errs := parallel(len(cfg.dns), func(i int) error {
		c, err := net.DialTimeout("udp", cfg.dns[i].String(), pause)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(pause))
		if _, err := c.Write(dnsQuery); err != nil {
			return err
		}
		buf := make([]byte, 512)
		n, err := c.Read(buf)
		if err != nil {
			return err
		}
		if n < 4 || buf[0] != dnsQuery[0] || buf[1] != dnsQuery[1] {
			return fmt.Errorf("a %d-byte reply that is not an answer", n)
		}
		answers[i] = fmt.Sprintf("answered (%d bytes, rcode %d)", n, buf[3]&0xf)
		return nil
	})
	for i, ap := range cfg.dns {
		a.call("query "+ap.String(), errs[i], answers[i])
	}
	return a.result("no -dns targets given")
}

// checkHostPID looks for the runner's host processes: by the marker in
// their command lines and by signal 0 to their host pids.
func checkHostPID(cfg *config) wire.Result {
	a := newAttempts("host-pid")
	if cfg.marker == "" && len(cfg.hostPIDs) == 0 {
		return a.result("no -marker or -host-pid given")
	}
	visible := pids()
	if len(visible) == 0 {
		a.failf("no process visible in /proc, not even this one")
		return a.result("")
	}
	// The canaries' argv[0] is the marker; the probe's own processes carry
	// it only as an argument.
	isCanary := func(pid string) (bool, string) {
		cmd, err := os.ReadFile("/proc/" + pid + "/cmdline")
		argv0, _, _ := strings.Cut(string(cmd), "\x00")
		return err == nil && argv0 == cfg.marker, strings.ReplaceAll(string(cmd), "\x00", " ")
	}
	if cfg.marker != "" {
		for _, pid := range visible {
			if ok, cmd := isCanary(pid); ok {
				a.worked("/proc/"+pid, "a host canary: "+cmd)
			}
		}
		a.tried = append(a.tried, fmt.Sprintf("no canary among %d visible processes", len(visible)))
	}
	for _, pid := range cfg.hostPIDs {
		err := unix.Kill(pid, 0)
		if err != nil {
			a.refused("kill("+strconv.Itoa(pid)+", 0)", err)
			continue
		}
		if ok, cmd := isCanary(strconv.Itoa(pid)); cfg.marker != "" && !ok {
			a.tried = append(a.tried, fmt.Sprintf("pid %d exists here but is not the canary (%q)", pid, cmd))
			continue
		}
		a.worked("kill("+strconv.Itoa(pid)+", 0)", "the host process answers")
	}
	return a.result("")
}

// checkPerUIDInotify counts the inotify instances this uid may still
// create while a peer sandbox's user holds some: if per-uid kernel limits
// are shared between sandboxes, the peer's count against this one.
func checkPerUIDInotify(cfg *config) wire.Result {
	a := newAttempts("peruid-inotify")
	if os.Getuid() == 0 {
		return a.result("run as the user only (as root it would starve the host's root)")
	}
	if cfg.inotifyHeld <= 0 {
		return a.result("no peer holds instances (-inotify-held)")
	}
	data, err := os.ReadFile("/proc/sys/fs/inotify/max_user_instances")
	if isNotExist(err) && cfg.inotifyLimit > 0 {
		// gVisor's sentry keeps inotify to itself and has no per-uid
		// limit to show: the host's is the one a shared count would meet.
		a.tried = append(a.tried, fmt.Sprintf("no max_user_instances here; the host's is %d", cfg.inotifyLimit))
		data, err = []byte(strconv.Itoa(cfg.inotifyLimit)), nil
	}
	if !a.control("read max_user_instances", err) {
		return a.result("")
	}
	limit, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if !a.control("parse max_user_instances", err) {
		return a.result("")
	}
	if limit > 30000 {
		return a.result(fmt.Sprintf("max_user_instances %d is too high to exhaust", limit))
	}
	var fds []int
	for len(fds) <= limit {
		fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
		if err != nil {
			if !errors.Is(err, unix.EMFILE) {
				a.refused("inotify_init", err)
			}
			break
		}
		fds = append(fds, fd)
	}
	for _, fd := range fds {
		unix.Close(fd)
	}
	switch n := len(fds); {
	case n == 0:
		a.failf("not one inotify instance could be made")
	case n <= limit-cfg.inotifyHeld:
		a.worked("inotify_init until EMFILE", fmt.Sprintf("%d of max_user_instances %d: the %d a peer sandbox holds count against this one (per-uid limits are shared)", n, limit, cfg.inotifyHeld))
	default:
		a.tried = append(a.tried, fmt.Sprintf("inotify_init: %d of %d, unaffected by the %d a peer holds", n, limit, cfg.inotifyHeld))
	}
	return a.result("")
}

// maskedPaths are what sandboxes hide under /proc and /sys (Docker's
// masked and read-only lists).
var maskedPaths = []string{
	"/proc/acpi", "/proc/asound", "/proc/interrupts", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
	"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
	"/sys/devices/virtual/powercap", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
}

// checkUmountMasks lifts the masks over /proc and /sys (the mounts that
// hide kcore, sysrq-trigger, /proc/sys and the like).
func checkUmountMasks(cfg *config) wire.Result {
	a := newAttempts("umount-masks")
	mounts, err := mountinfo()
	if !a.control("read mountinfo", err) {
		return a.result("")
	}
	for _, m := range mounts {
		if slices.Contains(maskedPaths, m.point) {
			a.call("umount "+m.point, unix.Unmount(m.point, unix.MNT_DETACH), "unmounted")
		}
	}
	return a.result("no masked path")
}

// goRuntimeFile matches what Go's runtime opens before main: the cgroup's
// CPU limit, which it re-reads to size GOMAXPROCS.
var goRuntimeFile = regexp.MustCompile(`^/sys/fs/cgroup/.*cpu\.(cfs_quota_us|cfs_period_us|max)$`)

// leakedFDs reports descriptors beyond stdin, stdout and stderr that this
// process has when it starts: the agent must hand a command nothing else,
// least of all a host directory or its own socket. It runs first thing in
// main, before this process opens anything itself.
func leakedFDs() wire.Result {
	a := newAttempts("leaked-fds")
	dir, err := unix.Open("/proc/self/fd", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if !a.control("open /proc/self/fd", err) {
		return a.result("")
	}
	f := os.NewFile(uintptr(dir), "/proc/self/fd")
	names, err := f.Readdirnames(-1)
	f.Close()
	if !a.control("list /proc/self/fd", err) {
		return a.result("")
	}
	var seen []string
	for _, name := range names {
		fd, err := strconv.Atoi(name)
		if err != nil || fd <= 2 || fd == dir {
			continue
		}
		link, err := os.Readlink("/proc/self/fd/" + name)
		if err != nil || goRuntimeFile.MatchString(link) {
			continue
		}
		seen = append(seen, fmt.Sprintf("%d → %s", fd, link))
		if out, why := outsideSandbox(fd, link); out {
			a.worked(fmt.Sprintf("inherited fd %d", fd), why)
		} else if strings.HasPrefix(link, "socket:") {
			a.worked(fmt.Sprintf("inherited fd %d", fd), "a socket: "+link)
		}
	}
	a.tried = append(a.tried, fmt.Sprintf("inherited beyond 0-2: %v", seen))
	return a.result("")
}
