package main

import (
	"github.com/spf13/cobra"

	tempfs "github.com/tempfs/tempfs/fs"
	"github.com/tempfs/tempfs/fs/mountinfo"
)

type unmountOptions struct {
	lazy bool
}

func newUnmountCommand() *cobra.Command {
	o := &unmountOptions{}
	cmd := &cobra.Command{
		Use:     "unmount MOUNTPOINT",
		Aliases: []string{"umount"},
		Short:   "Unmount a tempfs mount (also a dead one left by a killed daemon)",
		Long: `Unmount a tempfs mount. The daemon then frees all memory, removes its disk store and exits.
A busy mount (files still open) is refused unless -z detaches it: the name goes at once,
open files keep working, and the daemon exits after the last one closes. A dead mount left
by a killed daemon (every access fails with 'Transport endpoint is not connected') is
cleaned up too.`,
		Example: "  tempfs unmount /scratch\n  tempfs unmount -z /scratch   # detach even if files are open",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runUnmount(o, args[0])
		},
	}
	cmd.Flags().BoolVarP(&o.lazy, "lazy", "z", false, "detach a busy mount now; it goes when the last open file closes")
	return cmd
}

func runUnmount(o *unmountOptions, arg string) error {
	// A mount whose daemon is being started again (under a holder or systemd's store) is not served until it
	// is: looked up by its path in the mount table first, it is not stat'ed, which would wait.
	mp, err := mountpointUnseen(arg)
	if _, mounted := mountinfo.Find(mp); err != nil || !mounted {
		mp, err = resolveMountpoint(arg)
	}
	if err != nil {
		return err
	}
	// Only mountinfo decides: it names every mount, live or dead, without asking the filesystem, which a dead
	// mount cannot answer. Anything but a tempfs mount (a tmpfs at /tmp, a disk) is left alone.
	mi, mounted := mountinfo.Find(mp)
	switch {
	case !mounted:
		return usageErrorf("%s is not a mountpoint", mp)
	case !tempfs.IsTempfs(mi):
		return usageErrorf("%s is not a tempfs mount (it is %s): refusing to unmount it", mp, mi.FSType)
	}
	lazy := o.lazy || tempfs.IsStale(mp)
	if err := tempfs.Unmount(mp, lazy); err != nil {
		return failure(err)
	}
	return nil
}
