// Package image keeps the OCI and Docker images sandboxes start from, under
// <data>/images/: pulled from a registry or imported from a docker-archive
// tar or an OCI layout. Each layer is unpacked once into
// layers/<diff ID hex>/ with whiteouts and opaque directories converted to
// overlayfs's own form, so the layer directories stack directly as
// read-only overlay lowerdirs beneath a per-sandbox writable layer. Layers
// are content-addressed, so re-pulling an image never changes one a running
// sandbox uses, and they are hostile input: see unpack_linux.go for what is
// rejected and what is neutralised. Refs are scoped per team (store.go).
// Replicas sharing a database share their refs through a Directory
// (directory.go): each keeps its own layers, and pulls by digest, when a
// sandbox needs it, an image another replica pulled.
//
// The Store also keeps snapshots (snapshot.go): a sandbox's writable layer,
// copied by its driver into a layer of the store, over the sandbox's own
// layers. The "host" image, the host's own /usr, is internal/hostimage's.
package image
