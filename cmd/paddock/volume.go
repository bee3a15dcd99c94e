package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/paddock-dev/paddock/api"
)

// volumeCmd manages the server's named volumes.
func volumeCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	sc, err := newSubcommand("volume", "create, ls, rm", args, stderr)
	if err != nil {
		return err
	}
	switch sc.verb {
	case "create":
		size := sc.fs.String("size", "", "cap of the volume: bytes or with a unit, e.g. 512M, 10G (default: the server's, 10G)")
		if err := sc.parse(1, "<name>"); err != nil {
			return err
		}
		var n int64
		if *size != "" {
			if n, err = parseSize(*size); err != nil {
				return usagef("volume create: --size: %v", err)
			}
		}
		c, err := sc.cf.client()
		if err != nil {
			return err
		}
		v, err := c.CreateVolume(ctx, sc.fs.Arg(0), n)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, v.Name)
		return nil

	case "ls", "list":
		c, err := sc.connect(0, "no arguments")
		if err != nil {
			return err
		}
		vols, err := c.ListVolumes(ctx)
		if err != nil {
			return err
		}
		// TEAM: a host admin's list has every team's, and names are per team.
		t := newTable(stdout, "NAME", "TEAM", "SIZE", "USED", "IN USE BY")
		for _, v := range vols {
			t.row(v.Name, v.TeamID, fmt.Sprintf("%dMB", v.SizeBytes>>20), fmt.Sprintf("%dMB", v.UsedBytes>>20), strings.Join(v.InUseBy, ","))
		}
		return t.flush()

	case "rm", "remove":
		c, err := sc.connect(1, "<name>")
		if err != nil {
			return err
		}
		return c.DeleteVolume(ctx, sc.fs.Arg(0))
	}
	return usagef("volume: unknown subcommand %q", sc.verb)
}

// parseSize reads a byte count with an optional binary unit: 1048576,
// 512M, 10G, 1Gi, 2GiB, 1T.
func parseSize(s string) (int64, error) {
	num := strings.TrimRight(strings.ToUpper(s), "IB")
	shift := 0
	if num != "" {
		switch num[len(num)-1] {
		case 'K':
			shift = 10
		case 'M':
			shift = 20
		case 'G':
			shift = 30
		case 'T':
			shift = 40
		}
		if shift != 0 {
			num = num[:len(num)-1]
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > (1<<62)>>shift {
		return 0, fmt.Errorf("want a size such as 512M or 10G, got %q", s)
	}
	return n << shift, nil
}

// parseMB reads a size as parseSize does, in whole MiB rounded up; ""
// is 0 (the server's default).
func parseMB(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	n, err := parseSize(s)
	if err != nil {
		return 0, err
	}
	return (n + 1<<20 - 1) >> 20, nil
}

// volumesFlag collects repeated --volume name:/path[:rw|:cow].
type volumesFlag struct{ vols *[]api.VolumeMount }

func (v volumesFlag) String() string { return "" }

func (v volumesFlag) Set(s string) error {
	parts := strings.Split(s, ":")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
		return fmt.Errorf("want name:/path[:cow], got %q", s)
	}
	m := api.VolumeMount{Volume: parts[0], Path: parts[1]}
	if len(parts) == 3 {
		switch parts[2] {
		case api.VolumeReadWrite, api.VolumeCopyOnWrite:
			m.Mode = parts[2]
		default:
			return fmt.Errorf("volume mode must be rw or cow, got %q", parts[2])
		}
	}
	*v.vols = append(*v.vols, m)
	return nil
}
