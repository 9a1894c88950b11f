//go:build linux

package spool

import "syscall"

// dropPages unmaps the pages of the shared read-only file mapping at addr,
// n bytes long, from the process (madvise MADV_DONTNEED); their contents
// stay in the page cache, and a later access maps them again. It is best
// effort: an error leaves them mapped.
func dropPages(addr uintptr, n int) {
	syscall.Syscall(syscall.SYS_MADVISE, addr, uintptr(n), syscall.MADV_DONTNEED)
}
