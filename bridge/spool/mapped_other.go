//go:build !linux

package spool

// dropPages does nothing where the spool does not give mapped pages back.
func dropPages(addr uintptr, n int) {}
