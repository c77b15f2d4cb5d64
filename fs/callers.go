package fs

// processOf returns the process id of the thread behind a request, or 0 if it cannot be told (the thread is
// gone): user.tempfs.created speaks of processes, while FUSE requests carry thread ids. The mapping and its
// cache are package owner's (ThreadGroups).
func (fsys *FS) processOf(tid uint32) uint32 {
	if tid == 0 {
		return 0
	}
	tgid, err := fsys.threads.Of(tid)
	if err != nil {
		return 0
	}
	return tgid
}
