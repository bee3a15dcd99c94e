package standin

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
)

func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, "ok")
}

func (s *Server) handleFeatures(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"features": map[string]bool{"local-inference": false, "code-mode": false}})
}

// modelConfig is goose's ModelConfig for the stand-in's model.
func (s *Server) modelConfig() json.RawMessage {
	b, _ := json.Marshal(map[string]any{
		"model_name": s.cfg.Model, "context_limit": nil, "temperature": nil,
		"max_tokens": nil, "toolshim": false, "toolshim_model": nil,
	})
	return b
}

// attachProviderLocked gives the session's agent a provider, recording it
// in the session if it has none.
func (s *Server) attachProviderLocked(st *sessionState, provider, model string) {
	st.agentReady = true
	if provider != "" {
		st.sess.ProviderName = &provider
		if model == "" {
			model = s.cfg.Model
		}
		b, _ := json.Marshal(map[string]any{
			"model_name": model, "context_limit": nil, "temperature": nil,
			"max_tokens": nil, "toolshim": false, "toolshim_model": nil,
		})
		st.sess.ModelConfig = b
		return
	}
	if st.sess.ProviderName == nil {
		p := s.cfg.Provider
		st.sess.ProviderName = &p
		st.sess.ModelConfig = s.modelConfig()
	}
}

// sessionLocked returns the state of session id, nil if there is none.
func (s *Server) sessionLocked(id string) *sessionState {
	if !validSessionID(id) {
		return nil
	}
	return s.sessions[id]
}

func (s *Server) handleAgentStart(w http.ResponseWriter, r *http.Request) {
	var req struct {
		WorkingDir *string `json:"working_dir"`
	}
	if !decodeJSON(w, r, s.cfg.MaxBodyBytes, &req, func() error {
		if req.WorkingDir == nil {
			return missing("working_dir")
		}
		return nil
	}) {
		return
	}
	now := s.now()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		writeError(w, http.StatusServiceUnavailable, "the server is shutting down")
		return
	}
	id := nextSessionID(now.Format("20060102"), maps.Keys(s.sessions))
	st := s.newState(Session{
		ID: id, WorkingDir: *req.WorkingDir, Name: "New Chat", SessionType: "user",
		CreatedAt: now, UpdatedAt: now, ExtensionData: json.RawMessage(`{}`), GooseMode: "auto",
	})
	s.sessions[id] = st
	if err := s.saveLocked(st); err != nil {
		delete(s.sessions, id)
		st.cancel()
		s.mu.Unlock()
		writeError(w, http.StatusInternalServerError, "Failed to create session: "+err.Error())
		return
	}
	out := st.sess.copyOf(false)
	s.mu.Unlock()
	s.log.Info("goose stand-in: session started", "session", id)
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleAgentResume(w http.ResponseWriter, r *http.Request) {
	var req struct {
		SessionID *string `json:"session_id"`
		Load      *bool   `json:"load_model_and_extensions"`
	}
	if !decodeJSON(w, r, s.cfg.MaxBodyBytes, &req, func() error {
		if req.SessionID == nil {
			return missing("session_id")
		}
		if req.Load == nil {
			return missing("load_model_and_extensions")
		}
		return nil
	}) {
		return
	}
	s.mu.Lock()
	st := s.sessionLocked(*req.SessionID)
	if st == nil {
		s.mu.Unlock()
		writeError(w, http.StatusNotFound, fmt.Sprintf("Failed to resume session: Session %s not found", *req.SessionID))
		return
	}
	if *req.Load {
		s.attachProviderLocked(st, "", "")
		s.saveLocked(st)
	}
	out := struct {
		Session          Session `json:"session"`
		ExtensionResults *[]any  `json:"extension_results,omitempty"`
	}{Session: st.sess.copyOf(true)}
	if *req.Load {
		out.ExtensionResults = &[]any{}
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleAgentStop(w http.ResponseWriter, r *http.Request) {
	var req struct {
		SessionID *string `json:"session_id"`
	}
	if !decodeJSON(w, r, s.cfg.MaxBodyBytes, &req, func() error {
		if req.SessionID == nil {
			return missing("session_id")
		}
		return nil
	}) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.sessionLocked(*req.SessionID)
	if st == nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("Failed to stop agent: Session %s not found", *req.SessionID))
		return
	}
	st.agentReady = false
	w.WriteHeader(http.StatusOK)
}

func (s *Server) handleUpdateProvider(w http.ResponseWriter, r *http.Request) {
	var req struct {
		SessionID *string `json:"session_id"`
		Provider  *string `json:"provider"`
		Model     *string `json:"model"`
	}
	if !decodeJSON(w, r, s.cfg.MaxBodyBytes, &req, func() error {
		if req.SessionID == nil {
			return missing("session_id")
		}
		if req.Provider == nil {
			return missing("provider")
		}
		return nil
	}) {
		return
	}
	model := ""
	if req.Model != nil {
		model = *req.Model
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.sessionLocked(*req.SessionID)
	if st == nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("Session %s not found", *req.SessionID))
		return
	}
	provider := *req.Provider
	if provider == "" {
		provider = s.cfg.Provider
	}
	s.attachProviderLocked(st, provider, model)
	s.saveLocked(st)
	w.WriteHeader(http.StatusOK)
}

func (s *Server) handleListSessions(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	list := make([]Session, 0, len(s.sessions))
	for _, st := range s.sessions {
		list = append(list, st.sess.copyOf(false))
	}
	s.mu.Unlock()
	// Most recently updated first, as goose lists them.
	slices.SortFunc(list, func(a, b Session) int {
		if c := b.UpdatedAt.Compare(a.UpdatedAt); c != 0 {
			return c
		}
		return strings.Compare(b.ID, a.ID)
	})
	writeJSON(w, http.StatusOK, map[string]any{"sessions": list})
}

func (s *Server) handleGetSession(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	st := s.sessionLocked(r.PathValue("id"))
	if st == nil {
		s.mu.Unlock()
		bare(w, http.StatusNotFound)
		return
	}
	out := st.sess.copyOf(true)
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

// handleDeleteSession deletes the session's file, cancels its turns and
// ends its event streams.
func (s *Server) handleDeleteSession(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	s.mu.Lock()
	st := s.sessionLocked(id)
	if st == nil {
		s.mu.Unlock()
		bare(w, http.StatusNotFound)
		return
	}
	if err := s.store.delete(id); err != nil {
		s.mu.Unlock()
		writeError(w, http.StatusInternalServerError, "Failed to delete session: "+err.Error())
		return
	}
	delete(s.sessions, id)
	b := s.buses[id]
	delete(s.buses, id)
	s.mu.Unlock()
	st.cancel()
	if b != nil {
		b.close()
	}
	s.log.Info("goose stand-in: session deleted", "session", id)
	w.WriteHeader(http.StatusOK)
}

// handleExportSession answers the session, conversation included, as a
// JSON string holding pretty JSON.
func (s *Server) handleExportSession(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	st := s.sessionLocked(r.PathValue("id"))
	if st == nil {
		s.mu.Unlock()
		bare(w, http.StatusNotFound)
		return
	}
	out := st.sess.copyOf(true)
	s.mu.Unlock()
	pretty, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, string(pretty))
}

// handleImportSession recreates an exported session under a new id.
func (s *Server) handleImportSession(w http.ResponseWriter, r *http.Request) {
	var req struct {
		JSON *string `json:"json"`
	}
	if !decodeJSON(w, r, s.cfg.MaxImportBytes, &req, func() error {
		if req.JSON == nil {
			return missing("json")
		}
		return nil
	}) {
		return
	}
	var in struct {
		Session
		Conversation *[]wireMessage `json:"conversation"`
	}
	if err := json.Unmarshal([]byte(*req.JSON), &in); err != nil {
		writeError(w, http.StatusBadRequest, "Invalid session JSON: "+dataError(err))
		return
	}
	conv, err := conversation(in.Conversation, "conversation")
	if err != nil {
		writeError(w, http.StatusBadRequest, "Invalid session JSON: "+err.Error())
		return
	}
	sess := in.Session
	sess.Conversation = conv
	if sess.Name == "" {
		sess.Name = "New Chat"
	}
	if sess.SessionType == "" {
		sess.SessionType = "user"
	}
	if sess.GooseMode == "" {
		sess.GooseMode = "auto"
	}
	if len(sess.ExtensionData) == 0 || string(sess.ExtensionData) == "null" {
		sess.ExtensionData = json.RawMessage(`{}`)
	}
	now := s.now()
	sess.CreatedAt, sess.UpdatedAt = now, now
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		writeError(w, http.StatusServiceUnavailable, "the server is shutting down")
		return
	}
	sess.ID = nextSessionID(now.Format("20060102"), maps.Keys(s.sessions))
	st := s.newState(sess)
	s.sessions[sess.ID] = st
	if err := s.saveLocked(st); err != nil {
		delete(s.sessions, sess.ID)
		st.cancel()
		s.mu.Unlock()
		writeError(w, http.StatusInternalServerError, "Failed to import session: "+err.Error())
		return
	}
	out := st.sess.copyOf(true)
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}
