package integration

// Real tools from separate processes on a tempfs mount: cp -a, tar, rsync and git write a tree into the mount,
// and the result must be what they made from the source (on tmpfs), metadata included; and data written across
// --max-size reads back bit for bit (docs/guarantees.md, The spool).

import (
	"bytes"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// sourceTree builds, in dir on tmpfs, a small tree with what the tools must carry over: modes (setuid, setgid,
// private), an owner other than root, hard links, relative, absolute and dangling symlinks, a fifo, xattrs on
// files and directories, odd names, and distinct nanosecond times on every entry.
const sourceTree = `
mkdir -p src/dir/sub src/private src/empty "src/with space"
printf 'hello\n' > src/file
head -c 300000 /dev/urandom > src/dir/random.bin
printf '#!/bin/sh\necho hi\n' > src/dir/script.sh; chmod 4755 src/dir/script.sh
printf secret > src/private/key; chmod 600 src/private/key; chmod 700 src/private
: > src/emptyfile
printf 'spaced\n' > "src/with space/a file"
ln src/file src/dir/sub/hardlink
ln src/file "src/with space/third link"
ln -s ../file src/dir/rel-link
ln -s /nonexistent/abs src/dangling
ln -s dir src/dirlink
chmod 2775 src/dir/sub
printf owned > src/dir/owned; chown nobody:nogroup src/dir/owned
chown -h nobody:nogroup src/dangling
mkfifo src/fifo
python3 - <<'EOF'
import os
os.setxattr("src/file", "user.color", b"blue")
os.setxattr("src/dir/random.bin", "user.bin", bytes(range(256)))
os.setxattr("src/dir", "user.dir", b"d")
os.setxattr("src/empty", "user.empty", b"")
paths = ["src"]
for root, dirs, files in os.walk("src"):
    paths += [os.path.join(root, n) for n in dirs + files]
for i, p in enumerate(sorted(paths)):
    os.utime(p, ns=(1500000000000000000 + i * 1111111111, 1400000000000000000 + i * 1234567891), follow_symlinks=False)
EOF
`

// entryMeta is what a faithful copy keeps of one entry.
type entryMeta struct {
	Mode      uint32 // type and permission bits
	Nlink     uint64
	UID, GID  uint32
	Size      int64
	Mtime     int64 // nanoseconds
	Target    string
	Xattrs    string // sorted name=value, without tempfs's own user.tempfs.* names
	SHA       string
	LinkGroup string // the first path of the entry's hard-link group
}

// treeMeta describes every entry below root by its path relative to root.
func treeMeta(t *testing.T, root string) map[string]entryMeta {
	t.Helper()
	out := map[string]entryMeta{}
	firstPath := map[uint64]string{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); err != nil {
			return err
		}
		m := entryMeta{Mode: st.Mode, Nlink: st.Nlink, UID: st.Uid, GID: st.Gid, Size: st.Size, Mtime: st.Mtim.Nano()}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFLNK:
			m.Target, err = os.Readlink(path)
		case unix.S_IFREG:
			var data []byte
			data, err = os.ReadFile(path)
			m.SHA = coreSHA256(data)
			if st.Nlink > 1 {
				if _, ok := firstPath[st.Ino]; !ok {
					firstPath[st.Ino] = rel
				}
				m.LinkGroup = firstPath[st.Ino]
			}
		}
		if err != nil {
			return err
		}
		m.Xattrs = xattrString(t, path, false)
		out[rel] = m
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// xattrString lists an entry's extended attributes as sorted name=value pairs; user.tempfs.* names are left out
// unless all is set.
func xattrString(t *testing.T, path string, all bool) string {
	t.Helper()
	buf := make([]byte, 1<<16)
	n, err := unix.Llistxattr(path, buf)
	if err != nil {
		t.Fatalf("llistxattr %s: %v", path, err)
	}
	var pairs []string
	for name := range strings.SplitSeq(string(buf[:n]), "\x00") {
		if name == "" || (!all && strings.HasPrefix(name, "user.tempfs.")) {
			continue
		}
		val := make([]byte, 1<<16)
		vn, err := unix.Lgetxattr(path, name, val)
		if err != nil {
			t.Fatalf("lgetxattr %s %s: %v", path, name, err)
		}
		pairs = append(pairs, fmt.Sprintf("%s=%q", name, val[:vn]))
	}
	slices.Sort(pairs)
	return strings.Join(pairs, " ")
}

// compareTrees fails the test for every entry that differs between want and got.
func compareTrees(t *testing.T, want, got map[string]entryMeta) {
	t.Helper()
	var paths []string
	for p := range want {
		paths = append(paths, p)
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			paths = append(paths, p)
		}
	}
	slices.Sort(paths)
	for _, p := range paths {
		w, wok := want[p]
		g, gok := got[p]
		switch {
		case !gok:
			t.Errorf("%s: missing from the copy", p)
		case !wok:
			t.Errorf("%s: in the copy only", p)
		case w != g:
			t.Errorf("%s: %s", p, metaDiff(w, g))
		}
	}
}

// metaDiff names the fields in which two entries differ, with both values.
func metaDiff(w, g entryMeta) string {
	var diffs []string
	add := func(field string, wv, gv any) {
		if wv != gv {
			diffs = append(diffs, fmt.Sprintf("%s: source %v, copy %v", field, wv, gv))
		}
	}
	add("mode", fmt.Sprintf("%#o", w.Mode), fmt.Sprintf("%#o", g.Mode))
	add("nlink", w.Nlink, g.Nlink)
	add("uid", w.UID, g.UID)
	add("gid", w.GID, g.GID)
	add("size", w.Size, g.Size)
	add("mtime", w.Mtime, g.Mtime)
	add("target", w.Target, g.Target)
	add("xattrs", w.Xattrs, g.Xattrs)
	add("sha256", w.SHA, g.SHA)
	add("hard-link group", w.LinkGroup, g.LinkGroup)
	return strings.Join(diffs, "; ")
}

// TestCoreToolsCopyTree: cp -a, tar and rsync, each a separate process, copy a tree into the mount, and the
// copy has the source's content and metadata: modes, owners, link counts, hard-link groups, symlink targets,
// nanosecond mtimes, directory sizes and xattrs.
func TestCoreToolsCopyTree(t *testing.T) {
	ref := coreTmpfs(t)
	sh(t, ref, sourceTree)
	src := filepath.Join(ref, "src")
	want := treeMeta(t, src)
	m := startMount(t)

	t.Run("cp -a", func(t *testing.T) {
		dst := m.Path("cp")
		sh(t, m.Dir, fmt.Sprintf("cp -a '%s' '%s'", src, dst))
		diffTrees(t, src, dst)
		compareTrees(t, want, treeMeta(t, dst))
	})
	t.Run("tar", func(t *testing.T) {
		tarball := filepath.Join(t.TempDir(), "src.tar")
		sh(t, src, fmt.Sprintf("tar --xattrs --xattrs-include='*' -cf '%s' .", tarball))
		dst := m.Path("tar")
		if err := os.Mkdir(dst, 0o755); err != nil {
			t.Fatal(err)
		}
		sh(t, dst, fmt.Sprintf("tar --xattrs --xattrs-include='*' -xpf '%s'", tarball))
		diffTrees(t, src, dst)
		compareTrees(t, want, treeMeta(t, dst))
	})
	t.Run("rsync -aH", func(t *testing.T) {
		coreRequireTool(t, "rsync")
		dst := m.Path("rsync")
		sh(t, m.Dir, fmt.Sprintf("rsync -aH '%s/' '%s/'", src, dst))
		if out := sh(t, m.Dir, fmt.Sprintf("rsync -aH --dry-run --itemize-changes '%s/' '%s/'", src, dst)); out != "" {
			t.Errorf("a second rsync finds things to do:\n%s", out)
		}
		diffTrees(t, src, dst)
		got := treeMeta(t, dst)
		noXattrs := map[string]entryMeta{}
		for p, w := range want { // rsync -a without -X copies no xattrs
			w.Xattrs = ""
			noXattrs[p] = w
		}
		compareTrees(t, noXattrs, got)
	})
	t.Run("rsync -aHX", func(t *testing.T) {
		coreRequireTool(t, "rsync")
		dst := m.Path("rsyncx")
		// rsync -X makes the destination's xattrs equal to the source's: it removes every name it lists there
		// that the source lacks. tmpfs lists only stored names; so must tempfs for this to work.
		out, code := coreRunScript(t, m.Dir, fmt.Sprintf("rsync -aHX '%s/' '%s/'", src, dst))
		if code != 0 {
			t.Errorf("rsync -aHX into the mount: exit %d\n%s", code, coreFirstLines(out, 4))
		}
		out, code = coreRunScript(t, m.Dir, fmt.Sprintf("rsync -aHX --dry-run --itemize-changes '%s/' '%s/'", src, dst))
		if code != 0 || out != "" {
			t.Errorf("a second rsync -aHX: exit %d, and it finds things to do:\n%s", code, coreFirstLines(out, 8))
		}
		compareTrees(t, want, treeMeta(t, dst))
	})
	t.Run("cp -a out of the mount", func(t *testing.T) {
		// A tree copied into the mount and back out must be the source again: the copy on tmpfs must not gain
		// attributes that only tempfs answers.
		back := filepath.Join(ref, "back")
		sh(t, m.Dir, fmt.Sprintf("cp -a '%s' '%s' && cp -a '%s' '%s'", src, m.Path("roundtrip"), m.Path("roundtrip"), back))
		compareTrees(t, treeMetaAllXattrs(t, src), treeMetaAllXattrs(t, back))
	})
	coreNoDaemonComplaints(t, m.Log())
}

// coreFirstLines keeps the first n lines of a long tool output.
func coreFirstLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) <= n {
		return s
	}
	return strings.Join(lines[:n], "\n") + fmt.Sprintf("\n... (%d more lines)", len(lines)-n)
}

// treeMetaAllXattrs is treeMeta with every xattr name, for trees that are not on tempfs.
func treeMetaAllXattrs(t *testing.T, root string) map[string]entryMeta {
	t.Helper()
	metas := treeMeta(t, root)
	for p, m := range metas {
		m.Xattrs = xattrString(t, filepath.Join(root, p), true)
		metas[p] = m
	}
	return metas
}

// diffTrees runs diff -r on two trees from a separate process (fifos are not comparable by content).
func diffTrees(t *testing.T, a, b string) {
	t.Helper()
	out, code := coreRunScript(t, "/", fmt.Sprintf("diff -r --no-dereference -x fifo '%s' '%s'", a, b))
	if code != 0 || out != "" {
		t.Errorf("diff -r %s %s: exit %d\n%s", a, b, code, out)
	}
}

func coreRequireTool(t *testing.T, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is missing (scripts/setup installs it)", name)
		}
		t.Skipf("%s is not installed", name)
	}
}

// gitScript makes a repository with a fixed history (fixed names, mails and dates, so that commit ids depend
// on nothing but what git wrote), then exercises what git does to a filesystem: lock files with O_EXCL,
// renames, hard links (local clone), gc and fsck.
const gitScript = `
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null HOME="$PWD"
export GIT_AUTHOR_DATE='2020-01-02T03:04:05Z' GIT_COMMITTER_DATE='2020-01-02T03:04:05Z'
g() { git -c user.name=Tester -c user.email=tester@example.com -c init.defaultBranch=main -c gc.auto=0 "$@"; }
g init -q repo
cd repo
mkdir -p src/pkg docs
seq 1 5000 > src/pkg/numbers.txt; printf 'readme\n' > README; printf '#!/bin/sh\n' > run.sh; chmod 755 run.sh
ln -s README link; head -c 200000 /dev/zero | tr '\0' 'z' > docs/big.txt
g add -A; g commit -q -m first
printf 'more\n' >> README; g mv src/pkg/numbers.txt src/nums.txt; g rm -q link; g commit -q -am second
g checkout -q -b topic; printf 'topic\n' > topic.txt; g add topic.txt; g commit -q -m third
g checkout -q main; printf 'main\n' >> run.sh; g commit -q -am fourth
g merge -q --no-ff -m merge topic
g fsck --strict --no-progress
g gc -q
g fsck --strict --no-progress
g log --format='%H %P %s'
g status --porcelain
g count-objects -v | grep -E '^(count|in-pack|packs):'
cd ..
g clone -q repo clone
cd clone
g fsck --strict --no-progress
g log --format=%H -1
g ls-files -s | cksum
`

// TestCoreToolsGit: git init, add, commit, merge, gc, fsck and a local clone inside the mount give the same
// commits and a consistent repository, as on tmpfs.
func TestCoreToolsGit(t *testing.T) {
	coreRequireTool(t, "git")
	ref := coreTmpfs(t)
	m := startMount(t)
	want := coreRunCase(t, filepath.Join(ref, "git"), gitScript)
	if want.code != 0 {
		t.Fatalf("the git script fails on tmpfs (exit %d):\n%s", want.code, want.out)
	}
	if n := strings.Count(want.out, " merge\n"); n != 1 {
		t.Fatalf("the git script made no merge commit on tmpfs:\n%s", want.out)
	}
	got := coreRunCase(t, m.Path("git"), gitScript)
	if got != want {
		t.Errorf("git in tempfs differs from git in tmpfs:\n%s\ndaemon log:\n%s", coreLineDiff(want.out, got.out, want.code, got.code), m.Log())
	}
	coreNoDaemonComplaints(t, m.Log())
}

// TestCoreDataIntegrity: files written by dd, cp and cat from separate processes, with sizes around
// --max-size, read back bit for bit (sha256 by another process), live in the tier the contract says, and stay
// exact after writes in the middle and past the end.
func TestCoreDataIntegrity(t *testing.T) {
	srcDir := t.TempDir()
	for _, c := range []struct {
		name    string
		maxSize int64
		flags   []string
		sizes   []int64
	}{
		{"default max-size", 1 << 20, nil, []int64{1<<20 - 1, 1 << 20, 1<<20 + 1, 5 << 20}},
		{"max-size 64KiB", 64 << 10, []string{"--max-size", "64KiB"}, []int64{64<<10 - 1, 64 << 10, 64<<10 + 1, 1<<20 + 1, 5 << 20}},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := startMount(t, c.flags...)
			methods := []struct{ name, cmd string }{
				{"dd bs=1M", "dd if='%s' of='%s' bs=1M 2>/dev/null"},
				{"dd bs=4093", "dd if='%s' of='%s' bs=4093 2>/dev/null"},
				{"cp", "cp '%s' '%s'"},
				{"cat", "cat '%s' > '%s'"},
			}
			for _, size := range c.sizes {
				src := filepath.Join(srcDir, fmt.Sprintf("random-%d", size))
				if _, err := os.Stat(src); err != nil {
					data := make([]byte, size)
					rng := rand.NewChaCha8([32]byte{byte(size), byte(size >> 8), byte(size >> 16), byte(size >> 24)})
					_, _ = rng.Read(data)
					if err := os.WriteFile(src, data, 0o644); err != nil {
						t.Fatal(err)
					}
				}
				wantSum := coreFileSHA(t, src)
				for _, meth := range methods {
					name := fmt.Sprintf("%d-%s", size, strings.ReplaceAll(meth.name, " ", "_"))
					dst := m.Path(name)
					sh(t, m.Dir, fmt.Sprintf(meth.cmd, src, dst))
					if got := shSHA(t, m.Dir, fmt.Sprintf("sha256sum < '%s'", dst)); got != wantSum {
						t.Errorf("%s: sha256sum reads %s, want %s", name, got, wantSum)
					}
					if got := shSHA(t, m.Dir, fmt.Sprintf("dd if='%s' bs=65537 2>/dev/null | sha256sum", dst)); got != wantSum {
						t.Errorf("%s: dd bs=65537 reads %s, want %s", name, got, wantSum)
					}
					wantTier := "memory"
					if size > c.maxSize {
						wantTier = "disk"
					}
					if tier := coreGetxattr(t, dst, "user.tempfs.spool"); tier != wantTier {
						t.Errorf("%s: %d bytes with max-size %d live in %q, want %q", name, size, c.maxSize, tier, wantTier)
					}
				}
				// The same writes in the middle and past the end of a copy on disk and of the file in the
				// mount leave both with the same bytes.
				ref := filepath.Join(t.TempDir(), "ref")
				dst := m.Path(fmt.Sprintf("%d-patched", size))
				sh(t, m.Dir, fmt.Sprintf("cp '%s' '%s' && cp '%s' '%s'", src, ref, src, dst))
				patch := `printf 'middle' | dd of="$1" bs=1 seek=%d conv=notrunc 2>/dev/null
head -c 70000 /dev/zero | tr '\0' 'p' | dd of="$1" bs=4096 seek=%d oflag=seek_bytes conv=notrunc 2>/dev/null
printf 'beyond' | dd of="$1" bs=1 seek=%d conv=notrunc 2>/dev/null`
				patch = fmt.Sprintf(patch, size/2, size-1000, size+3*c.maxSize+17)
				sh(t, m.Dir, "set -- '"+ref+"'\n"+patch)
				sh(t, m.Dir, "set -- '"+dst+"'\n"+patch)
				wantPatched := coreFileSHA(t, ref)
				if got := shSHA(t, m.Dir, fmt.Sprintf("sha256sum < '%s'", dst)); got != wantPatched {
					t.Errorf("%s: after writes in the middle and past the end, sha256 %s, want %s", dst, got, wantPatched)
				}
				if st, rst := coreStatSize(t, dst), coreStatSize(t, ref); st != rst {
					t.Errorf("%s: size %d after the writes, want %d", dst, st, rst)
				}
			}
			coreNoDaemonComplaints(t, m.Log())
		})
	}
}

func coreFileSHA(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return coreSHA256(data)
}

func shSHA(t *testing.T, dir, script string) string {
	t.Helper()
	f := strings.Fields(sh(t, dir, script))
	if len(f) == 0 {
		t.Fatalf("%s printed nothing", script)
	}
	return f[0]
}

func coreStatSize(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

func coreGetxattr(t *testing.T, path, name string) string {
	t.Helper()
	buf := make([]byte, 4096)
	n, err := unix.Getxattr(path, name, buf)
	if err != nil {
		t.Fatalf("getxattr %s %s: %v", path, name, err)
	}
	return string(bytes.TrimRight(buf[:n], "\x00"))
}
