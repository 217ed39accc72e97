package metrics

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestRelayedExposition checks that the relay's byte counters are exported
// as the counter family they replaced: one series per direction.
func TestRelayedExposition(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m := New(reg)
	m.BytesRelayed.ClientToServer.Add(10)
	m.BytesRelayed.ServerToClient.Add(2500)
	m.BytesRelayed.ServerToClient.Add(1)
	want := `
# HELP pgmoat_relayed_bytes_total Protocol bytes relayed, by direction.
# TYPE pgmoat_relayed_bytes_total counter
pgmoat_relayed_bytes_total{direction="client_to_server"} 10
pgmoat_relayed_bytes_total{direction="server_to_client"} 2501
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "pgmoat_relayed_bytes_total"); err != nil {
		t.Fatal(err)
	}
}
