package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// settle is how long the checks after the load poll for the kernel's asynchronous RELEASEs (docs/guarantees.md,
// Lifetimes: a template file goes within milliseconds after its last close, not necessarily before close returns).
const settle = 15 * time.Second

// tree is what a walk of the mount saw.
type tree struct {
	files, dirs, others int64           // distinct inodes by type, the root not counted
	regular             map[string]bool // regular files outside stress-ng's directory, by path below the mount
	sngLeft             []string        // entries in stress-ng's directory
	problems            []string        // readdir or lstat errors, template names listed
}

// walk reads every directory of the mount (readdir) and lstats every entry it lists.
func walk(mnt, sngDir string) *tree {
	t := &tree{regular: map[string]bool{}}
	seen := map[uint64]bool{}
	var visit func(dir string)
	visit = func(dir string) {
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.problems = append(t.problems, fmt.Sprintf("readdir %s: %v", dir, err))
		}
		for _, e := range ents {
			p := filepath.Join(dir, e.Name())
			r := rel(mnt, p)
			if isTemplate(e.Name()) {
				t.problems = append(t.problems, fmt.Sprintf("readdir %s lists a template name %q", dir, e.Name()))
			}
			if strings.HasPrefix(p, sngDir+"/") {
				t.sngLeft = append(t.sngLeft, r)
			}
			var st unix.Stat_t
			if err := unix.Lstat(p, &st); err != nil {
				t.problems = append(t.problems, fmt.Sprintf("readdir %s lists %q, but lstat says %v", dir, e.Name(), err))
				continue
			}
			first := !seen[st.Ino]
			seen[st.Ino] = true
			switch st.Mode & unix.S_IFMT {
			case unix.S_IFDIR:
				t.dirs++
				visit(p)
			case unix.S_IFREG:
				if first {
					t.files++
				}
				if !strings.HasPrefix(p, sngDir+"/") {
					t.regular[r] = true
				}
			default:
				if first {
					t.others++
				}
			}
		}
	}
	visit(mnt)
	return t
}

// checkTree checks the tree once the load is over, with the workload's kept files still there: stress-ng left
// nothing behind, every directory reads and every listed entry stats, no template name is listed, the files are
// exactly the kept ones (every other template file went at its last close), no handle is open, and the stats
// count what the walk counts.
func checkTree(o options, wl *workload, sngDir string) *tree {
	deadline := time.Now().Add(settle)
	var t *tree
	var st stats
	var diffs []string
	for {
		t = walk(o.mnt, sngDir)
		var err error
		st, err = readStats(o.mnt)
		diffs = diffs[:0]
		if err != nil {
			diffs = append(diffs, err.Error())
		} else {
			if st.OpenHandles != 0 {
				diffs = append(diffs, fmt.Sprintf("user.tempfs.stats open_handles=%d with nothing open", st.OpenHandles))
			}
			if st.Files != t.files || st.Dirs != t.dirs || st.Others != t.others || st.Entries != t.files+t.dirs+t.others {
				diffs = append(diffs, fmt.Sprintf("user.tempfs.stats says entries=%d files=%d dirs=%d others=%d; "+
					"a walk counts files=%d dirs=%d others=%d", st.Entries, st.Files, st.Dirs, st.Others, t.files, t.dirs, t.others))
			}
		}
		var extra, missing []string
		for r := range t.regular {
			if wl.kept[r] == nil {
				extra = append(extra, r)
			}
		}
		for r := range wl.kept {
			if !t.regular[r] {
				missing = append(missing, r)
			}
		}
		if len(extra) > 0 {
			slices.Sort(extra)
			diffs = append(diffs, fmt.Sprintf("%d files listed that the workload did not keep (template files must go at "+
				"their last close): %s", len(extra), first(extra, 10)))
		}
		if len(missing) > 0 {
			slices.Sort(missing)
			diffs = append(diffs, fmt.Sprintf("%d kept files are not listed: %s", len(missing), first(missing, 10)))
		}
		if len(diffs) == 0 && len(t.problems) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, d := range diffs {
		fail("after the load (polled %v): %s", settle, d)
	}
	for _, p := range head(t.problems, 20) {
		fail("after the load: %s", p)
	}
	if len(t.sngLeft) > 0 {
		fail("stress-ng left %d entries in its --temp-path after it exited: %s", len(t.sngLeft), first(t.sngLeft, 10))
	}
	logf("after the load: tree of %d files, %d dirs, %d others (stats: entries %d, open_handles %d); %d kept files",
		t.files, t.dirs, t.others, st.Entries, st.OpenHandles, len(wl.kept))
	return t
}

// verifyKept reopens every kept file and checks its data, size, tier and lifetime.
func verifyKept(o options, wl *workload) {
	buf := make([]byte, 4*o.maxSize+1)
	n := 0
	for _, k := range wl.kept {
		if wl.verify(k, buf) {
			n++
		}
	}
	logf("verified %d of %d kept files (data, size, spool tier, lifetime)", n, len(wl.kept))
}

// removeAll removes the kept files and the directories of the load.
func removeAll(o options, wl *workload, dirs ...string) {
	for r := range wl.kept {
		if err := unix.Unlink(filepath.Join(o.mnt, r)); err != nil {
			fail("unlink kept file %s: %v", r, err)
		}
	}
	for _, d := range dirs {
		if err := os.RemoveAll(d); err != nil {
			fail("rm -r %s: %v", d, err)
		}
	}
	if ents, err := os.ReadDir(o.mnt); err != nil || len(ents) > 0 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		fail("after removing everything, readdir of the mount gives %v (%v), want nothing", names, err)
	}
}

// idle is the daemon's state once everything was removed.
type idle struct {
	fds   fdCounts
	stats stats
}

// checkIdle polls until the daemon is back to an empty tree and its baseline of descriptors: no entry, no open
// handle, no file data in RAM or on disk, no memfd or backing file left open, other descriptors within the slack.
func checkIdle(o options, storeDir string, base fdCounts) idle {
	deadline := time.Now().Add(settle)
	var cur idle
	var diffs []string
	for {
		diffs = diffs[:0]
		if !alive(o.pid) {
			fail("the daemon (pid %d) died after the load", o.pid)
			return cur
		}
		c, err := snapshotFDs(o.pid, storeDir)
		if err != nil {
			diffs = append(diffs, "reading the daemon's descriptors: "+err.Error())
		}
		cur.fds = c
		if c.memfd > base.memfd {
			diffs = append(diffs, fmt.Sprintf("%d memfds open, %d before the load (RAM file data not released)", c.memfd, base.memfd))
		}
		if c.store > base.store {
			diffs = append(diffs, fmt.Sprintf("%d descriptors on the store, %d before the load (backing files not closed)", c.store, base.store))
		}
		if c.other > base.other+o.fdSlack {
			diffs = append(diffs, fmt.Sprintf("%d other descriptors, %d before the load (slack %d)", c.other, base.other, o.fdSlack))
		}
		if c.pipe > base.pipe+o.pipeSlack {
			diffs = append(diffs, fmt.Sprintf("%d pipe descriptors, %d before the load (slack %d for go-fuse's splice pool)", c.pipe, base.pipe, o.pipeSlack))
		}
		st, err := readStats(o.mnt)
		cur.stats = st
		if err != nil {
			diffs = append(diffs, err.Error())
		} else if st.Entries != 0 || st.Files != 0 || st.Dirs != 0 || st.Others != 0 || st.OpenHandles != 0 || st.RAMBytes != 0 ||
			st.DiskBytes != 0 || st.MemoryFiles != 0 || st.DiskFiles != 0 {
			diffs = append(diffs, fmt.Sprintf("user.tempfs.stats of an empty mount says entries=%d files=%d dirs=%d others=%d "+
				"open_handles=%d ram_bytes=%d disk_bytes=%d memory_files=%d disk_files=%d, want all 0",
				st.Entries, st.Files, st.Dirs, st.Others, st.OpenHandles, st.RAMBytes, st.DiskBytes, st.MemoryFiles, st.DiskFiles))
		}
		if len(diffs) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, d := range diffs {
		fail("everything removed (polled %v): %s", settle, d)
	}
	if len(diffs) > 0 {
		if out, err := fdListing(o.pid); err == nil {
			fmt.Printf("the daemon's descriptors now:\n%s\n", indent(out))
		}
	}
	logf("everything removed: daemon %s", cur.fds)
	return cur
}

// fdListing is ls -l /proc/PID/fd in short.
func fdListing(pid int) (string, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for i, e := range ents {
		if i == 200 {
			fmt.Fprintf(&b, "... (%d in all)\n", len(ents))
			break
		}
		target, _ := os.Readlink(filepath.Join(dir, e.Name()))
		fmt.Fprintf(&b, "%s -> %s\n", e.Name(), target)
	}
	return b.String(), nil
}

// checkMemory checks that the daemon's resident memory stayed within the RAM cap plus a slack (file data in
// memfds counts in RSS only where the daemon maps it; the stats' ram_bytes are checked against ram_cap too).
func checkMemory(o options, s *samples) {
	m, err := readMem(o.pid)
	if err != nil {
		fail("daemon memory after the load: %v", err)
		return
	}
	s.lastMem = m
	limit := o.memory + o.rssSlack
	if m.rss > limit {
		fail("daemon VmRSS %s after the load > --memory %s + %s", mib(m.rss), mib(o.memory), mib(o.rssSlack))
	}
	if m.hwm > limit {
		fail("daemon VmHWM (peak RSS) %s > --memory %s + %s", mib(m.hwm), mib(o.memory), mib(o.rssSlack))
	}
	st, err := readStats(o.mnt)
	if err != nil {
		fail("user.tempfs.stats after the load: %v", err)
		return
	}
	if st.PeakRAMBytes > st.RAMCap {
		fail("user.tempfs.stats peak_ram_bytes %d > ram_cap %d", st.PeakRAMBytes, st.RAMCap)
	}
}

// result is what the summary prints beside the counters.
type result struct {
	base    fdCounts
	baseMem mem
	after   *tree
	final   idle
}

func summary(o options, wl *wlStats, s *samples, r *result) {
	fmt.Println()
	fmt.Println("== summary ==")
	fmt.Printf("load: %v; stress-ng %d workers each of hdd, dir, rename, link, symlink, fallocate, mmap; %d workload goroutines\n",
		o.duration, o.sngWorkers, o.workers)
	fmt.Println("mount: --max-size", o.maxSize, "--memory", o.memory)
	if log := readFile(o.sngLog); log != "" {
		fmt.Println("stress-ng:")
		for line := range strings.Lines(log) {
			if strings.Contains(line, "metrc:") || strings.Contains(line, "fail") || strings.Contains(line, "error") ||
				strings.Contains(line, "successful run") || strings.Contains(line, "unsuccessful") {
				fmt.Print("  " + line)
			}
		}
	}
	if wl != nil {
		fmt.Printf("workload: %d template files (%d past --max-size, %d rolled over by xattr, %d truncated past it), %d O_TMPFILE; %s written\n",
			wl.creates.Load(), wl.overMaxSize.Load(), wl.rolledByXattr.Load(), wl.truncatedPastMax.Load(), wl.tmpfiles.Load(), mib(wl.bytes.Load()))
		fmt.Printf("          kept %d by xattr, %d by rename, %d by linkat; %d reopened by name; %d kept files verified, %d removed; %d spool=disk checks; %d errors\n",
			wl.keptXattr.Load(), wl.keptRename.Load(), wl.keptLinkat.Load(), wl.reopened.Load(), wl.verified.Load(), wl.removed.Load(), wl.diskChecks.Load(), wl.errors.Load())
	}
	if s != nil {
		p := s.maxRSSMem
		fmt.Printf("during the load (%d samples): peak VmRSS %s at %v (anon %s, file %s, shmem %s); peak fds %s\n",
			s.n, mib(s.maxRSS), s.maxRSSAt.Round(time.Second), mib(p.anon), mib(p.file), mib(p.shmem), s.maxFDs)
		fmt.Printf("          peak ram_bytes %s of cap %s; peak open_handles %d, entries %d\n",
			mib(s.maxRAMBytes), mib(o.memory), s.maxHandles, s.maxEntries)
		if s.statsErrors > 0 {
			fmt.Printf("          %d stats reads failed, first: %s\n", s.statsErrors, s.firstStatErr)
		}
	}
	if r != nil {
		st := r.final.stats
		fmt.Printf("stats: entries_created %d, rollovers %d, spilled %s, written %s, peak_ram_bytes %s, passthrough %v\n",
			st.EntriesCreated, st.Rollovers, mib(st.SpilledBytes), mib(st.BytesWritten), mib(st.PeakRAMBytes), st.Passthrough)
		if r.after != nil {
			fmt.Printf("tree after the load: %d files, %d dirs, %d others\n", r.after.files, r.after.dirs, r.after.others)
		}
		fmt.Printf("daemon fds: before %s; after %s\n", r.base, r.final.fds)
		if s != nil {
			m := s.lastMem
			fmt.Printf("daemon memory: VmRSS before %s, after %s (anon %s, file %s, shmem %s); VmHWM %s; limit %s\n",
				mib(r.baseMem.rss), mib(m.rss), mib(m.anon), mib(m.file), mib(m.shmem), mib(m.hwm), mib(o.memory+o.rssSlack))
		}
	}
	if n := failed(); n > 0 {
		fmt.Printf("result: FAIL (%d failed checks)\n", n)
	} else {
		fmt.Println("result: PASS")
	}
}

// first joins the first n strings of s, with "..." when there are more.
func first(s []string, n int) string {
	out := strings.Join(head(s, n), ", ")
	if len(s) > n {
		out += ", ..."
	}
	return out
}

// head is the first n strings of s.
func head(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
