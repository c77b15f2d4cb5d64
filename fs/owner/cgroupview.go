package owner

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/tempfs/tempfs/fs/mountinfo"
)

// A cgroup path in /proc/PID/cgroup is relative to the root of the reader's cgroup namespace. A daemon in the
// host's namespace reads absolute paths; a daemon in a namespace of its own (a container) reads the cgroups
// of callers outside it as "/../pod", which no path below its own cgroup2 mount reaches. cgroupView turns
// what /proc shows into the cgroup's name as the host sees it (what user.tempfs.owner answers) and the
// directory where its cgroup.events is watched.

// cgroupView locates callers' cgroups.
type cgroupView struct {
	// root is the directory of the cgroup named by mountRoot: a cgroup2 mount point, or the host's cgroup2
	// mount reached through /proc/1/root.
	root      string
	mountRoot string // the cgroup root shows, in the names locate gives; "/" for a mount of the whole tree
	// nsRoot is the name, in the names locate gives, of the root of the daemon's cgroup namespace: "/" when
	// the daemon's view starts there.
	nsRoot string
}

// locate turns a path read from /proc/PID/cgroup into the cgroup's name (as the widest view the daemon has
// names it) and its directory. ok is false for a cgroup outside what the view reaches.
func (v cgroupView) locate(shown string) (name, dir string, ok bool) {
	name, ok = joinCgroup(v.nsRoot, shown)
	if !ok {
		return "", "", false
	}
	rel, ok := cutCgroupPrefix(name, v.mountRoot)
	if !ok {
		return "", "", false
	}
	return name, filepath.Join(v.root, rel), true
}

// joinCgroup resolves a path relative to a cgroup namespace's root ("/../pod" for a sibling of the root)
// against that root's name. It fails for a path that climbs above the top of the names: a cgroup the view
// does not reach.
func joinCgroup(root, shown string) (string, bool) {
	if !strings.HasPrefix(shown, "/") {
		return "", false
	}
	parts := strings.Split(strings.Trim(root, "/"), "/")
	if parts[0] == "" {
		parts = nil
	}
	for _, c := range strings.Split(strings.Trim(shown, "/"), "/") {
		switch c {
		case "", ".":
		case "..":
			if len(parts) == 0 {
				return "", false
			}
			parts = parts[:len(parts)-1]
		default:
			parts = append(parts, c)
		}
	}
	return "/" + strings.Join(parts, "/"), true
}

// dirOf is the directory of a cgroup named as locate names it.
func (v cgroupView) dirOf(name string) string {
	rel, _ := cutCgroupPrefix(name, v.mountRoot)
	return filepath.Join(v.root, rel)
}

// cutCgroupPrefix returns name relative to the cgroup prefix, if name is prefix or lies under it.
func cutCgroupPrefix(name, prefix string) (string, bool) {
	if prefix == "/" {
		return name, true
	}
	if name == prefix {
		return "/", true
	}
	rel, ok := strings.CutPrefix(name, prefix+"/")
	return "/" + rel, ok
}

// cgroupMount is one cgroup2 mount of a mount table.
type cgroupMount struct {
	point string // where it is mounted
	root  string // the cgroup at its root, as the reader's cgroup namespace names it
}

// cgroup2Mounts lists the cgroup2 mounts of a mountinfo table, in its order.
func cgroup2Mounts(table []byte) []cgroupMount {
	var mounts []cgroupMount
	for _, m := range mountinfo.Parse(table) {
		if m.FSType == "cgroup2" {
			mounts = append(mounts, cgroupMount{point: m.Point, root: m.Root})
		}
	}
	return mounts
}

// cgroup2Mount picks, of the cgroup2 mounts a path reaches, where the daemon finds the hierarchy:
// /sys/fs/cgroup on a unified layout, /sys/fs/cgroup/unified on a hybrid one, never assumed. A mount of the
// whole tree (root "/") is preferred to one of a subtree.
func cgroup2Mount(visible []cgroupMount) (cgroupMount, error) {
	for _, m := range visible {
		if m.root == "/" {
			return m, nil
		}
	}
	if len(visible) > 0 {
		return visible[0], nil
	}
	return cgroupMount{}, errors.New("no cgroup v2 hierarchy is mounted (--owner cgroup needs one; see /proc/self/mountinfo)")
}

// visibleCgroup2Mounts are the cgroup2 mounts a path reaches: not those that a later mount (of any kind) at
// the same point or above it hides.
func visibleCgroup2Mounts(table []byte) []cgroupMount {
	type entry struct {
		point   string
		cgroup2 *cgroupMount
	}
	var entries []entry
	for _, m := range mountinfo.Parse(table) {
		e := entry{point: m.Point}
		if m.FSType == "cgroup2" {
			e.cgroup2 = &cgroupMount{point: m.Point, root: m.Root}
		}
		entries = append(entries, e)
	}
	var visible []cgroupMount
	for i, e := range entries {
		if e.cgroup2 == nil {
			continue
		}
		hidden := slices.ContainsFunc(entries[i+1:], func(later entry) bool {
			return later.point == e.point || strings.HasPrefix(e.point, strings.TrimSuffix(later.point, "/")+"/")
		})
		if !hidden {
			visible = append(visible, *e.cgroup2)
		}
	}
	return visible
}

// newCgroupView finds how this daemon sees callers' cgroups. Where its cgroup namespace's root is the root of
// the whole tree (no namespace, or one at the root), its own cgroup2 mount shows every cgroup. A daemon in a
// namespace of its own below the root (a container) reads the cgroups of callers outside it as "/../pod": it
// needs a wider view, which it takes from process 1 (when that is the host's, as with hostPID, and the daemon
// may look at it) or from a cgroup2 mount of its own table that shows more than its namespace. Without one it
// still serves; callers outside its namespace make unowned entries, and the log says so.
func newCgroupView(selfMountinfo []byte, log *slog.Logger) (cgroupView, error) {
	mounts := visibleCgroup2Mounts(selfMountinfo)
	own, ownErr := cgroup2Mount(mounts)
	if ownErr == nil && own.root == "/" && isTreeRoot(own.point) {
		return cgroupView{root: own.point, mountRoot: "/", nsRoot: "/"}, nil
	}
	var why []string
	if view, err := processOneView(); err == nil {
		return view, nil
	} else {
		why = append(why, err.Error())
	}
	for _, m := range mounts {
		if !strings.HasPrefix(m.root, "/..") {
			continue
		}
		view, err := widerView(m.point)
		if err == nil {
			return view, nil
		}
		why = append(why, err.Error())
	}
	if ownErr != nil {
		return cgroupView{}, ownErr
	}
	log.Warn("--owner cgroup: this daemon runs in a cgroup namespace of its own (as in a container) and sees "+
		"no cgroup outside it, so entries made by callers outside it will be unowned (kept as with --owner "+
		"none); run it in the host's cgroup namespace (docker run --cgroupns=host), or as root with the host's "+
		"PID namespace (Kubernetes: hostPID: true), to tell them apart", "mount", own.point, "why", strings.Join(why, "; "))
	return cgroupView{root: own.point, mountRoot: own.root, nsRoot: "/"}, nil
}

// isTreeRoot reports whether a cgroup2 directory is the root of the whole tree: the root cgroup alone has no
// cgroup.events.
func isTreeRoot(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "cgroup.events"))
	return errors.Is(err, os.ErrNotExist)
}

// processOneView reaches process 1's cgroup tree through /proc/1/root, when process 1 is in another cgroup
// namespace (the host's, for a daemon with the host's PID namespace) and the daemon may look into it.
func processOneView() (cgroupView, error) {
	mine, err := os.Readlink("/proc/self/ns/cgroup")
	if err != nil {
		return cgroupView{}, err
	}
	if theirs, err := os.Readlink("/proc/1/ns/cgroup"); err != nil {
		return cgroupView{}, err
	} else if theirs == mine {
		return cgroupView{}, errors.New("process 1 shares this daemon's cgroup namespace")
	}
	table, err := os.ReadFile("/proc/1/mountinfo")
	if err != nil {
		return cgroupView{}, err
	}
	mounts := visibleCgroup2Mounts(table)
	if len(mounts) == 0 {
		return cgroupView{}, errors.New("process 1 has no cgroup2 mount")
	}
	return widerView(filepath.Join("/proc/1/root", mounts[0].point))
}

// widerView names cgroups as a cgroup2 mount that shows more than the daemon's namespace names them: it
// finds the daemon's own cgroup there, and so its namespace's root.
func widerView(root string) (cgroupView, error) {
	var sfs unix.Statfs_t
	if err := unix.Statfs(root, &sfs); err != nil {
		return cgroupView{}, err
	} else if sfs.Type != unix.CGROUP2_SUPER_MAGIC {
		return cgroupView{}, fmt.Errorf("%s is not a cgroup2 mount", root)
	}
	shown, err := readCgroup(uint32(os.Getpid()))
	if err != nil {
		return cgroupView{}, err
	}
	there, err := findProcessCgroup(root, os.Getpid())
	if err != nil {
		return cgroupView{}, err
	}
	nsRoot, ok := namespaceRoot(there, shown)
	if !ok {
		return cgroupView{}, fmt.Errorf("this daemon's cgroup %s (%s in its namespace) lies outside its namespace's root", there, shown)
	}
	return cgroupView{root: root, mountRoot: "/", nsRoot: nsRoot}, nil
}

// namespaceRoot is the name, in a wider view, of the root of a cgroup namespace in which a process whose
// cgroup that view names hostName shows as shown.
func namespaceRoot(hostName, shown string) (string, bool) {
	if shown == "/" {
		return hostName, true
	}
	if strings.Contains(shown, "/..") {
		return "", false
	}
	// shown begins with "/", so the cut falls on a component boundary.
	root, ok := strings.CutSuffix(hostName, shown)
	if !ok {
		return "", false
	}
	if root == "" {
		root = "/"
	}
	return root, true
}

// findProcessCgroup walks a cgroup2 tree for the cgroup whose cgroup.procs lists pid, and returns its name
// relative to the tree's root. It runs once, at start: a node has hundreds to a few thousand cgroups.
func findProcessCgroup(root string, pid int) (string, error) {
	want := []byte(strconv.Itoa(pid))
	found := ""
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil // a cgroup removed meanwhile, or a file: go on
		}
		data, err := os.ReadFile(filepath.Join(p, "cgroup.procs"))
		if err != nil {
			return nil
		}
		for line := range bytes.Lines(data) {
			if bytes.Equal(bytes.TrimSpace(line), want) {
				rel, _ := filepath.Rel(root, p)
				found = path.Join("/", filepath.ToSlash(rel))
				return filepath.SkipAll
			}
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	if found == "" {
		return "", fmt.Errorf("process %d is in no cgroup under %s", pid, root)
	}
	return found, nil
}
