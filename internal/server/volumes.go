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
// *volume.Manager (the host's) and *claim.Manager (PersistentVolumeClaims,
// for the kubernetes runtime) satisfy it. A volume is named within its team: every
// call but ListAll takes the caller's team, so another team's volume is
// not found and its name is free. Delete is refused with ErrConflict
// "volume_in_use" while a sandbox mounts the volume.
type Volumes interface {
	Create(ctx context.Context, teamID, name string, sizeBytes int64) (volume.Volume, error)
	Get(ctx context.Context, teamID, name string) (volume.Volume, error)
	List(ctx context.Context, teamID string) ([]volume.Volume, error)
	ListAll(ctx context.Context) ([]volume.Volume, error)
	Delete(ctx context.Context, teamID, name string) error
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
	v, err := s.volumes.Create(context.WithoutCancel(r.Context()), callerOf(r).TeamID, req.Name, req.SizeBytes)
	if err != nil {
		return fmt.Errorf("create volume: %w", err)
	}
	writeJSON(w, http.StatusCreated, toAPIVolume(v))
	return nil
}

// listVolumes lists the caller's team's volumes; a host admin's list has
// every team's (each with its teamId), as the image list does, though a
// host admin too gets and deletes by name only in the admin's own team.
func (s *Server) listVolumes(w http.ResponseWriter, r *http.Request) error {
	if s.volumes == nil {
		return errNoVolumes
	}
	p := callerOf(r)
	var (
		vols []volume.Volume
		err  error
	)
	if p.HostAdmin {
		vols, err = s.volumes.ListAll(r.Context())
	} else {
		vols, err = s.volumes.List(r.Context(), p.TeamID)
	}
	if err != nil {
		return fmt.Errorf("list volumes: %w", err)
	}
	out := api.VolumeList{Volumes: make([]api.Volume, 0, len(vols))}
	for _, v := range vols {
		out.Volumes = append(out.Volumes, toAPIVolume(v))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) getVolume(w http.ResponseWriter, r *http.Request) error {
	if s.volumes == nil {
		return errNoVolumes
	}
	v, err := s.volumes.Get(r.Context(), callerOf(r).TeamID, r.PathValue("name"))
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
	if err := s.volumes.Delete(context.WithoutCancel(r.Context()), callerOf(r).TeamID, r.PathValue("name")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
