package deploy_test

import (
	"testing"

	"github.com/paddock-dev/paddock/internal/k8stest"
)

func mainWithCluster(m *testing.M) int { return k8stest.Main(m) }
