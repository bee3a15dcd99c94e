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

// modelConfig is goose's ModelConfig for model.
func modelConfig(model string) json.RawMessage {
	b, _ := json.Marshal(map[string]any{
		"model_name": model, "context_limit": nil, "temperature": nil,
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
		st.sess.ModelConfig = modelConfig(model)
		return
	}
	if st.sess.ProviderName == nil {
		p := s.cfg.Provider
		st.sess.ProviderName = &p
		st.sess.ModelConfig = modelConfig(s.cfg.Model)
	}
}

// sessionLocked returns the state of session id, nil if there is none.
func (s *Server) sessionLocked(id string) *sessionState {
	if !validSessionID(id) {
		return nil
	}
	return s.sessions[id]
}

// lockSession takes s.mu and returns session id's state, the caller to
// unlock. When there is none it answers 404 with goosed's message, which
// some routes prefix with what failed, and returns nil unlocked.
func (s *Server) lockSession(w http.ResponseWriter, id, failed string) *sessionState {
	s.mu.Lock()
	st := s.sessionLocked(id)
	if st == nil {
		s.mu.Unlock()
		writeError(w, http.StatusNotFound, fmt.Sprintf("%sSession %s not found", failed, id))
	}
	return st
}

// addSession gives sess a new id and saves it as a new session, answering
// 503 while the server shuts down and 500 (prefixed by failed) when the
// file cannot be written. It returns the saved session, with its
// conversation when full.
func (s *Server) addSession(w http.ResponseWriter, sess Session, failed string, full bool) (Session, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		writeError(w, http.StatusServiceUnavailable, "the server is shutting down")
		return Session{}, false
	}
	sess.ID = nextSessionID(sess.CreatedAt.Format("20060102"), maps.Keys(s.sessions))
	st := s.newState(sess)
	s.sessions[sess.ID] = st
	if err := s.saveLocked(st); err != nil {
		delete(s.sessions, sess.ID)
		st.cancel()
		writeError(w, http.StatusInternalServerError, failed+err.Error())
		return Session{}, false
	}
	return st.sess.copyOf(full), true
}

// sessionCopy is session id with its conversation, for answers built
// outside the lock.
func (s *Server) sessionCopy(id string) (Session, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.sessionLocked(id)
	if st == nil {
		return Session{}, false
	}
	return st.sess.copyOf(true), true
}

func (s *Server) handleAgentStart(w http.ResponseWriter, r *http.Request) {
	var req struct {
		WorkingDir *string `json:"working_dir"`
	}
	if !decodeJSON(w, r, s.cfg.MaxBodyBytes, &req, func() error {
		return firstMissing(need{"working_dir", req.WorkingDir != nil})
	}) {
		return
	}
	now := s.now()
	out, ok := s.addSession(w, Session{
		WorkingDir: *req.WorkingDir, Name: "New Chat", SessionType: "user",
		CreatedAt: now, UpdatedAt: now, ExtensionData: json.RawMessage(`{}`), GooseMode: "auto",
	}, "Failed to create session: ", false)
	if !ok {
		return
	}
	s.log.Info("goose stand-in: session started", "session", out.ID)
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleAgentResume(w http.ResponseWriter, r *http.Request) {
	var req struct {
		SessionID *string `json:"session_id"`
		Load      *bool   `json:"load_model_and_extensions"`
	}
	if !decodeJSON(w, r, s.cfg.MaxBodyBytes, &req, func() error {
		return firstMissing(need{"session_id", req.SessionID != nil}, need{"load_model_and_extensions", req.Load != nil})
	}) {
		return
	}
	st := s.lockSession(w, *req.SessionID, "Failed to resume session: ")
	if st == nil {
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
		return firstMissing(need{"session_id", req.SessionID != nil})
	}) {
		return
	}
	st := s.lockSession(w, *req.SessionID, "Failed to stop agent: ")
	if st == nil {
		return
	}
	defer s.mu.Unlock()
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
		return firstMissing(need{"session_id", req.SessionID != nil}, need{"provider", req.Provider != nil})
	}) {
		return
	}
	model := ""
	if req.Model != nil {
		model = *req.Model
	}
	st := s.lockSession(w, *req.SessionID, "")
	if st == nil {
		return
	}
	defer s.mu.Unlock()
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
	out, ok := s.sessionCopy(r.PathValue("id"))
	if !ok {
		bare(w, http.StatusNotFound)
		return
	}
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
	out, ok := s.sessionCopy(r.PathValue("id"))
	if !ok {
		bare(w, http.StatusNotFound)
		return
	}
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
		return firstMissing(need{"json", req.JSON != nil})
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
	out, ok := s.addSession(w, sess, "Failed to import session: ", true)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, out)
}
