package server

import (
	"context"
	"fmt"
	"net/http"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/volume"
)

// Volumes is what the server needs from the host's named volumes;
// *volume.Manager satisfies it. Delete is refused with ErrConflict
// "volume_in_use" while a sandbox mounts the volume.
type Volumes interface {
	Create(ctx context.Context, name string, sizeBytes int64, teamID string) (volume.Volume, error)
	Get(name string) (volume.Volume, error)
	List() []volume.Volume
	Delete(ctx context.Context, name string) error
}

var _ Volumes = (*volume.Manager)(nil)

var errNoVolumes = sandbox.Errorf(sandbox.ErrUnsupported, "volumes_unsupported", "this server has no volumes")

func toAPIVolume(v volume.Volume) api.Volume {
	return api.Volume{Name: v.Name, SizeBytes: v.SizeBytes, UsedBytes: v.UsedBytes, TeamID: v.TeamID,
		CreatedAt: v.CreatedAt, LastUsedAt: v.LastUsedAt, InUseBy: v.InUseBy()}
}

func toAPIVolumeMounts(vols []sandbox.VolumeMount) []api.VolumeMount {
	var out []api.VolumeMount
	for _, v := range vols {
		out = append(out, api.VolumeMount{Volume: v.Volume, Path: v.Path, Mode: v.Mode})
	}
	return out
}

func fromAPIVolumeMounts(vols []api.VolumeMount) []sandbox.VolumeMount {
	var out []sandbox.VolumeMount
	for _, v := range vols {
		out = append(out, sandbox.VolumeMount{Volume: v.Volume, Path: v.Path, Mode: v.Mode})
	}
	return out
}

// ownedVolume returns a volume the caller's team owns; another team's is
// not found, as if it did not exist.
func (s *Server) ownedVolume(r *http.Request, name string) (volume.Volume, error) {
	v, err := s.volumes.Get(name)
	if err != nil {
		return volume.Volume{}, err
	}
	if !callerOf(r).CanAccessTeam(v.TeamID) {
		return volume.Volume{}, sandbox.Errorf(sandbox.ErrNotFound, "volume_not_found", "volume %q not found", name)
	}
	return v, nil
}

func (s *Server) createVolume(w http.ResponseWriter, r *http.Request) error {
	if s.volumes == nil {
		return errNoVolumes
	}
	var req api.CreateVolumeRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	if req.SizeBytes < 0 {
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_volume_size", "sizeBytes must not be negative")
	}
	// Formatting must not be cut short by a client hanging up.
	v, err := s.volumes.Create(context.WithoutCancel(r.Context()), req.Name, req.SizeBytes, callerOf(r).TeamID)
	if err != nil {
		return fmt.Errorf("create volume: %w", err)
	}
	writeJSON(w, http.StatusCreated, toAPIVolume(v))
	return nil
}

func (s *Server) listVolumes(w http.ResponseWriter, r *http.Request) error {
	if s.volumes == nil {
		return errNoVolumes
	}
	p := callerOf(r)
	out := api.VolumeList{Volumes: []api.Volume{}}
	for _, v := range s.volumes.List() {
		if p.CanAccessTeam(v.TeamID) {
			out.Volumes = append(out.Volumes, toAPIVolume(v))
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) getVolume(w http.ResponseWriter, r *http.Request) error {
	if s.volumes == nil {
		return errNoVolumes
	}
	v, err := s.ownedVolume(r, r.PathValue("name"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toAPIVolume(v))
	return nil
}

func (s *Server) deleteVolume(w http.ResponseWriter, r *http.Request) error {
	if s.volumes == nil {
		return errNoVolumes
	}
	name := r.PathValue("name")
	if _, err := s.ownedVolume(r, name); err != nil {
		return err
	}
	if err := s.volumes.Delete(context.WithoutCancel(r.Context()), name); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
