package server

import (
	"net/http"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Runtimes is the host's runtimes (internal/node's Manager): which run
// sandboxes here, which do not and why, and what each can do.
type Runtimes interface {
	Runtimes() []runtime.Status
}

var errNoRuntimes = sandbox.Errorf(sandbox.ErrUnsupported, "runtimes_unsupported", "this server does not list its runtimes")

// listRuntimes answers any authenticated caller: which isolation a create
// can ask for is no secret of the host's.
func (s *Server) listRuntimes(w http.ResponseWriter, r *http.Request) error {
	if s.runtimes == nil {
		return errNoRuntimes
	}
	out := api.RuntimeList{Runtimes: []api.Runtime{}}
	for _, st := range s.runtimes.Runtimes() {
		c := st.Capabilities
		out.Runtimes = append(out.Runtimes, api.Runtime{Name: st.Name, Default: st.Default, Available: st.Available, Reason: st.Reason,
			Capabilities: api.RuntimeCapabilities{Snapshot: c.Snapshot, DiskCap: c.DiskCap, DiskCapStops: c.DiskCapStops, UserNS: c.UserNS, Seccomp: c.Seccomp, CgroupVersion: c.CgroupVersion}})
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
