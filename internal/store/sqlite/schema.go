package sqlite

// migrations is the schema, one step per entry; migration i (1-based)
// brings schema_version from i-1 to i. Never edit a step that has shipped:
// append a new one.
//
// Times are INTEGER Unix milliseconds (store.TimePrecision), NULL for the
// zero time. Nested records are JSON TEXT columns. There are no foreign
// keys between records: the MongoDB store cannot have them, and both must
// behave alike (see package store).
var migrations = []string{
	// 1: the first schema.
	`
CREATE TABLE teams (
	id         TEXT PRIMARY KEY,
	name       TEXT NOT NULL UNIQUE,
	created_at INTEGER
);

CREATE TABLE users (
	id         TEXT PRIMARY KEY,
	team_id    TEXT NOT NULL,
	issuer     TEXT NOT NULL,
	subject    TEXT NOT NULL,
	email      TEXT NOT NULL,
	name       TEXT NOT NULL,
	role       TEXT NOT NULL,
	created_at INTEGER
);
CREATE UNIQUE INDEX users_identity ON users (issuer, subject) WHERE subject <> '';
CREATE INDEX users_team ON users (team_id, created_at, id);

CREATE TABLE tokens (
	id         TEXT PRIMARY KEY,
	team_id    TEXT NOT NULL,
	user_id    TEXT NOT NULL,
	name       TEXT NOT NULL,
	hash       BLOB NOT NULL UNIQUE,
	role       TEXT NOT NULL,
	created_at INTEGER,
	expires_at INTEGER
);
CREATE INDEX tokens_team ON tokens (team_id, created_at, id);

CREATE TABLE projects (
	id                TEXT PRIMARY KEY,
	team_id           TEXT NOT NULL,
	name              TEXT NOT NULL,
	spec              TEXT,
	active_activation TEXT NOT NULL,
	state_ref         TEXT NOT NULL,
	version           INTEGER NOT NULL,
	created_at        INTEGER,
	updated_at        INTEGER,
	UNIQUE (team_id, name)
);
CREATE INDEX projects_page ON projects (team_id, created_at, id);

CREATE TABLE activations (
	id               TEXT PRIMARY KEY,
	project_id       TEXT NOT NULL,
	team_id          TEXT NOT NULL,
	sandbox_id       TEXT NOT NULL,
	state            TEXT NOT NULL,
	error            TEXT NOT NULL,
	log_tail         TEXT NOT NULL,
	end_reason       TEXT NOT NULL,
	created_at       INTEGER,
	ready_at         INTEGER,
	ended_at         INTEGER,
	last_activity_at INTEGER,
	version          INTEGER NOT NULL
);
CREATE INDEX activations_page ON activations (created_at, id);
CREATE INDEX activations_project ON activations (project_id, created_at, id);
CREATE INDEX activations_team ON activations (team_id, created_at, id);
CREATE INDEX activations_state ON activations (state);

CREATE TABLE sandboxes (
	id         TEXT PRIMARY KEY,
	node       TEXT NOT NULL,
	team_id    TEXT NOT NULL,
	state      TEXT NOT NULL,
	created_at INTEGER,
	data       TEXT NOT NULL -- sandbox.Sandbox as JSON
);
CREATE INDEX sandboxes_node ON sandboxes (node, created_at, id);
CREATE INDEX sandboxes_team ON sandboxes (team_id);

CREATE TABLE commands (
	sandbox_id  TEXT NOT NULL,
	id          TEXT NOT NULL,
	team_id     TEXT NOT NULL,
	cmd         TEXT NOT NULL,
	args        TEXT, -- JSON array
	cwd         TEXT NOT NULL,
	sudo        INTEGER NOT NULL,
	started_at  INTEGER,
	finished_at INTEGER,
	exit_code   INTEGER,
	PRIMARY KEY (sandbox_id, id)
);
CREATE INDEX commands_page ON commands (sandbox_id, started_at, id);

CREATE TABLE usage (
	id              TEXT PRIMARY KEY,
	team_id         TEXT NOT NULL,
	project_id      TEXT NOT NULL,
	sandbox_id      TEXT NOT NULL,
	start_at        INTEGER,
	end_at          INTEGER,
	cpu_seconds     REAL NOT NULL,
	memory_mb_hours REAL NOT NULL,
	net_rx_bytes    INTEGER NOT NULL,
	net_tx_bytes    INTEGER NOT NULL
);
CREATE INDEX usage_team ON usage (team_id, start_at);
CREATE INDEX usage_project ON usage (project_id, start_at);
CREATE INDEX usage_sandbox ON usage (sandbox_id, start_at);

CREATE TABLE events (
	seq           INTEGER PRIMARY KEY AUTOINCREMENT,
	time          INTEGER,
	team_id       TEXT NOT NULL,
	project_id    TEXT NOT NULL,
	activation_id TEXT NOT NULL,
	sandbox_id    TEXT NOT NULL,
	type          TEXT NOT NULL,
	message       TEXT NOT NULL,
	data          TEXT -- JSON object
);
CREATE INDEX events_team ON events (team_id, seq);
CREATE INDEX events_project ON events (project_id, seq);
CREATE INDEX events_activation ON events (activation_id, seq);
`,
	// 2: the image digest an activation runs.
	`ALTER TABLE activations ADD COLUMN image_digest TEXT NOT NULL DEFAULT '';`,
	// 3: the Vercel compatibility layer's sandboxes and snapshots. id is
	// storeutil.VercelSandboxKey(team_id, project, name); vercel_sessions
	// indexes each sandbox's session_ids, rewritten with it in one
	// transaction.
	`
CREATE TABLE vercel_sandboxes (
	id          TEXT PRIMARY KEY,
	team_id     TEXT NOT NULL,
	project     TEXT NOT NULL,
	name        TEXT NOT NULL,
	api         INTEGER NOT NULL,
	session_ids TEXT, -- JSON array
	data        TEXT NOT NULL,
	version     INTEGER NOT NULL,
	created_at  INTEGER,
	updated_at  INTEGER
);
CREATE INDEX vercel_sandboxes_page ON vercel_sandboxes (team_id, created_at, id);

CREATE TABLE vercel_sessions (
	session_id TEXT NOT NULL,
	sandbox_id TEXT NOT NULL,
	PRIMARY KEY (session_id, sandbox_id)
);
CREATE INDEX vercel_sessions_sandbox ON vercel_sessions (sandbox_id);

CREATE TABLE vercel_snapshots (
	id              TEXT PRIMARY KEY,
	team_id         TEXT NOT NULL,
	project         TEXT NOT NULL,
	sandbox_name    TEXT NOT NULL,
	source_session  TEXT NOT NULL,
	parent_id       TEXT NOT NULL,
	creation_method TEXT NOT NULL,
	created_at      INTEGER
);
CREATE INDEX vercel_snapshots_page ON vercel_snapshots (team_id, created_at, id);
`,
	// 4: history is pruned by age (PruneCommands).
	`CREATE INDEX commands_started ON commands (started_at);`,
	// 5: each team's admission record (internal/admission's document).
	`
CREATE TABLE admissions (
	team_id    TEXT PRIMARY KEY,
	data       TEXT NOT NULL,
	version    INTEGER NOT NULL,
	updated_at INTEGER
);
`,
	// 6: metering: samples while sandboxes run (peak memory, creations,
	// storage, the counters at a sample's end), their hourly roll-ups,
	// and budgets.
	`
ALTER TABLE usage ADD COLUMN memory_peak_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage ADD COLUMN creations INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage ADD COLUMN storage_gb_hours REAL NOT NULL DEFAULT 0;
ALTER TABLE usage ADD COLUMN end_cpu_seconds REAL NOT NULL DEFAULT 0;
ALTER TABLE usage ADD COLUMN end_net_rx_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage ADD COLUMN end_net_tx_bytes INTEGER NOT NULL DEFAULT 0;
CREATE INDEX usage_start ON usage (start_at);

CREATE TABLE usage_rollups (
	id                TEXT PRIMARY KEY,
	team_id           TEXT NOT NULL,
	project_id        TEXT NOT NULL,
	sandbox_id        TEXT NOT NULL,
	start_at          INTEGER,
	end_at            INTEGER,
	cpu_seconds       REAL NOT NULL,
	memory_mb_hours   REAL NOT NULL,
	net_rx_bytes      INTEGER NOT NULL,
	net_tx_bytes      INTEGER NOT NULL,
	memory_peak_bytes INTEGER NOT NULL,
	creations         INTEGER NOT NULL,
	storage_gb_hours  REAL NOT NULL,
	end_cpu_seconds   REAL NOT NULL,
	end_net_rx_bytes  INTEGER NOT NULL,
	end_net_tx_bytes  INTEGER NOT NULL
);
CREATE INDEX usage_rollups_team ON usage_rollups (team_id, start_at);
CREATE INDEX usage_rollups_start ON usage_rollups (start_at);

CREATE TABLE budgets (
	team_id       TEXT PRIMARY KEY,
	monthly_limit REAL NOT NULL,
	thresholds    TEXT, -- JSON array
	hard_cap      INTEGER NOT NULL,
	month         TEXT NOT NULL,
	notified      INTEGER NOT NULL,
	version       INTEGER NOT NULL,
	updated_at    INTEGER
);
`,
	// 7: the E2B compatibility layer's records.
	`
CREATE TABLE e2b_sandboxes (
	id         TEXT PRIMARY KEY,
	team_id    TEXT NOT NULL,
	data       TEXT NOT NULL,
	created_at INTEGER
);
CREATE INDEX e2b_sandboxes_page ON e2b_sandboxes (team_id, created_at, id);
`,
	// 8: teams' webhooks and their deliveries; doc is the whole record as
	// JSON, the other columns what lists filter and sort on.
	`
CREATE TABLE webhooks (
	id         TEXT PRIMARY KEY,
	team_id    TEXT NOT NULL,
	created_at INTEGER,
	doc        TEXT NOT NULL
);
CREATE INDEX webhooks_team ON webhooks (team_id, created_at, id);

CREATE TABLE webhook_deliveries (
	id         TEXT PRIMARY KEY,
	webhook_id TEXT NOT NULL,
	team_id    TEXT NOT NULL,
	event_seq  INTEGER NOT NULL,
	state      TEXT NOT NULL,
	version    INTEGER NOT NULL,
	doc        TEXT NOT NULL
);
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (webhook_id, event_seq, id);
CREATE INDEX webhook_deliveries_state ON webhook_deliveries (state, event_seq, id);
CREATE INDEX webhook_deliveries_team ON webhook_deliveries (team_id, event_seq, id);
`,
	// 9: a command's tag and terminal in its history; the index a
	// webhook's backlog is counted on (CountDeliveries).
	`
ALTER TABLE commands ADD COLUMN tag TEXT NOT NULL DEFAULT '';
ALTER TABLE commands ADD COLUMN pty_rows INTEGER NOT NULL DEFAULT 0;
ALTER TABLE commands ADD COLUMN pty_cols INTEGER NOT NULL DEFAULT 0;
CREATE INDEX webhook_deliveries_backlog ON webhook_deliveries (webhook_id, state, event_seq);
`,
	// 10: a sandbox's admission slot is a record of its own (admission
	// holds), its team's record keeps their totals: a create no longer
	// rewrites every slot of its team. The slots bound to sandboxes move
	// out of each team's document ("held" entries with a "sandbox") into
	// records; "bound" gets their totals; the unbound ones stay.
	`
CREATE TABLE admission_holds (
	sandbox_id TEXT PRIMARY KEY,
	team_id    TEXT NOT NULL,
	hold_id    TEXT NOT NULL,
	replica    TEXT NOT NULL,
	vcpus      REAL NOT NULL,
	memory_mb  INTEGER NOT NULL,
	created_at INTEGER
);
CREATE INDEX admission_holds_team ON admission_holds (team_id, sandbox_id);

INSERT OR IGNORE INTO admission_holds (sandbox_id, team_id, hold_id, replica, vcpus, memory_mb, created_at)
SELECT json_extract(h.value, '$.sandbox'), a.team_id,
	coalesce(json_extract(h.value, '$.id'), ''), coalesce(json_extract(h.value, '$.replica'), ''),
	coalesce(json_extract(h.value, '$.vcpus'), 0), coalesce(json_extract(h.value, '$.memoryMb'), 0),
	CAST(round((julianday(json_extract(h.value, '$.bound')) - 2440587.5) * 86400000) AS INTEGER)
FROM admissions a, json_each(a.data, '$.held') h
WHERE coalesce(json_extract(h.value, '$.sandbox'), '') <> '';

UPDATE admissions SET version = version + 1, data = json_set(data,
	'$.held', json((SELECT json_group_array(json(h.value)) FROM json_each(admissions.data, '$.held') h
		WHERE coalesce(json_extract(h.value, '$.sandbox'), '') = '')),
	'$.bound', json_object(
		'count', (SELECT count(*) FROM json_each(admissions.data, '$.held') h
			WHERE coalesce(json_extract(h.value, '$.sandbox'), '') <> ''),
		'vcpus', (SELECT coalesce(sum(json_extract(h.value, '$.vcpus')), 0) FROM json_each(admissions.data, '$.held') h
			WHERE coalesce(json_extract(h.value, '$.sandbox'), '') <> ''),
		'memoryMb', (SELECT coalesce(sum(json_extract(h.value, '$.memoryMb')), 0) FROM json_each(admissions.data, '$.held') h
			WHERE coalesce(json_extract(h.value, '$.sandbox'), '') <> '')))
WHERE EXISTS (SELECT 1 FROM json_each(admissions.data, '$.held') h
	WHERE coalesce(json_extract(h.value, '$.sandbox'), '') <> '');
`,
	// 11: leases (work that runs once among replicas) and the replica
	// that drives each activation.
	`
CREATE TABLE leases (
	name       TEXT PRIMARY KEY,
	holder     TEXT NOT NULL,
	token      INTEGER NOT NULL,
	expires_at INTEGER,
	version    INTEGER NOT NULL
);
ALTER TABLE activations ADD COLUMN replica TEXT NOT NULL DEFAULT '';
`,
	// 12: the replica directory (where each replica is reached).
	`
CREATE TABLE replicas (
	name       TEXT PRIMARY KEY,
	url        TEXT NOT NULL,
	updated_at INTEGER
);
`,
	// 13: the image directory (every scope's image refs, for every replica).
	`
CREATE TABLE image_refs (
	scope      TEXT NOT NULL,
	ref        TEXT NOT NULL,
	digest     TEXT NOT NULL,
	source     TEXT NOT NULL,
	platform   TEXT NOT NULL,
	insecure   INTEGER NOT NULL,
	keychain   INTEGER NOT NULL,
	replica    TEXT NOT NULL,
	updated_at INTEGER,
	PRIMARY KEY (scope, ref)
);
`,
	// 14: the snapshot directory (every team's snapshots, for every
	// replica). data holds the rest of the record as JSON; last_used is a
	// column of its own, which touches move.
	`
CREATE TABLE snapshot_refs (
	id        TEXT PRIMARY KEY,
	team      TEXT NOT NULL,
	data      TEXT NOT NULL,
	last_used INTEGER
);
`,
	// 15: a team's snapshots listed from the directory, by any replica:
	// the creation time as a column of its own, for the page order.
	`
ALTER TABLE snapshot_refs ADD COLUMN created_at INTEGER;
UPDATE snapshot_refs SET created_at = CAST(round(unixepoch(json_extract(data, '$.createdAt'), 'subsec') * 1000) AS INTEGER);
CREATE INDEX snapshot_refs_team ON snapshot_refs (team, created_at, id);
CREATE INDEX snapshot_refs_page ON snapshot_refs (created_at, id);
`,
}
