package mongo_test

import (
	"context"
	"os"
	"testing"
	"time"

	mgo "go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/paddock-dev/paddock/internal/store"
	"github.com/paddock-dev/paddock/internal/store/mongo"
	"github.com/paddock-dev/paddock/internal/store/mongo/mongotest"
	"github.com/paddock-dev/paddock/internal/store/storetest"
)

func TestMain(m *testing.M) { mongotest.Main(m) }

func runSuite(t *testing.T, uri string) {
	storetest.Run(t,
		func(t *testing.T) store.Store { return mongotest.Open(t, uri, mongotest.NewDB()) },
		storetest.Reopen(func(t *testing.T, closed store.Store) store.Store {
			m := closed.(*mongo.Store)
			return mongotest.Open(t, m.URI(), m.Database())
		}))
}

func TestFerretDB(t *testing.T) {
	runSuite(t, mongotest.URI(t))
}

// TestMongoDB runs the suite against a real server when
// PADDOCK_TEST_MONGODB_URI names one, in databases named
// paddock_test_<pid>_<n> that it drops after each test.
func TestMongoDB(t *testing.T) {
	uri := os.Getenv("PADDOCK_TEST_MONGODB_URI")
	if uri == "" {
		t.Skip("PADDOCK_TEST_MONGODB_URI is not set")
	}
	storetest.Run(t,
		func(t *testing.T) store.Store {
			db := mongotest.NewDB()
			t.Cleanup(func() { dropDB(t, uri, db) }) // after the stores' Close: cleanups run last first
			return mongotest.Open(t, uri, db)
		},
		storetest.Reopen(func(t *testing.T, closed store.Store) store.Store {
			return mongotest.Open(t, uri, closed.(*mongo.Store).Database())
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

func bench(b *testing.B, f func(*testing.B, store.Store)) {
	f(b, mongotest.Store(b))
}

func BenchmarkPutSandbox(b *testing.B)     { bench(b, storetest.BenchPutSandbox) }
func BenchmarkGetTokenByHash(b *testing.B) { bench(b, storetest.BenchGetTokenByHash) }
func BenchmarkAppendEvent(b *testing.B)    { bench(b, storetest.BenchAppendEvent) }
func BenchmarkUpdateProject(b *testing.B)  { bench(b, storetest.BenchUpdateProject) }
