package mongo_test

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
	mgo "go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/paddock-dev/paddock/internal/store"
	"github.com/paddock-dev/paddock/internal/store/mongo"
	"github.com/paddock-dev/paddock/internal/store/storetest"
)

// ferret is one embedded FerretDB (SQLite backend) for the whole test
// binary; every store gets a database of its own in it.
var ferret struct {
	once sync.Once
	uri  string
	err  error
}

// ferretURI starts FerretDB on 127.0.0.1 on first use. It runs until the
// test binary exits; its files live in a temporary directory that TestMain
// removes.
func ferretURI(t testing.TB) string {
	t.Helper()
	ferret.once.Do(func() {
		dir, err := os.MkdirTemp("", "paddock-ferretdb-")
		if err != nil {
			ferret.err = err
			return
		}
		ferretDir = dir
		f, err := ferretdb.New(&ferretdb.Config{
			Listener:  ferretdb.ListenerConfig{TCP: "127.0.0.1:0"},
			Handler:   "sqlite",
			SQLiteURL: "file:" + dir + "/",
			Logger:    ferretLogger(),
		})
		if err != nil {
			ferret.err = err
			return
		}
		ctx, cancel := context.WithCancel(context.Background())
		ferretStop = cancel
		done := make(chan struct{})
		ferretDone = done
		go func() {
			defer close(done)
			f.Run(ctx)
		}()
		ferret.uri = f.MongoDBURI()
	})
	if ferret.err != nil {
		t.Fatalf("start FerretDB: %v", ferret.err)
	}
	return ferret.uri
}

var (
	ferretDir  string
	ferretStop context.CancelFunc
	ferretDone chan struct{}
	dbSeq      atomic.Int64
)

func TestMain(m *testing.M) {
	code := m.Run()
	if ferretStop != nil {
		ferretStop()
		<-ferretDone
	}
	if ferretDir != "" {
		os.RemoveAll(ferretDir)
	}
	os.Exit(code)
}

func openDB(t testing.TB, uri, db string) *mongo.Store {
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

// newDB names a fresh database for one test.
func newDB() string { return fmt.Sprintf("paddock_test_%d_%d", os.Getpid(), dbSeq.Add(1)) }

func runSuite(t *testing.T, uri string) {
	storetest.Run(t,
		func(t *testing.T) store.Store { return openDB(t, uri, newDB()) },
		storetest.Reopen(func(t *testing.T, closed store.Store) store.Store {
			m := closed.(*mongo.Store)
			return openDB(t, m.URI(), m.Database())
		}))
}

func TestFerretDB(t *testing.T) {
	runSuite(t, ferretURI(t))
}

// TestMongoDB runs the suite against a real server when
// PADDOCK_TEST_MONGODB_URI names one, in databases named
// paddock_test_<pid>_<n> that it drops after each test.
func TestMongoDB(t *testing.T) {
	uri := os.Getenv("PADDOCK_TEST_MONGODB_URI")
	if uri == "" {
		t.Skip("PADDOCK_TEST_MONGODB_URI is not set")
	}
	open := func(t *testing.T, db string) *mongo.Store {
		s := openDB(t, uri, db)
		return s
	}
	storetest.Run(t,
		func(t *testing.T) store.Store {
			db := newDB()
			t.Cleanup(func() { dropDB(t, uri, db) }) // after the stores' Close: cleanups run last first
			return open(t, db)
		},
		storetest.Reopen(func(t *testing.T, closed store.Store) store.Store {
			return open(t, closed.(*mongo.Store).Database())
		}))
}

func dropDB(t *testing.T, uri, db string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := mgo.Connect(options.Client().ApplyURI(uri))
	if err != nil {
		t.Errorf("drop %s: %v", db, err)
		return
	}
	defer c.Disconnect(ctx)
	if err := c.Database(db).Drop(ctx); err != nil {
		t.Errorf("drop %s: %v", db, err)
	}
}

// ferretLogger discards FerretDB's log unless PADDOCK_TEST_FERRETDB_LOG is set.
func ferretLogger() *slog.Logger {
	if os.Getenv("PADDOCK_TEST_FERRETDB_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return slog.New(slog.DiscardHandler)
}

func bench(b *testing.B, f func(*testing.B, store.Store)) {
	f(b, openDB(b, ferretURI(b), newDB()))
}

func BenchmarkPutSandbox(b *testing.B)     { bench(b, storetest.BenchPutSandbox) }
func BenchmarkGetTokenByHash(b *testing.B) { bench(b, storetest.BenchGetTokenByHash) }
func BenchmarkAppendEvent(b *testing.B)    { bench(b, storetest.BenchAppendEvent) }
func BenchmarkUpdateProject(b *testing.B)  { bench(b, storetest.BenchUpdateProject) }
