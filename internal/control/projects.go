package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/paddock-dev/paddock/internal/auth"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
)

// teamOf is the team filter a principal reads with: "" (every team) for
// the host's admin.
func teamOf(p auth.Principal) string {
	if p.HostAdmin {
		return ""
	}
	return p.TeamID
}

// project loads a project the principal may touch; another team's is
// ErrNotFound, like a missing one.
func (s *Service) project(ctx context.Context, p auth.Principal, id string) (store.Project, *specDoc, error) {
	if !sandbox.ValidID(id) {
		return store.Project{}, nil, store.NotFound("project", id)
	}
	if !p.HostAdmin && p.TeamID == "" {
		return store.Project{}, nil, store.NotFound("project", id)
	}
	pr, err := s.cfg.Store.GetProject(ctx, teamOf(p), id)
	if err != nil {
		return store.Project{}, nil, err
	}
	if !p.CanAccessTeam(pr.TeamID) {
		return store.Project{}, nil, store.NotFound("project", id)
	}
	doc, err := decodeSpec(pr.Spec)
	if err != nil {
		return store.Project{}, nil, err
	}
	return pr, doc, nil
}

func (s *Service) view(ctx context.Context, pr store.Project, doc *specDoc) ProjectView {
	v := ProjectView{ID: pr.ID, TeamID: pr.TeamID, Name: pr.Name, Spec: doc.view(),
		CreatedAt: pr.CreatedAt, UpdatedAt: pr.UpdatedAt, Version: pr.Version}
	if pr.ActiveActivation != "" {
		if a, err := s.cfg.Store.GetActivation(ctx, pr.ActiveActivation); err == nil {
			v.Active = &a
		}
	}
	return v
}

// normalize is req.normalize with the host's check of its runtime.
func (s *Service) normalize(req ProjectRequest) (ProjectRequest, error) {
	req, err := req.normalize()
	if err != nil || req.Runtime == "" || s.cfg.CheckRuntime == nil {
		return req, err
	}
	return req, s.cfg.CheckRuntime(req.Runtime)
}

// CreateProject validates req and stores a new project of the caller's
// team with a freshly generated app secret.
func (s *Service) CreateProject(ctx context.Context, p auth.Principal, req ProjectRequest) (ProjectView, error) {
	if p.TeamID == "" {
		return ProjectView{}, sandbox.Errorf(sandbox.ErrInvalid, "team_required", "projects belong to a team; this caller has none")
	}
	req, err := s.normalize(req)
	if err != nil {
		return ProjectView{}, err
	}
	id := "prj-" + randomHex(8)
	doc := &specDoc{}
	doc.fill(req)
	doc.Secrets, doc.SecretNames = s.seal.sealSecrets(id, req.Secrets)
	doc.sealGit(s.seal, id, req.Source)
	doc.AppSecret = s.seal.seal(id, []byte(randomHex(32)))
	raw, err := json.Marshal(doc)
	if err != nil {
		return ProjectView{}, fmt.Errorf("encode project spec: %w", err)
	}
	now := s.now()
	pr := store.Project{ID: id, TeamID: p.TeamID, Name: req.Name, Spec: raw, Version: 1, CreatedAt: now, UpdatedAt: now}
	if err := s.cfg.Store.CreateProject(ctx, pr); err != nil {
		return ProjectView{}, err
	}
	s.log.Info("project created", "project", id, "team", p.TeamID, "name", req.Name)
	// Read it back for the version and times the store set.
	if got, err := s.cfg.Store.GetProject(ctx, p.TeamID, id); err == nil {
		pr = got
	}
	return s.view(ctx, pr, doc), nil
}

// GetProject returns a project of the caller's team.
func (s *Service) GetProject(ctx context.Context, p auth.Principal, id string) (ProjectView, error) {
	pr, doc, err := s.project(ctx, p, id)
	if err != nil {
		return ProjectView{}, err
	}
	return s.view(ctx, pr, doc), nil
}

// ListProjects lists the caller's team's projects (every team's for the
// host's admin).
func (s *Service) ListProjects(ctx context.Context, p auth.Principal, page store.Page) ([]ProjectView, string, error) {
	if !p.HostAdmin && p.TeamID == "" {
		return []ProjectView{}, "", nil
	}
	prs, next, err := s.cfg.Store.ListProjects(ctx, teamOf(p), page)
	if err != nil {
		return nil, "", err
	}
	out := make([]ProjectView, 0, len(prs))
	for _, pr := range prs {
		doc, err := decodeSpec(pr.Spec)
		if err != nil {
			return nil, "", err
		}
		out = append(out, s.view(ctx, pr, doc))
	}
	return out, next, nil
}

// UpdateProject replaces a project's spec with req (a full replace: every
// field takes req's value or its default), except that nil Secrets keep
// the project's secrets, and a git source without credentials keeps those
// it had for the same URL. The app secret stays. A live activation keeps
// running with its old spec; the next activation uses the new one.
func (s *Service) UpdateProject(ctx context.Context, p auth.Principal, id string, req ProjectRequest) (ProjectView, error) {
	req, err := s.normalize(req)
	if err != nil {
		return ProjectView{}, err
	}
	for {
		pr, old, err := s.project(ctx, p, id)
		if err != nil {
			return ProjectView{}, err
		}
		doc := &specDoc{}
		doc.fill(req)
		doc.AppSecret = old.AppSecret
		doc.sealGit(s.seal, id, req.Source)
		if g, og := req.Source.Git, old.Source.Git; doc.GitCredentials == nil && g != nil && og != nil && g.URL == og.URL {
			// Like Secrets: credentials not given again are kept for the same repository.
			doc.GitCredentials = old.GitCredentials
		}
		if req.Secrets == nil {
			doc.Secrets, doc.SecretNames = old.Secrets, old.SecretNames
			for _, k := range old.SecretNames {
				if _, ok := req.Env[k]; ok || k == req.AppSecretEnv {
					return ProjectView{}, sandbox.Errorf(sandbox.ErrInvalid, "invalid_env", "%s is both an env var and a secret", k)
				}
			}
		} else {
			doc.Secrets, doc.SecretNames = s.seal.sealSecrets(id, req.Secrets)
		}
		if pr.Spec, err = json.Marshal(doc); err != nil {
			return ProjectView{}, fmt.Errorf("encode project spec: %w", err)
		}
		pr.Name = req.Name
		got, err := s.cfg.Store.UpdateProject(ctx, pr)
		if sandbox.CodeOf(err) == "stale_version" {
			continue // another writer (an activation) moved it; apply ours on top
		}
		if err != nil {
			return ProjectView{}, err
		}
		return s.view(ctx, got, doc), nil
	}
}

// DeleteProject deactivates the project (saving nothing: its state goes
// with it), then removes its saved state and its record.
func (s *Service) DeleteProject(ctx context.Context, p auth.Principal, id string) error {
	pr, _, err := s.project(ctx, p, id)
	if err != nil {
		return err
	}
	if pr.ActiveActivation != "" {
		if _, err := s.deactivate(ctx, pr.ID, pr.ActiveActivation, ReasonDeleted); err != nil && !errors.Is(err, errNotActive) {
			return err
		}
	}
	if err := s.cfg.Store.DeleteProject(ctx, pr.TeamID, pr.ID); err != nil {
		return err
	}
	if err := os.RemoveAll(s.stateDir(pr.ID)); err != nil {
		s.log.Warn("remove saved state", "project", pr.ID, "err", err)
	}
	s.log.Info("project deleted", "project", pr.ID, "team", pr.TeamID)
	return nil
}

// updateProject applies fn to the current project and stores it, retrying
// on lost optimistic updates; fn returning false leaves it unchanged.
func (s *Service) updateProject(ctx context.Context, id string, fn func(*store.Project) bool) (store.Project, error) {
	return readModifyWrite(func() (store.Project, error) { return s.cfg.Store.GetProject(ctx, "", id) },
		func(pr store.Project) (store.Project, error) { return s.cfg.Store.UpdateProject(ctx, pr) }, fn)
}

// updateActivation is updateProject for activations.
func (s *Service) updateActivation(ctx context.Context, id string, fn func(*store.Activation) bool) (store.Activation, error) {
	return readModifyWrite(func() (store.Activation, error) { return s.cfg.Store.GetActivation(ctx, id) },
		func(a store.Activation) (store.Activation, error) { return s.cfg.Store.UpdateActivation(ctx, a) }, fn)
}

// readModifyWrite is the optimistic update of one versioned record: a write
// that lost to another writer (stale_version) is not an error but a reason
// to apply fn again to what that writer left, so that no change is lost.
func readModifyWrite[T any](get func() (T, error), put func(T) (T, error), fn func(*T) bool) (T, error) {
	for {
		v, err := get()
		if err != nil {
			var zero T
			return zero, err
		}
		if !fn(&v) {
			return v, nil
		}
		got, err := put(v)
		if sandbox.CodeOf(err) == "stale_version" {
			continue
		}
		return got, err
	}
}
