//go:build unix

package config

import "syscall"

// writable reports whether this process may create entries in the
// directory dir.
func writable(dir string) bool { return syscall.Access(dir, 2 /* W_OK */) == nil }
