//go:build unix

package config

import "syscall"

// access is syscall.Access; a test's replaces it (a read-only filesystem).
var access = syscall.Access

// notWritable says why this process may not create entries in the
// directory dir, nil when it may: syscall.EROFS for a read-only
// filesystem, whatever the directory's owner and mode.
func notWritable(dir string) error { return access(dir, 2 /* W_OK */) }
