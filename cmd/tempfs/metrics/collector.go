package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	tempfs "github.com/tempfs/tempfs/fs"
)

// collector turns one Stats snapshot into metrics at each scrape.
type collector struct {
	stats func() tempfs.Stats

	entries, ephemeral, handles, files                            *prometheus.Desc
	ramBytes, ramCap, ramPeak, diskBytes, diskCap                 *prometheus.Desc
	rollovers, spilled, readBytes, writtenBytes, created, removed *prometheus.Desc
	requests, requestErrors, errnos                               *prometheus.Desc
	owners, ownersGone, ownerEntriesRemoved                       *prometheus.Desc
}

var _ = (prometheus.Collector)((*collector)(nil))

func newCollector(stats func() tempfs.Stats) *collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("tempfs_"+name, help, labels, nil)
	}
	return &collector{
		stats:     stats,
		entries:   d("entries", "Entries in the mount by kind (file, directory, other: symlinks, fifos, sockets, devices).", "kind"),
		ephemeral: d("ephemeral_files", "Files made from templates that go at their last close."),
		handles:   d("open_handles", "Open file handles."),
		files:     d("files", "Regular files by where their data lives (memory or disk).", "tier"),
		ramBytes:  d("ram_bytes", "Bytes of file data in RAM."),
		ramCap:    d("ram_cap_bytes", "Cap on file data in RAM (--memory)."),
		ramPeak:   d("ram_peak_bytes", "Most bytes of file data in RAM at once since mount."),
		diskBytes: d("disk_bytes", "Bytes of file data in the disk store."),
		diskCap:   d("disk_cap_bytes", "Cap on bytes in the disk store (--disk); 0 when only free space limits it."),
		rollovers: d("rollovers_total", "Files rolled over from RAM to the disk store."),
		spilled:   d("spilled_bytes_total", "Bytes moved from RAM to the disk store by rollovers."),
		readBytes: d("read_bytes_total", "Bytes served to READ requests by the daemon (not reads served by the page cache or passthrough)."),
		writtenBytes: d("written_bytes_total",
			"Bytes written through WRITE requests to the daemon (not writes served by passthrough)."),
		created: d("entries_created_total", "Entries made since mount, of every kind."),
		removed: d("names_removed_total",
			"Names removed since mount by cause: last_close, max_age, unlink (unlink, rmdir, replaced by rename), owner_gone; a file with three hard links removed counts three.", "cause"),
		requests: d("fuse_request_duration_seconds",
			"FUSE requests that reached the filesystem, by opcode, with the time their handler took.", "opcode"),
		requestErrors: d("fuse_request_errors_total", "FUSE requests answered with an error, by opcode.", "opcode"),
		errnos:        d("fuse_errors_total", "FUSE requests answered with an error, by errno.", "errno"),
		owners:        d("owners", "Live owners (--owner: processes, groups, sessions or cgroups that made entries)."),
		ownersGone:    d("owners_gone_total", "Owners gone since mount (their entries were removed)."),
		ownerEntriesRemoved: d("owner_entries_removed_total",
			"Entries removed with their owner since mount, each file or directory once however many names it had."),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.entries, c.ephemeral, c.handles, c.files, c.ramBytes, c.ramCap, c.ramPeak,
		c.diskBytes, c.diskCap, c.rollovers, c.spilled, c.readBytes, c.writtenBytes, c.created, c.removed,
		c.requests, c.requestErrors, c.errnos, c.owners, c.ownersGone, c.ownerEntriesRemoved} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st := c.stats()
	gauge := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
	}
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge(c.entries, st.Files, "file")
	gauge(c.entries, st.Dirs, "directory")
	gauge(c.entries, st.Others, "other")
	gauge(c.ephemeral, st.EphemeralFiles)
	gauge(c.handles, st.OpenHandles)
	gauge(c.files, st.MemoryFiles, "memory")
	gauge(c.files, st.DiskFiles, "disk")
	gauge(c.ramBytes, st.RAMBytes)
	gauge(c.ramCap, st.RAMCap)
	gauge(c.ramPeak, st.PeakRAMBytes)
	gauge(c.diskBytes, st.DiskBytes)
	gauge(c.diskCap, int64(st.DiskCap)) // 0: no cap (JSON says null)
	counter(c.rollovers, st.Rollovers)
	counter(c.spilled, st.SpilledBytes)
	counter(c.readBytes, st.BytesRead)
	counter(c.writtenBytes, st.BytesWritten)
	counter(c.created, st.EntriesCreated)
	for cause, n := range st.Removed {
		counter(c.removed, n, cause)
	}
	gauge(c.owners, st.OwnersLive)
	counter(c.ownersGone, st.OwnersGone)
	counter(c.ownerEntriesRemoved, st.EntriesRemovedWithOwner)

	req := st.Requests
	for op, s := range req.ByOpcode {
		// Prometheus buckets are cumulative and in seconds; the last (unbounded) bucket is the count itself.
		buckets := make(map[float64]uint64, len(req.BucketBoundsMicros))
		var cum uint64
		for i, bound := range req.BucketBoundsMicros {
			if i < len(s.Histogram) {
				cum += s.Histogram[i]
			}
			buckets[bound/1e6] = cum
		}
		ch <- prometheus.MustNewConstHistogram(c.requests, s.Count, s.HandlerSeconds, buckets, op)
		ch <- prometheus.MustNewConstMetric(c.requestErrors, prometheus.CounterValue, float64(s.Errors), op)
	}
	for errno, n := range req.ErrorsByErrno {
		ch <- prometheus.MustNewConstMetric(c.errnos, prometheus.CounterValue, float64(n), errno)
	}
}
