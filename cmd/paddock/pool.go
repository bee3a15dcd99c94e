package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// poolCmd manages the host's warm pools (host admin).
func poolCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	sc, err := newSubcommand("pool", "set, ls, rm", args, stderr)
	if err != nil {
		return err
	}
	switch sc.verb {
	case "set":
		var spec api.PoolSpec
		sc.fs.StringVar(&spec.Image, "image", "", "image of the pool's sandboxes (default host; published or host only)")
		sc.fs.StringVar(&spec.Snapshot, "snapshot", "", "snapshot of the pool's sandboxes, instead of an image")
		sc.fs.StringVar(&spec.Runtime, "runtime", "", "runtime of the pool's sandboxes: runc or gvisor (default: the server's)")
		sc.fs.Float64Var(&spec.Resources.VCPUs, "vcpus", 0, "CPU share (0: server default)")
		sc.fs.Int64Var(&spec.Resources.MemoryMB, "memory", 0, "memory limit in MB (0: server default)")
		sc.fs.Int64Var(&spec.Resources.DiskMB, "disk", 0, "disk cap in MB (0: server default)")
		sc.fs.IntVar(&spec.Min, "min", 0, "idle sandboxes kept whatever the demand")
		sc.fs.IntVar(&spec.Max, "max", 0, "most idle sandboxes kept when demand asks (default: min)")
		if err := sc.parse(1, "<name>"); err != nil {
			return err
		}
		if spec.Max == 0 {
			spec.Max = spec.Min
		}
		c, err := sc.cf.client()
		if err != nil {
			return err
		}
		p, err := c.SetPool(ctx, sc.fs.Arg(0), spec)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s\t%s\n", p.Name, p.Key)
		return nil

	case "ls", "list":
		c, err := sc.connect(0, "no arguments")
		if err != nil {
			return err
		}
		pools, err := c.ListPools(ctx)
		if err != nil {
			return err
		}
		t := newTable(stdout, "NAME", "IMAGE", "RUNTIME", "MIN", "MAX", "TARGET", "IDLE", "CREATING", "HITS", "MISSES", "ERROR")
		for _, p := range pools {
			img := p.Image
			switch {
			case p.Snapshot != "":
				img = p.Snapshot
			case img == "":
				img = sandbox.HostImage
			}
			rt := p.Runtime
			if rt == "" {
				rt = "default"
			}
			t.row(p.Name, img, rt, strconv.Itoa(p.Min), strconv.Itoa(p.Max), strconv.Itoa(p.Target), strconv.Itoa(p.Idle),
				strconv.Itoa(p.Creating), strconv.FormatUint(p.Hits, 10), strconv.FormatUint(p.Misses, 10), p.Error)
		}
		return t.flush()

	case "rm", "remove":
		c, err := sc.connect(1, "<name>")
		if err != nil {
			return err
		}
		return c.DeletePool(ctx, sc.fs.Arg(0))
	}
	return usagef("pool: unknown subcommand %q", sc.verb)
}

// poolsFlag is serve's repeatable --pool name=N,image=REF,min=N,max=N[,runtime=R][,vcpus=N][,memory=MB][,disk=MB].
type poolsFlag []sandbox.PoolSpec

func (f *poolsFlag) String() string { return "" }

func (f *poolsFlag) Set(s string) error {
	var p sandbox.PoolSpec
	maxSet := false
	for kv := range strings.SplitSeq(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return fmt.Errorf("%q is not key=value", kv)
		}
		var err error
		switch k {
		case "name":
			p.Name = v
		case "image":
			p.Image = v
		case "snapshot":
			p.Snapshot = v
		case "runtime":
			p.Runtime = v
		case "min":
			p.Min, err = strconv.Atoi(v)
		case "max":
			p.Max, err = strconv.Atoi(v)
			maxSet = true
		case "vcpus":
			p.Resources.VCPUs, err = strconv.ParseFloat(v, 64)
		case "memory":
			p.Resources.MemoryMB, err = strconv.ParseInt(v, 10, 64)
		case "disk":
			p.Resources.DiskMB, err = strconv.ParseInt(v, 10, 64)
		default:
			return fmt.Errorf("unknown key %q (name, image, snapshot, runtime, min, max, vcpus, memory, disk)", k)
		}
		if err != nil {
			return fmt.Errorf("%s: %v", k, err)
		}
	}
	if !maxSet {
		p.Max = p.Min
	}
	if err := p.Validate(); err != nil {
		return err
	}
	*f = append(*f, p)
	return nil
}
