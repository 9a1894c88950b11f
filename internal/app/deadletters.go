package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/deadletter"
	"github.com/iot-mns-bridge/iot-mns-bridge/config"
)

// deadLetters writes dead letters to the configured targets: the JSONL file,
// the MNS queue, or both (an entry counts as stored only when every target
// has it). It implements bridge.DeadLetterSink. The file is opened by Open,
// not when the bridge is provisioned, so that "check" never takes the lock a
// running daemon holds.
type deadLetters struct {
	path  string
	file  *deadletter.File
	sink  bridge.Sink
	queue string
}

func newDeadLetters(cfg *config.Config, sink bridge.Sink) *deadLetters {
	return &deadLetters{path: cfg.Delivery.DeadLetter.File, sink: sink, queue: cfg.Delivery.DeadLetter.Queue}
}

// Open opens (or creates) the dead-letter file, if one is configured.
func (d *deadLetters) Open() error {
	if d.path == "" || d.file != nil {
		return nil
	}
	f, err := deadletter.OpenFile(d.path)
	if err != nil {
		return fmt.Errorf("delivery.dead_letter.file: %w", err)
	}
	d.file = f
	return nil
}

func toEntry(e bridge.DeadLetter) deadletter.Entry {
	dest := ""
	if e.Dest.Kind != 0 {
		dest = e.Dest.String()
	}
	m := e.Message
	return deadletter.Entry{
		Time: e.Time, Reason: e.Reason, Destination: dest, Topic: m.Topic, MessageID: m.MessageID,
		GenerateTime: m.GenerateTime, Body: m.Body, Properties: m.Properties, Attempts: e.Attempts,
	}
}

// DeadLetter stores entries in the file (fsynced) and then the queue. A
// retry after a partial failure may write an entry twice.
func (d *deadLetters) DeadLetter(ctx context.Context, entries []bridge.DeadLetter) error {
	conv := make([]deadletter.Entry, len(entries))
	for i, e := range entries {
		conv[i] = toEntry(e)
	}
	if d.path != "" {
		if d.file == nil {
			return errors.New("delivery.dead_letter.file is not open")
		}
		if err := d.file.Write(conv...); err != nil {
			return err
		}
	}
	if d.queue == "" {
		return nil
	}
	outs := make([]bridge.Outgoing, len(conv))
	for i, e := range conv {
		body, err := json.Marshal(e)
		if err != nil {
			return fmt.Errorf("dead-letter entry %s: %w", e.MessageID, err)
		}
		outs[i] = bridge.Outgoing{Body: body, ID: e.MessageID}
	}
	errs := d.sink.Send(ctx, bridge.Destination{Kind: bridge.Queue, Name: d.queue}, outs)
	var failed []error
	for i, err := range errs {
		// An entry the queue refuses for good (say, too large) is stored
		// all the same when the file has it; otherwise it stays held.
		if err != nil && (d.path == "" || bridge.Retryable(err)) {
			failed = append(failed, fmt.Errorf("dead-letter queue %s, message %s: %w", d.queue, conv[i].MessageID, err))
		}
	}
	return errors.Join(failed...)
}

// Close closes the file, if open.
func (d *deadLetters) Close() error {
	if d.file == nil {
		return nil
	}
	err := d.file.Close()
	d.file = nil
	return err
}
