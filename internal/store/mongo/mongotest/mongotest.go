// Package mongotest gives tests a MongoDB-wire server: one embedded
// FerretDB (SQLite backend, 127.0.0.1:0) per test binary, started on first
// use, with a fresh database for each store. A test binary that uses it
// calls Main from its TestMain, which stops FerretDB and removes its files.
package mongotest

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"

	"github.com/paddock-dev/paddock/internal/store/mongo"
)

// ferret is the test binary's one FerretDB.
var ferret struct {
	once sync.Once
	uri  string
	err  error
	dir  string             // its files
	stop context.CancelFunc // ends Run
	done chan struct{}      // closed when Run returns
}

var dbSeq atomic.Int64

// URI starts FerretDB on first use and returns its address. It runs until
// Main stops it.
func URI(t testing.TB) string {
	t.Helper()
	ferret.once.Do(func() {
		dir, err := os.MkdirTemp("", "paddock-ferretdb-")
		if err != nil {
			ferret.err = err
			return
		}
		ferret.dir = dir
		f, err := ferretdb.New(&ferretdb.Config{
			Listener:  ferretdb.ListenerConfig{TCP: "127.0.0.1:0"},
			Handler:   "sqlite",
			SQLiteURL: "file:" + dir + "/",
			Logger:    logger(),
		})
		if err != nil {
			ferret.err = err
			return
		}
		ctx, cancel := context.WithCancel(context.Background())
		ferret.stop, ferret.done = cancel, make(chan struct{})
		go func() {
			defer close(ferret.done)
			f.Run(ctx)
		}()
		ferret.uri = f.MongoDBURI()
	})
	if ferret.err != nil {
		t.Fatalf("start FerretDB: %v", ferret.err)
	}
	return ferret.uri
}

// Main runs the tests, then stops FerretDB (if a test started it) and
// removes its files; it exits with the tests' code.
func Main(m *testing.M) {
	code := m.Run()
	Stop()
	os.Exit(code)
}

// Stop stops FerretDB, if a test started it, and removes its files: for a
// TestMain whose tests run through another package's Main (k8stest.Main),
// after it returns.
func Stop() {
	if ferret.stop != nil {
		ferret.stop()
		<-ferret.done
	}
	if ferret.dir != "" {
		os.RemoveAll(ferret.dir)
	}
}

// NewDB names a fresh database: paddock_test_<pid>_<n>.
func NewDB() string { return fmt.Sprintf("paddock_test_%d_%d", os.Getpid(), dbSeq.Add(1)) }

// Open opens a store on database db at uri and closes it when the test ends.
func Open(t testing.TB, uri, db string) *mongo.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := mongo.Open(ctx, uri, db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// Store opens a store on a fresh database of the test binary's FerretDB.
func Store(t testing.TB) *mongo.Store { return Open(t, URI(t), NewDB()) }

// logger discards FerretDB's log unless PADDOCK_TEST_FERRETDB_LOG is set.
func logger() *slog.Logger {
	if os.Getenv("PADDOCK_TEST_FERRETDB_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return slog.New(slog.DiscardHandler)
}
