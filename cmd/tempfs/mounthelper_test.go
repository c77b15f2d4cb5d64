package main

import (
	"slices"
	"testing"
)

func TestMountHelperArgs(t *testing.T) {
	isCommand := func(s string) bool { return s == "mount" || s == "run" || s == "status" }
	for _, tc := range []struct {
		argv0 string
		args  []string
		want  []string // nil: not a helper invocation
	}{
		{"/sbin/mount.tempfs", []string{"tempfs", "/scratch", "-o", "rw,max_size=4M,allow_other,x-systemd.automount"},
			[]string{"mount", "--daemon", "--max-size=4M", "-o", "allow_other,fsname=tempfs", "/scratch"}},
		{"/usr/local/bin/tempfs", []string{"tempfs", "/scratch", "-o", "memory=1G,disk=20G,mode=0755,max-age=24h,nosuid,nodev"},
			[]string{"mount", "--daemon", "--memory=1G", "--disk=20G", "--mode=0755", "--max-age=24h", "-o", "nosuid,nodev,fsname=tempfs", "/scratch"}},
		{"mount.tempfs", []string{"none", "/scratch", "-n", "-odefaults,store=/var/tmp"},
			[]string{"mount", "--daemon", "--store=/var/tmp", "-o", "fsname=none", "/scratch"}},
		{"mount.tempfs", []string{"/scratch"}, []string{"mount", "--daemon", "/scratch"}},
		{"mount.tempfs", []string{"tempfs", "/scratch", "-o", "metrics=9100,allow_other"},
			[]string{"mount", "--daemon", "--metrics=9100", "-o", "allow_other,fsname=tempfs", "/scratch"}},
		{"mount.tempfs", []string{"tempfs", "/scratch", "-o", "metrics=[::1]:9100"},
			[]string{"mount", "--daemon", "--metrics=[::1]:9100", "-o", "fsname=tempfs", "/scratch"}},
		{"mount.tempfs", []string{"tempfs", "/tmp", "-o", "owner=session,owner_quota=2G,allow_other"},
			[]string{"mount", "--daemon", "--owner=session", "--owner-quota=2G", "-o", "allow_other,fsname=tempfs", "/tmp"}},
		{"mount.tempfs", []string{"tempfs", "/scratch", "-o", "log=/var/log/tempfs.log,suid,exec,nonempty"},
			[]string{"mount", "--daemon", "--log=/var/log/tempfs.log", "-o", "nonempty,fsname=tempfs", "/scratch"}},
		// mount -t fuse.tempfs SRC DIR: mount.fuse3 adds dev,suid; the source is shown as given.
		{"tempfs", []string{"scratch-src", "/scratch", "-o", "rw,dev,suid"},
			[]string{"mount", "--daemon", "-o", "fsname=scratch-src", "/scratch"}},
		{"tempfs", []string{"a,b", "/scratch", "-o", "nodiratime,strictatime,sync,dirsync,lazytime"},
			[]string{"mount", "--daemon", "-o", "nodiratime,strictatime,sync,dirsync,lazytime", "/scratch"}},
		{"tempfs", []string{"tempfs", "/scratch", "-o", "remount,ro"},
			[]string{"mount", "--daemon", "-o", "remount,ro", "/scratch"}},
		{"tempfs", []string{"mount", "/scratch"}, nil},
		{"tempfs", []string{"run", "--", "make"}, nil},
		{"tempfs", []string{"status", "/scratch"}, nil},
		{"tempfs", []string{"--help"}, nil},
		{"tempfs", []string{"bogus", "relative"}, nil},
	} {
		got, ok := mountHelperArgs(tc.argv0, tc.args, isCommand)
		if tc.want == nil {
			if ok {
				t.Errorf("%s %q taken as a mount helper: %q", tc.argv0, tc.args, got)
			}
			continue
		}
		if !ok || !slices.Equal(got, tc.want) {
			t.Errorf("%s %q = %q, %v; want %q", tc.argv0, tc.args, got, ok, tc.want)
		}
	}
}

func TestRemountRequest(t *testing.T) {
	dir, opts, ok := remountRequest([]string{"mount", "--daemon", "-o", "remount,ro", "/scratch"})
	if !ok || dir != "/scratch" || !slices.Equal(opts, []string{"remount", "ro"}) {
		t.Errorf("remountRequest = %q, %q, %v", dir, opts, ok)
	}
	if _, _, ok := remountRequest([]string{"mount", "--daemon", "-o", "ro,fsname=x", "/scratch"}); ok {
		t.Error("a mount taken as a remount")
	}
}
