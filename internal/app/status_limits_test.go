package app

import (
	"testing"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/sinks/mns"
)

// TestRecordingSinkKeepsTheSinkLimits: the status wrapper around the MNS
// sink passes its request limits on, so the pipeline batches within them
// (one batch is one BatchSendMessage) rather than by its settings alone.
func TestRecordingSinkKeepsTheSinkLimits(t *testing.T) {
	cfg := mnsTestConfig("http://127.0.0.1:1")
	c, err := mns.NewClient(mnsConfig(&cfg, staticKey("id", "secret")))
	if err != nil {
		t.Fatal(err)
	}
	var s bridge.Sink = recordingSink{Sink: mns.NewSink(c), rec: &requestRecord{}}
	ls, ok := s.(bridge.LimitedSink)
	if !ok {
		t.Fatal("the recording sink hides the MNS sink's limits")
	}
	lim := ls.Limits(bridge.Destination{Kind: bridge.Queue, Name: "q"})
	if lim.Messages != mns.MaxBatchCount || lim.Bytes != mns.MaxBatchBytes || lim.Size == nil {
		t.Fatalf("limits %+v, want the MNS batch limits", lim)
	}
	if n := lim.Size(&bridge.Outgoing{}, 48<<10); n != 64<<10 {
		t.Errorf("a 48 KiB body counts %d bytes, want its base64 length 65536", n)
	}
}
