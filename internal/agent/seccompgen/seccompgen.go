//go:build linux

// Package seccompgen compiles Docker's default seccomp profile (moby's),
// evaluated for the sandbox capability set, into the classic BPF filter the
// agent installs on itself before it serves. The agent does not compile it
// at start on amd64: `go generate ./internal/agent` runs gen, which writes
// the compiled filter into the agent as data, so a sandbox start skips
// evaluating the profile (about 2.5 ms here) and the agent links neither
// the profile nor the compiler. On other architectures the agent calls
// Filter at start. A test keeps the generated filter equal to Filter's.
package seccompgen

import (
	"errors"
	"fmt"
	"slices"

	bpfseccomp "github.com/elastic/go-seccomp-bpf"
	"github.com/elastic/go-seccomp-bpf/arch"
	"github.com/moby/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// MaxInstructions is the kernel's BPF_MAXINSNS.
const MaxInstructions = 4096

// seccomp_data offsets (linux/seccomp.h).
const (
	seccompDataNr   = 0
	seccompDataArch = 4
	// x32 syscalls share AUDIT_ARCH_X86_64 and are told apart by this bit.
	x32SyscallBit = 0x40000000
)

const (
	retKillProcess = unix.SECCOMP_RET_KILL_PROCESS
	retErrno       = unix.SECCOMP_RET_ERRNO
	retAllow       = unix.SECCOMP_RET_ALLOW
)

// ptraceSyscalls are allowed by Docker's default profile on kernels >= 4.8
// but denied here, a deliberate deviation: the agent and sudo commands share
// uid 0 and the same capabilities, so without this a sudo command could
// PTRACE_ATTACH to the agent (PID 1) and take over the process that answers
// the host. It costs strace and gdb inside sandboxes.
var ptraceSyscalls = []string{"ptrace", "process_vm_readv", "process_vm_writev"}

// Program compiles Docker's default seccomp profile, evaluated for the
// capability set caps, into a BPF program for the native architecture:
//   - any other audit arch, and x32 syscalls on amd64, kill the process
//     (Docker allows the i386/x32 sub-arches; we do not need them);
//   - a syscall not allowed by the profile fails with EPERM;
//   - clone3 fails with ENOSYS, so libc falls back to clone, which is
//     filtered on its flags.
func Program(caps []string) ([]bpf.Instruction, error) {
	caps = slices.Clone(caps)
	spec := &specs.Spec{Process: &specs.Process{Capabilities: &specs.LinuxCapabilities{
		Bounding: caps, Effective: caps, Permitted: caps,
	}}}
	profile, err := seccomp.GetDefaultProfile(spec)
	if err != nil {
		return nil, fmt.Errorf("seccomp: default profile: %w", err)
	}
	info, err := arch.GetInfo("")
	if err != nil {
		return nil, fmt.Errorf("seccomp: native arch: %w", err)
	}
	if profile.DefaultAction != specs.ActErrno || profile.DefaultErrnoRet == nil || *profile.DefaultErrnoRet != uint(unix.EPERM) {
		return nil, fmt.Errorf("seccomp: unexpected default action %s", profile.DefaultAction)
	}
	groups, err := groupsFromProfile(profile, info)
	if err != nil {
		return nil, err
	}
	// go-seccomp-bpf leaves an argument in the accumulator when a
	// conditional rule does not match, and the next group then compares
	// that argument with syscall numbers. So each group is assembled on its
	// own, and its fall-through (the library's final default return)
	// becomes a reload of the syscall number that flows into the next
	// group. The jumps inside a group are relative and stay valid.
	var body []bpf.Instruction
	for _, g := range groups {
		policy := bpfseccomp.Policy{DefaultAction: bpfseccomp.ActionAllow, Syscalls: []bpfseccomp.SyscallGroup{g}}
		insts, err := policy.Assemble()
		if err != nil {
			return nil, fmt.Errorf("seccomp: assemble %v: %w", g.Names, err)
		}
		part, err := stripPrelude(insts, info)
		if err != nil {
			return nil, err
		}
		last := len(part) - 1
		if r, ok := part[last].(bpf.RetConstant); !ok || r.Val != uint32(retAllow) {
			return nil, errors.New("seccomp: assembled group does not end with the default action")
		}
		part[last] = bpf.LoadAbsolute{Off: seccompDataNr, Size: 4}
		body = append(body, part...)
	}
	body = append(body, bpf.RetConstant{Val: uint32(retErrno) | uint32(unix.EPERM)})

	prog := []bpf.Instruction{
		bpf.LoadAbsolute{Off: seccompDataArch, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(info.ID), SkipTrue: 1},
		bpf.RetConstant{Val: uint32(retKillProcess)},
		bpf.LoadAbsolute{Off: seccompDataNr, Size: 4},
	}
	if info.ID == arch.X86_64.ID {
		prog = append(prog,
			bpf.JumpIf{Cond: bpf.JumpGreaterOrEqual, Val: x32SyscallBit, SkipFalse: 1},
			bpf.RetConstant{Val: uint32(retKillProcess)},
		)
	}
	return append(prog, body...), nil
}

// groupsFromProfile maps the OCI profile onto go-seccomp-bpf groups, one
// group per profile rule in profile order (first match wins; the profile
// lists each syscall with a single action, so order only matters for speed).
func groupsFromProfile(p *specs.LinuxSeccomp, info *arch.Info) ([]bpfseccomp.SyscallGroup, error) {
	var groups []bpfseccomp.SyscallGroup
	for _, rule := range p.Syscalls {
		var action bpfseccomp.Action
		switch rule.Action {
		case specs.ActAllow:
			action = bpfseccomp.ActionAllow
		case specs.ActErrno:
			errno := uint(unix.EPERM)
			if rule.ErrnoRet != nil {
				errno = *rule.ErrnoRet
			}
			// Ret passes an Action through verbatim (only a bare ERRNO gets
			// EPERM added), so the errno travels in the low 16 bits.
			action = bpfseccomp.Action(uint32(retErrno) | uint32(errno&0xffff))
		default:
			return nil, fmt.Errorf("seccomp: action %s for %v not supported", rule.Action, rule.Names)
		}
		conds, ok := conditions(rule.Args)
		if !ok {
			if action == bpfseccomp.ActionAllow {
				// Dropping an allow rule we cannot express is the stricter
				// outcome: those calls get the default EPERM.
				continue
			}
			return nil, fmt.Errorf("seccomp: cannot express the arguments of %v", rule.Names)
		}
		group := bpfseccomp.SyscallGroup{Action: action}
		for _, name := range rule.Names {
			if action == bpfseccomp.ActionAllow && slices.Contains(ptraceSyscalls, name) {
				continue
			}
			// Names the native table lacks are other ABIs' calls
			// (stat64, socketcall...): libseccomp skips them the same way.
			if _, ok := info.SyscallNames[name]; !ok {
				continue
			}
			if conds == nil {
				group.Names = append(group.Names, name)
			} else {
				group.NamesWithCondtions = append(group.NamesWithCondtions, bpfseccomp.NameWithConditions{Name: name, Conditions: conds})
			}
		}
		if len(group.Names)+len(group.NamesWithCondtions) > 0 {
			groups = append(groups, group)
		}
	}
	return groups, nil
}

// conditions maps OCI argument comparisons (ANDed, as libseccomp does) to
// the library's. ok is false when one has no exact equivalent.
func conditions(args []specs.LinuxSeccompArg) (bpfseccomp.ArgumentConditions, bool) {
	if len(args) == 0 {
		return nil, true
	}
	var out bpfseccomp.ArgumentConditions
	for _, a := range args {
		c := bpfseccomp.Condition{Argument: uint32(a.Index), Value: a.Value}
		switch a.Op {
		case specs.OpEqualTo:
			c.Operation = bpfseccomp.Equal
		case specs.OpNotEqual:
			c.Operation = bpfseccomp.NotEqual
		case specs.OpLessThan:
			c.Operation = bpfseccomp.LessThan
		case specs.OpLessEqual:
			c.Operation = bpfseccomp.LessOrEqual
		case specs.OpGreaterThan:
			c.Operation = bpfseccomp.GreaterThan
		case specs.OpGreaterEqual:
			c.Operation = bpfseccomp.GreaterOrEqual
		case specs.OpMaskedEqual:
			// (arg & mask) == 0 is "none of the mask bits set"; other
			// masked comparisons have no equivalent in the library.
			if a.ValueTwo != 0 {
				return nil, false
			}
			c.Operation = bpfseccomp.BitsNotSet
		default:
			return nil, false
		}
		out = append(out, c)
	}
	return out, true
}

// stripPrelude removes the library's architecture check (which sends a
// foreign arch to the default action and x32 to ENOSYS) so we can put our
// own, stricter one in front.
func stripPrelude(insts []bpf.Instruction, info *arch.Info) ([]bpf.Instruction, error) {
	i := slices.IndexFunc(insts, func(in bpf.Instruction) bool {
		l, ok := in.(bpf.LoadAbsolute)
		return ok && l.Off == seccompDataNr && l.Size == 4
	})
	if i < 2 || i > 3 {
		return nil, errors.New("seccomp: unexpected program prelude")
	}
	i++
	if info.ID == arch.X86_64.ID {
		j, ok := insts[i].(bpf.JumpIf)
		if !ok || j.Val != x32SyscallBit {
			return nil, errors.New("seccomp: unexpected x32 check in program prelude")
		}
		i += 2
	}
	return slices.Clone(insts[i:]), nil
}

// Filter is Program assembled into the form seccomp(2) takes.
func Filter(caps []string) ([]unix.SockFilter, error) {
	insts, err := Program(caps)
	if err != nil {
		return nil, err
	}
	raw, err := bpf.Assemble(insts)
	if err != nil {
		return nil, fmt.Errorf("seccomp: assemble bpf: %w", err)
	}
	if len(raw) > MaxInstructions {
		return nil, fmt.Errorf("seccomp: program of %d instructions exceeds BPF_MAXINSNS", len(raw))
	}
	filter := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		filter[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	return filter, nil
}
