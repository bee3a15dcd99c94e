package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/paddock-dev/paddock/internal/netns"
	"github.com/paddock-dev/paddock/internal/userns"
)

// maxConfig bounds config.json: the biggest real ones (many mounts, a long
// environment, a seccomp profile) are tens of KiB.
const maxConfig = 8 << 20

// config is a bundle's config.json, kept as raw JSON except for the parts
// the wrapper reads or rewrites, so that whatever else it holds (fields of
// a newer runtime-spec than this binary's) reaches runc byte for byte.
type config struct {
	top   map[string]json.RawMessage
	linux map[string]json.RawMessage

	namespaces []specs.LinuxNamespace
	uidMap     []specs.LinuxIDMapping
	gidMap     []specs.LinuxIDMapping
	sysctl     map[string]string
	mounts     []json.RawMessage
	// annotations of the container (containerd's CRI marks the Pod's
	// sandbox container with io.kubernetes.cri.container-type=sandbox).
	annotations map[string]string
}

// parseConfig reads a config.json: at most maxConfig bytes, one JSON
// object and nothing after it.
func parseConfig(r io.Reader) (*config, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxConfig+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxConfig {
		return nil, fmt.Errorf("config.json is larger than %d bytes", maxConfig)
	}
	c := &config{}
	if err := strictUnmarshal(data, &c.top); err != nil {
		return nil, fmt.Errorf("config.json: %w", err)
	}
	parts := []struct {
		m    map[string]json.RawMessage
		key  string
		into any
	}{
		{c.top, "annotations", &c.annotations},
		{c.top, "mounts", &c.mounts},
		{c.top, "linux", &c.linux},
	}
	for _, p := range parts {
		if raw, ok := p.m[p.key]; ok {
			if err := strictUnmarshal(raw, p.into); err != nil {
				return nil, fmt.Errorf("config.json %s: %w", p.key, err)
			}
		}
	}
	for key, into := range map[string]any{"namespaces": &c.namespaces, "uidMappings": &c.uidMap, "gidMappings": &c.gidMap, "sysctl": &c.sysctl} {
		if raw, ok := c.linux[key]; ok {
			if err := strictUnmarshal(raw, into); err != nil {
				return nil, fmt.Errorf("config.json linux.%s: %w", key, err)
			}
		}
	}
	return c, nil
}

// strictUnmarshal is json.Unmarshal that refuses trailing data.
func strictUnmarshal(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("data after the JSON value")
	}
	return nil
}

// namespace returns the config's namespace of type t and whether it has one.
func (c *config) namespace(t specs.LinuxNamespaceType) (specs.LinuxNamespace, bool) {
	for _, ns := range c.namespaces {
		if ns.Type == t {
			return ns, true
		}
	}
	return specs.LinuxNamespace{}, false
}

// rangeBase is the first host id of the config's mappings when they are
// the one shape the wrapper makes namespaces for: one range of
// userns.Size ids from 0, the same for uids and gids (what the kubelet
// gives each Pod). ok is false otherwise.
func (c *config) rangeBase() (base uint32, ok bool) {
	if len(c.uidMap) != 1 || len(c.gidMap) != 1 || c.uidMap[0] != c.gidMap[0] {
		return 0, false
	}
	m := c.uidMap[0]
	if m.ContainerID != 0 || m.Size != userns.Size || m.HostID == 0 || uint64(m.HostID)+uint64(m.Size) > 1<<32-1 {
		return 0, false
	}
	return m.HostID, true
}

// isSandbox reports whether the config is a Pod's sandbox (pause)
// container, as containerd's CRI or CRI-O marks it.
func (c *config) isSandbox() bool {
	return c.annotations["io.kubernetes.cri.container-type"] == "sandbox" ||
		c.annotations["io.kubernetes.cri-o.ContainerType"] == "sandbox"
}

// setUserNS makes the config join the user namespace at path.
func (c *config) setUserNS(path string) {
	for i := range c.namespaces {
		if c.namespaces[i].Type == specs.UserNamespace {
			c.namespaces[i].Path = path
		}
	}
}

// moveNetSysctls removes the network sysctls (netns.ValidSysctl) from the
// config and returns them; any other name is left to runc.
func (c *config) moveNetSysctls() map[string]string {
	moved := map[string]string{}
	for k, v := range c.sysctl {
		if netns.ValidSysctl(k) {
			moved[k] = v
			delete(c.sysctl, k)
		}
	}
	return moved
}

// bindSysfs turns every sysfs mount of the config into a read-only bind
// of dir, and reports how many there were.
func (c *config) bindSysfs(dir string) (int, error) {
	n := 0
	for i, raw := range c.mounts {
		var m specs.Mount
		if err := json.Unmarshal(raw, &m); err != nil {
			return 0, fmt.Errorf("config.json mounts[%d]: %w", i, err)
		}
		if m.Type != "sysfs" {
			continue
		}
		b, err := json.Marshal(specs.Mount{Destination: m.Destination, Type: "bind", Source: dir,
			Options: []string{"bind", "ro", "nosuid", "nodev", "noexec", "private"}})
		if err != nil {
			return 0, err
		}
		c.mounts[i] = b
		n++
	}
	return n, nil
}

// marshal is the config with the wrapper's changes.
func (c *config) marshal() ([]byte, error) {
	set := func(m map[string]json.RawMessage, key string, v any) error {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		m[key] = b
		return nil
	}
	if c.linux == nil {
		return nil, errors.New("config.json has no linux section")
	}
	errs := []error{set(c.linux, "namespaces", c.namespaces)}
	if c.sysctl != nil {
		errs = append(errs, set(c.linux, "sysctl", c.sysctl))
	}
	if c.mounts != nil {
		errs = append(errs, set(c.top, "mounts", c.mounts))
	}
	errs = append(errs, set(c.top, "linux", c.linux))
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return json.Marshal(c.top)
}
