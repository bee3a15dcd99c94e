package server

import (
	"context"
	"fmt"
	"math"
	"net/http"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Pools is the host's warm pools (internal/pool's Manager): the host
// admin sets and reads them here; creates claim from them below the API.
type Pools interface {
	List() []sandbox.PoolStatus
	Get(name string) (sandbox.PoolStatus, error)
	Set(ctx context.Context, spec sandbox.PoolSpec) (sandbox.PoolStatus, error)
	Remove(ctx context.Context, name string) error
}

var errNoPools = sandbox.Errorf(sandbox.ErrUnsupported, "pools_unsupported", "this server keeps no warm pools")

// poolsFor checks that the caller is the host admin, who alone sees and
// sets pools: they are the host's, and tell of its load. To anyone else the
// list is forbidden and a named pool, like any object not theirs, is not
// found.
func (s *Server) poolsFor(r *http.Request) (Pools, error) {
	if !callerOf(r).HostAdmin {
		if name := r.PathValue("name"); name != "" {
			return nil, sandbox.Errorf(sandbox.ErrNotFound, "pool_not_found", "pool %q not found", name)
		}
		return nil, errHostAdminRequired
	}
	if s.pools == nil {
		return nil, errNoPools
	}
	return s.pools, nil
}

func (s *Server) listPools(w http.ResponseWriter, r *http.Request) error {
	pools, err := s.poolsFor(r)
	if err != nil {
		return err
	}
	out := api.PoolList{Pools: []api.Pool{}}
	for _, st := range pools.List() {
		out.Pools = append(out.Pools, toAPIPool(st))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) getPool(w http.ResponseWriter, r *http.Request) error {
	pools, err := s.poolsFor(r)
	if err != nil {
		return err
	}
	st, err := pools.Get(r.PathValue("name"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toAPIPool(st))
	return nil
}

func (s *Server) setPool(w http.ResponseWriter, r *http.Request) error {
	pools, err := s.poolsFor(r)
	if err != nil {
		return err
	}
	var req api.PoolSpec
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	res := req.Resources
	if res.VCPUs < 0 || math.IsNaN(res.VCPUs) || math.IsInf(res.VCPUs, 0) || res.MemoryMB < 0 || res.PIDs < 0 || res.DiskMB < 0 {
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_resources", "resources must not be negative")
	}
	spec := sandbox.PoolSpec{Name: r.PathValue("name"), Image: req.Image, Snapshot: req.Snapshot, Runtime: req.Runtime, Min: req.Min, Max: req.Max,
		Resources: sandbox.Resources{VCPUs: res.VCPUs, MemoryMB: res.MemoryMB, PIDs: res.PIDs, DiskMB: res.DiskMB}}
	if req.NetworkPolicy != nil {
		p, err := fromAPIPolicy(*req.NetworkPolicy)
		if err != nil {
			return err
		}
		spec.NetworkPolicy = &p
	}
	st, err := pools.Set(r.Context(), spec)
	if err != nil {
		return fmt.Errorf("set pool %s: %w", spec.Name, err)
	}
	writeJSON(w, http.StatusOK, toAPIPool(st))
	return nil
}

func (s *Server) deletePool(w http.ResponseWriter, r *http.Request) error {
	pools, err := s.poolsFor(r)
	if err != nil {
		return err
	}
	if err := pools.Remove(r.Context(), r.PathValue("name")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func toAPIPool(st sandbox.PoolStatus) api.Pool {
	res := st.Resources
	out := api.Pool{Name: st.Name, Key: st.Key, Target: st.Target, Idle: st.Idle, Creating: st.Creating,
		Hits: st.Hits, Misses: st.Misses, Error: st.Error,
		PoolSpec: api.PoolSpec{Image: st.Image, Snapshot: st.Snapshot, Runtime: st.Runtime, Min: st.Min, Max: st.Max,
			Resources: api.Resources{VCPUs: res.VCPUs, MemoryMB: res.MemoryMB, PIDs: res.PIDs, DiskMB: res.DiskMB}}}
	if st.NetworkPolicy != nil {
		out.NetworkPolicy = toAPIPolicy(*st.NetworkPolicy)
	}
	return out
}
