package state

import (
	"os"
	"testing"

	"github.com/pgmoat/pgmoat/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
