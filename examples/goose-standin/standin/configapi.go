package standin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/http"
)

// configFile is where /config/upsert keeps values, in ConfigDir. goose keeps
// them in config.yaml and secrets in the keyring or secrets.yaml; the
// stand-in keeps both in one JSON file of its own.
const configFile = "standin-config.json"

// configValues are the values set through /config/upsert.
type configValues struct {
	Values  map[string]json.RawMessage `json:"values"`
	Secrets map[string]json.RawMessage `json:"secrets"`
}

func loadConfig(d *dirStore) (configValues, error) {
	c := configValues{Values: map[string]json.RawMessage{}, Secrets: map[string]json.RawMessage{}}
	data, err := d.read(configFile)
	if errors.Is(err, fs.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("%s: %w", configFile, err)
	}
	if err := json.Unmarshal(data, &c); err != nil {
		return c, fmt.Errorf("%s: %w", configFile, err)
	}
	if c.Values == nil {
		c.Values = map[string]json.RawMessage{}
	}
	if c.Secrets == nil {
		c.Secrets = map[string]json.RawMessage{}
	}
	return c, nil
}

// configKey is the body of /config/read and /config/remove.
type configKey struct {
	Key      *string `json:"key"`
	IsSecret *bool   `json:"is_secret"`
}

func (k *configKey) check() error {
	return firstMissing(need{"key", k.Key != nil}, need{"is_secret", k.IsSecret != nil})
}

func (s *Server) configMapLocked(secret bool) map[string]json.RawMessage {
	if secret {
		return s.config.Secrets
	}
	return s.config.Values
}

// handleConfigRead answers the value, or null when the key is not set.
func (s *Server) handleConfigRead(w http.ResponseWriter, r *http.Request) {
	var req configKey
	if !decodeJSON(w, r, s.cfg.MaxBodyBytes, &req, req.check) {
		return
	}
	s.mu.Lock()
	v, ok := s.configMapLocked(*req.IsSecret)[*req.Key]
	s.mu.Unlock()
	if !ok {
		v = json.RawMessage("null")
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(v)
}

func (s *Server) handleConfigUpsert(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Key      *string         `json:"key"`
		Value    json.RawMessage `json:"value"`
		IsSecret *bool           `json:"is_secret"`
	}
	if !decodeJSON(w, r, s.cfg.MaxBodyBytes, &req, func() error {
		return firstMissing(need{"key", req.Key != nil}, need{"value", req.Value != nil}, need{"is_secret", req.IsSecret != nil})
	}) {
		return
	}
	s.updateConfig(w, func(c *configValues) {
		m := c.Values
		if *req.IsSecret {
			m = c.Secrets
		}
		var v bytes.Buffer
		if json.Compact(&v, req.Value) != nil {
			v.Reset()
			v.Write(req.Value)
		}
		m[*req.Key] = json.RawMessage(v.Bytes())
	})
}

func (s *Server) handleConfigRemove(w http.ResponseWriter, r *http.Request) {
	var req configKey
	if !decodeJSON(w, r, s.cfg.MaxBodyBytes, &req, req.check) {
		return
	}
	s.updateConfig(w, func(c *configValues) {
		m := c.Values
		if *req.IsSecret {
			m = c.Secrets
		}
		delete(m, *req.Key)
	})
}

// updateConfig applies change to a copy of the values, writes it, and only
// then makes it the server's.
func (s *Server) updateConfig(w http.ResponseWriter, change func(*configValues)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := configValues{Values: maps.Clone(s.config.Values), Secrets: maps.Clone(s.config.Secrets)}
	change(&c)
	data, err := json.Marshal(c)
	if err == nil {
		err = s.confDir.write(configFile, data)
	}
	if err != nil {
		writeError(w, http.StatusInternalServerError, "Failed to save config: "+err.Error())
		return
	}
	s.config = c
	w.WriteHeader(http.StatusOK)
}
