package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	tempfs "github.com/tempfs/tempfs/fs"
	"github.com/tempfs/tempfs/naming"
)

type statusOptions struct {
	json   bool
	owners bool
}

// AddFlags registers the flags of `tempfs status` on fs.
func (o *statusOptions) AddFlags(fs *pflag.FlagSet) {
	fs.BoolVar(&o.json, "json", false, "print the daemon's status as one JSON object")
	fs.BoolVar(&o.owners, "owners", false, "list the live owners (--owner) with their entries and bytes in RAM and on disk")
}

func newStatusCommand() *cobra.Command {
	o := &statusOptions{}
	cmd := &cobra.Command{
		Use:   "status MOUNTPOINT",
		Short: "Show a tempfs mount's entries, open handles, RAM and disk use",
		Long: `Show what a tempfs mount holds: entries by kind, files that go at their last close, open
handles, RAM used against its cap and at its peak, disk used against its cap, rollovers to
disk, whether passthrough and direct writes are on, the store directory and the uptime; then what it did
since it mounted: names removed by cause (last close, --max-age, unlink, owner gone), bytes the daemon
read, and FUSE requests with the busiest opcodes (count, failures, median and 99th percentile of the time
their handler took). The daemon answers it
in getxattr(MOUNTPOINT, "user.tempfs.stats"). With --json, that JSON object is printed as
it is (at least entries, files, dirs, open_handles, ram_bytes, ram_cap, disk_bytes, disk_cap,
rollovers, passthrough and uptime_seconds; requests has every opcode seen with its handler-time
histogram, and errors_by_errno the failed requests by errno). On a mount with --owner it also
counts the owners alive and gone, and the entries (each file or directory once) and names (each hard
link) removed with their owner (owner_scope, owners_live, owners_gone, entries_removed_with_owner,
names_removed_with_owner). With --owners, it lists the live owners
that have entries, most bytes first, with their entries and bytes in RAM and on disk (getxattr
user.tempfs.owners; with --json as it is).

Exit status: 0 when the daemon answered; 1 when MOUNTPOINT is a tempfs mount that could not
answer (a dead mount, whose daemon is gone: clear it with 'tempfs unmount MOUNTPOINT'; a
user's mount without allow_other, which is its user's alone); 2 when MOUNTPOINT is not a tempfs
mountpoint (a plain directory, a path inside a mount, another filesystem, a missing path).

Capacity: disk use at its peak and every byte written to disk (choose --disk from a run), where
the RAM cap came from (--memory, host RAM or a cgroup limit), the small RAM files kept together
in shared memfds, the descriptors files hold against the daemon's limit and the operations
refused with ENOSPC for lack of them, and a disk store that was deleted or is unusable.`,
		Example: `  tempfs status /scratch
  tempfs status --json /scratch | jq .ram_bytes
  tempfs status --json /scratch | jq '.requests.by_opcode | map_values(.count)'
  tempfs status --owners /tmp`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runStatus(o, args[0], cmd.OutOrStdout())
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

func runStatus(o *statusOptions, arg string, stdout io.Writer) error {
	mp, err := filepath.Abs(arg)
	if err != nil {
		return usageErrorf("%s: %v", arg, err)
	}
	raw, err := readStats(mp)
	if err != nil {
		return err
	}
	if o.owners {
		return printOwners(o, mp, stdout)
	}
	if o.json {
		_, err := fmt.Fprintf(stdout, "%s\n", raw)
		return failure(err)
	}
	var st tempfs.Stats
	if err := json.Unmarshal(raw, &st); err != nil {
		return failure(fmt.Errorf("%s answered a status that is not JSON: %w", mp, err))
	}
	writeStatus(stdout, mp, st)
	return nil
}

// readStats asks the daemon serving mp for its status. Anything but a tempfs mountpoint is a usage error (exit
// status 2); a tempfs mountpoint that cannot answer is a failure (1).
func readStats(mp string) ([]byte, error) {
	var sfs unix.Statfs_t
	if err := unix.Statfs(mp, &sfs); err != nil {
		switch {
		case errors.Is(err, unix.ENOTCONN):
			return nil, failure(fmt.Errorf("%s is a dead mount (its daemon is gone): clear it with 'tempfs unmount %s'", mp, mp))
		case tempfs.IsTempfsMount(mp):
			return nil, failure(fmt.Errorf("%s: %v (a user's tempfs mount without -o allow_other is that user's alone)", mp, errnoOf(err)))
		}
		return nil, usageErrorf("%s: %v", mp, errnoOf(err))
	}
	if sfs.Type != fuseSuperMagic {
		return nil, usageErrorf("%s is not a tempfs mount", mp)
	}
	raw, err := getxattrString(mp, tempfs.XattrStats)
	if err == nil {
		var probe map[string]any
		if json.Unmarshal([]byte(raw), &probe) != nil {
			if tempfs.IsTempfsMount(mp) {
				return nil, failure(fmt.Errorf("%s answered a status that is not JSON", mp))
			}
			return nil, usageErrorf("%s is not a tempfs mount (its %s is not JSON)", mp, tempfs.XattrStats)
		}
		return []byte(raw), nil
	}
	if _, pathErr := getxattrString(mp, tempfs.XattrPath); pathErr == nil {
		// Only the root answers the stats: say where to look instead.
		return nil, usageErrorf("%s is inside a tempfs mount, not its mountpoint: give the mountpoint", mp)
	}
	return nil, usageErrorf("%s is not a tempfs mount", mp)
}

// writeStatus prints the status as a two-column table.
func writeStatus(w io.Writer, mp string, st tempfs.Stats) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(label, format string, args ...any) { fmt.Fprintf(tw, label+"\t"+format+"\n", args...) }
	row("mountpoint", "%s", mp)
	row("entries", "%d (%s, %s, %s)", st.Entries, plural(st.Files, "file"), plural(st.Dirs, "directory"), plural(st.Others, "other"))
	row("ephemeral files", "%d (go at their last close)", st.EphemeralFiles)
	row("from templates", "%d since mount", st.TemplateEntries)
	row("open handles", "%d", st.OpenHandles)
	row("RAM", "%s of %s (%s free, peak %s), %s", naming.FormatSize(st.RAMBytes), naming.FormatSize(st.RAMCap),
		freeString(st.RAMCap-st.RAMBytes), naming.FormatSize(st.PeakRAMBytes), plural(st.MemoryFiles, "file"))
	if st.RAMCapSource != "" {
		row("RAM cap", "%s", st.RAMCapSource)
	}
	if st.DiskCap > 0 {
		row("disk", "%s of %s (%s free), %s", naming.FormatSize(st.DiskBytes), naming.FormatSize(int64(st.DiskCap)),
			freeString(int64(st.DiskCap)-st.DiskBytes), plural(st.DiskFiles, "file"))
	} else {
		row("disk", "%s, no cap (up to the store's free space%s), %s", naming.FormatSize(st.DiskBytes),
			storeFreeSpace(st.Store), plural(st.DiskFiles, "file"))
	}
	row("disk peak", "%s (%s written to disk in all: rollovers and later writes)", naming.FormatSize(st.PeakDiskBytes), naming.FormatSize(st.DiskWrittenBytes))
	row("small files", "%s kept together in %s", plural(st.ArenaFiles, "RAM file"), plural(st.ArenaMemfds, "shared memfd"))
	row("descriptors", "%d held by files, limit %d; %d operations refused for lack of them (ENOSPC)",
		st.Descriptors, st.DescriptorLimit, st.DescriptorLimitHits)
	if st.StoreError != "" || st.StoreRecreated > 0 {
		row("store problem", "%s (made again %s)", orNone(st.StoreError), plural(st.StoreRecreated, "time"))
	}
	row("rollovers", "%d (%s spilled to disk)", st.Rollovers, naming.FormatSize(st.SpilledBytes))
	row("written", "%s", naming.FormatSize(st.BytesWritten))
	row("max size", "%s", maxSizeString(st.MaxSize))
	row("passthrough", "%s", passthroughString(st))
	if st.Log != "" {
		row("log", "%s", st.Log)
	}
	row("direct writes", "%s", directWritesString(st.DirectWrites))
	if st.OwnerScope != "" && st.OwnerScope != "none" {
		row("owners", "%s: %d live, %d gone, %s (%s) removed with their owner", st.OwnerScope, st.OwnersLive,
			st.OwnersGone, plural(st.EntriesRemovedWithOwner, "entry"), plural(st.NamesRemovedWithOwner, "name"))
	}
	row("store", "%s", st.Store)
	row("uptime", "%s", (time.Duration(st.UptimeSeconds * float64(time.Second))).Round(time.Second))
	writeActivity(row, st.Activity)
	tw.Flush()
}

func orNone(s string) string {
	if s == "" {
		return "none now"
	}
	return s
}

func maxSizeString(n int64) string {
	if n == 0 {
		return "none (files stay in RAM until the RAM cap)"
	}
	return naming.FormatSize(n)
}

// freeString is a free byte count that never reads as zero while some bytes are left: "4 MiB of 4 MiB" with 8
// KiB free must not look full.
func freeString(n int64) string {
	if n <= 0 {
		return "none"
	}
	return naming.FormatSize(n)
}

// storeFreeSpace is ": N now" for the filesystem of the store directory, or nothing when it cannot be read.
func storeFreeSpace(store string) string {
	var sfs unix.Statfs_t
	if store == "" || unix.Statfs(store, &sfs) != nil {
		return ""
	}
	return ", " + naming.FormatSize(int64(sfs.Bavail)*sfs.Bsize) + " now"
}

// passthroughString says whether the kernel reads and writes disk-resident files directly, and why not.
func passthroughString(st tempfs.Stats) string {
	switch {
	case st.DiskCap > 0:
		return "off (--disk is set: the daemon must see every write to keep the cap)"
	case !st.Passthrough && st.PassthroughOff != "":
		return "off (" + st.PassthroughOff + ")"
	case !st.Passthrough:
		return "off (the kernel refused it: the daemon serves disk-resident files)"
	case st.PassthroughOpens == 0:
		return "on, not used yet (disk-resident files will be read and written by the kernel directly)"
	}
	return fmt.Sprintf("on (%s of disk-resident files served by the kernel directly)", plural(st.PassthroughOpens, "open"))
}

// directWritesString says whether writes bypass the FUSE page cache (README "tempfs status").
func directWritesString(on bool) string {
	if on {
		return "on (write-only handles bypass the page cache)"
	}
	return "off (this kernel cannot mmap such files: writes go through the page cache)"
}

// printOwners prints user.tempfs.owners: as it is with --json, else as a table.
func printOwners(o *statusOptions, mp string, stdout io.Writer) error {
	raw, err := getxattrString(mp, tempfs.XattrOwners)
	if err != nil {
		return failure(fmt.Errorf("%s does not list its owners (a tempfs from before --owner?): %w", mp, err))
	}
	if o.json {
		_, err := fmt.Fprintf(stdout, "%s\n", raw)
		return failure(err)
	}
	var report tempfs.OwnersReport
	if err := json.Unmarshal([]byte(raw), &report); err != nil {
		return failure(fmt.Errorf("%s answered an owners list that is not JSON: %w", mp, err))
	}
	writeOwners(stdout, mp, report)
	return nil
}

// writeOwners prints the live owners as a table, most bytes first as the daemon sorted them.
func writeOwners(stdout io.Writer, mp string, report tempfs.OwnersReport) {
	if report.Scope == "none" {
		fmt.Fprintf(stdout, "%s has no owners (mounted without --owner)\n", mp)
		return
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "OWNER\tENTRIES\tRAM\tDISK")
	for _, u := range report.Owners {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", u.Owner, u.Entries, naming.FormatSize(u.RAMBytes), naming.FormatSize(u.DiskBytes))
	}
	tw.Flush()
	if report.Omitted > 0 {
		fmt.Fprintf(stdout, "(%d more owners with fewer bytes not listed)\n", report.Omitted)
	}
}
