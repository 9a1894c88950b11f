package config

import "syscall"

// fsSpace returns the size of the filesystem that holds path and the bytes
// of it this process may still use (statfs: f_blocks and f_bavail in
// f_frsize units); ok is false when it cannot tell.
func fsSpace(path string) (total, free uint64, ok bool) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return 0, 0, false
	}
	unit := uint64(st.Frsize)
	if unit == 0 {
		unit = uint64(st.Bsize)
	}
	return uint64(st.Blocks) * unit, uint64(st.Bavail) * unit, true
}

// fsID returns the id of the filesystem that holds path (st_dev); ok is
// false when it cannot tell.
func fsID(path string) (id uint64, ok bool) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0, false
	}
	return uint64(st.Dev), true
}
