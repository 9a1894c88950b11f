// Package systemd speaks the two pieces of the systemd service protocol the
// bridge needs, without dependencies: sd_notify (READY=1, STATUS=,
// STOPPING=1, WATCHDOG=1) over $NOTIFY_SOCKET, and the watchdog interval from
// $WATCHDOG_USEC. Outside systemd both are silent no-ops.
package systemd

import (
	"context"
	"log/slog"
	"net"
	"os"
	"strconv"
	"time"
)

// Notify sends state (e.g. "READY=1") to the service manager. It returns
// nil without doing anything when $NOTIFY_SOCKET is not set. Safe for
// concurrent use.
func Notify(state string) error {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return nil
	}
	if addr[0] == '@' { // abstract socket
		addr = "\x00" + addr[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = conn.Write([]byte(state))
	return err
}

// WatchdogInterval returns the interval systemd expects pings at (half of
// WatchdogSec), or 0 when the watchdog is off for this process.
func WatchdogInterval() time.Duration {
	usec, err := strconv.ParseInt(os.Getenv("WATCHDOG_USEC"), 10, 64)
	if err != nil || usec <= 0 {
		return 0
	}
	if pid := os.Getenv("WATCHDOG_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return 0
	}
	return time.Duration(usec) * time.Microsecond / 2
}

// Watchdog pings the systemd watchdog while healthy returns nil, until ctx
// is done. When healthy fails it stops pinging (and logs it once), so that
// systemd restarts a stuck bridge. It returns at once when the watchdog is
// off.
func Watchdog(ctx context.Context, healthy func() error, log *slog.Logger) {
	every := WatchdogInterval()
	if every == 0 {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := healthy(); err != nil {
			if !failing {
				log.Error("not feeding the systemd watchdog: the pipeline is stuck", "err", err)
				failing = true
			}
			continue
		}
		if failing {
			log.Info("pipeline no longer stuck; feeding the systemd watchdog")
			failing = false
		}
		Notify("WATCHDOG=1")
	}
}
