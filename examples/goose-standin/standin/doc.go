// Package standin is a stand-in for goose's agent server (goosed v1.31): the
// same HTTP API, wire shapes, status codes and SSE framing as
// shared/reference/goosed-api.md describes, with a deterministic "LLM" that
// answers user text T with "echo: T", streamed in a few chunks.
//
// Paddock runs it as a project's app inside a sandbox, and paddock's tests
// import it to serve the API in-process. What it keeps:
//
//   - X-Secret-Key auth (constant time; 401 with an empty body) on every
//     route except /status, /features and the MCP-app iframe pages;
//     permissive CORS answered before auth, as goosed does;
//   - POST /agent/start, /agent/resume, /agent/stop, /agent/update_provider;
//   - GET /sessions, GET and DELETE /sessions/{id}, export and import;
//   - POST /reply: the legacy SSE stream of `data: <MessageEvent>` frames
//     with a {"type":"Ping"} every PingInterval;
//   - GET /sessions/{id}/events, POST /sessions/{id}/reply and
//     /sessions/{id}/cancel: the session event bus, with `id: <seq>`
//     frames, `: ping <n>` heartbeats, a 512-event replay buffer and
//     Last-Event-ID replay;
//   - POST /config/read, /config/upsert, /config/remove and GET /features;
//   - sessions persisted as one JSON file each under
//     <data>/sessions/, written atomically (temp file, fsync, rename,
//     fsync of the directory), so a new process on the same directory
//     (GOOSE_PATH_ROOT) has them back. Event sequence numbers are kept in
//     memory only and start again at 1, as goosed's do.
//
// Request bodies are rejected as axum's Json extractor rejects them: 415
// without a JSON content type, 400 for malformed JSON, 422 for a body of
// the wrong shape, 413 past the route's limit (50 MiB for the reply
// routes, 25 MiB for import, 2 MiB elsewhere).
package standin
