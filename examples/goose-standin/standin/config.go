package standin

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"
)

// Defaults, as goosed v1.31 has them where goosed has one.
const (
	// DefaultPingInterval is goosed's heartbeat on both SSE streams.
	DefaultPingInterval = 500 * time.Millisecond
	// DefaultChunkDelay is the pause between two chunks of a reply: long
	// enough that streaming is observable through a proxy, short enough
	// for tests.
	DefaultChunkDelay = 50 * time.Millisecond
	// DefaultSlowChunkDelay is the pause between chunks of a turn whose
	// user text asks for "[standin:slow]" with no duration.
	DefaultSlowChunkDelay = 2 * time.Second
	// MaxSlowChunkDelay caps "[standin:slow=<duration>]".
	MaxSlowChunkDelay = 10 * time.Minute
	// DefaultMaxReplyBytes is the body limit of POST /reply and
	// POST /sessions/{id}/reply (goosed: 50 MiB).
	DefaultMaxReplyBytes = 50 << 20
	// DefaultMaxImportBytes is the body limit of POST /sessions/import
	// (goosed: 25 MiB).
	DefaultMaxImportBytes = 25 << 20
	// DefaultMaxBodyBytes is the body limit of every other route (axum's
	// default, 2 MiB).
	DefaultMaxBodyBytes = 2 << 20
	// DefaultReplayBuffer is how many events a session's bus keeps for
	// Last-Event-ID replay (goosed: 512).
	DefaultReplayBuffer = 512
	// DefaultLagLimit is how many undelivered events a subscriber of a
	// session's bus may fall behind before it is disconnected, so that it
	// reconnects and replays (goosed: 256).
	DefaultLagLimit = 256
	// DefaultProvider and DefaultModel name the stand-in's "LLM" in
	// sessions when GOOSE_PROVIDER and GOOSE_MODEL are not set.
	DefaultProvider = "standin"
	DefaultModel    = "echo"
)

// Config configures a Server. The zero value of every field but DataDir and
// ConfigDir means its default.
type Config struct {
	// Secret is the shared secret clients must send as X-Secret-Key
	// (GOOSE_SERVER__SECRET_KEY). Empty means a random secret that is never
	// told to anyone, as goosed v1.31 does: no client can authenticate.
	Secret string
	// DataDir is goose's data directory (<GOOSE_PATH_ROOT>/data): sessions
	// live in DataDir/sessions/<id>.json. Required.
	DataDir string
	// ConfigDir is goose's config directory (<GOOSE_PATH_ROOT>/config): the
	// values set through /config/upsert live in
	// ConfigDir/standin-config.json. Required.
	ConfigDir string
	// Provider and Model are what /agent/resume records in a session that
	// has none (GOOSE_PROVIDER, GOOSE_MODEL): DefaultProvider and
	// DefaultModel if empty.
	Provider, Model string
	// PingInterval is the heartbeat of both SSE streams
	// (DefaultPingInterval if 0).
	PingInterval time.Duration
	// ChunkDelay is the pause between the chunks of a reply
	// (DefaultChunkDelay if 0, none if negative).
	ChunkDelay time.Duration
	// SlowChunkDelay is the pause between chunks of a "[standin:slow]" turn
	// (DefaultSlowChunkDelay if 0).
	SlowChunkDelay time.Duration
	// Body limits in bytes (the Default* constants if 0).
	MaxReplyBytes, MaxImportBytes, MaxBodyBytes int64
	// ReplayBuffer and LagLimit size each session's event bus
	// (DefaultReplayBuffer and DefaultLagLimit if 0).
	ReplayBuffer, LagLimit int
	// Logger gets the server's events (slog.Default() if nil).
	Logger *slog.Logger
	// Now is the one clock (time.Now if nil); tests replace it.
	Now func() time.Time
}

// Validate reports a Config that cannot work.
func (c Config) Validate() error {
	switch {
	case c.DataDir == "" || c.ConfigDir == "":
		return errors.New("standin: DataDir and ConfigDir are required")
	case c.PingInterval < 0 || c.SlowChunkDelay < 0:
		return errors.New("standin: PingInterval and SlowChunkDelay must not be negative")
	case c.MaxReplyBytes < 0 || c.MaxImportBytes < 0 || c.MaxBodyBytes < 0:
		return errors.New("standin: body limits must not be negative")
	case c.ReplayBuffer < 0 || c.LagLimit < 0:
		return errors.New("standin: ReplayBuffer and LagLimit must not be negative")
	}
	return nil
}

// withDefaults returns c with every zero field set to its default.
func (c Config) withDefaults() Config {
	if c.Provider == "" {
		c.Provider = DefaultProvider
	}
	if c.Model == "" {
		c.Model = DefaultModel
	}
	if c.PingInterval == 0 {
		c.PingInterval = DefaultPingInterval
	}
	if c.ChunkDelay == 0 {
		c.ChunkDelay = DefaultChunkDelay
	}
	if c.ChunkDelay < 0 {
		c.ChunkDelay = 0
	}
	if c.SlowChunkDelay == 0 {
		c.SlowChunkDelay = DefaultSlowChunkDelay
	}
	if c.MaxReplyBytes == 0 {
		c.MaxReplyBytes = DefaultMaxReplyBytes
	}
	if c.MaxImportBytes == 0 {
		c.MaxImportBytes = DefaultMaxImportBytes
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.ReplayBuffer == 0 {
		c.ReplayBuffer = DefaultReplayBuffer
	}
	if c.LagLimit == 0 {
		c.LagLimit = DefaultLagLimit
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// DirsFromEnv resolves goose's data and config directories as goose's Paths
// does: under $GOOSE_PATH_ROOT/{data,config} when it is set, else the XDG
// locations ($XDG_DATA_HOME/goose or ~/.local/share/goose, and
// $XDG_CONFIG_HOME/goose or ~/.config/goose).
func DirsFromEnv(getenv func(string) string) (dataDir, configDir string, err error) {
	if root := getenv("GOOSE_PATH_ROOT"); root != "" {
		if !filepath.IsAbs(root) {
			if root, err = filepath.Abs(root); err != nil {
				return "", "", fmt.Errorf("GOOSE_PATH_ROOT: %w", err)
			}
		}
		return filepath.Join(root, "data"), filepath.Join(root, "config"), nil
	}
	home := getenv("HOME")
	dataHome, configHome := getenv("XDG_DATA_HOME"), getenv("XDG_CONFIG_HOME")
	if home == "" && (dataHome == "" || configHome == "") {
		return "", "", errors.New("neither GOOSE_PATH_ROOT nor HOME is set: nowhere to keep sessions")
	}
	if dataHome == "" {
		dataHome = filepath.Join(home, ".local", "share")
	}
	if configHome == "" {
		configHome = filepath.Join(home, ".config")
	}
	return filepath.Join(dataHome, "goose"), filepath.Join(configHome, "goose"), nil
}
