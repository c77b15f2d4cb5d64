package csinode

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestRecordsSaveLoadRemove(t *testing.T) {
	dir := t.TempDir()
	rs := records{dir: dir, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	ids := []string{"csi-0b3c", "a/b\x00../../weird", ""}
	for i, id := range ids[:2] {
		r := &volumeRecord{VolumeID: id, TargetPath: "/t/" + string(rune('a'+i)), Attributes: map[string]string{"maxSize": "4Mi"},
			Store: "/s", PID: 42, Published: time.Unix(1, 0).UTC()}
		if err := rs.save(r); err != nil {
			t.Fatal(err)
		}
		r.PID = 43 // saved again: replaced, not added
		if err := rs.save(r); err != nil {
			t.Fatal(err)
		}
	}
	// What is not a record is left alone; a leftover of an interrupted save is removed.
	for name, data := range map[string]string{"vol-junk.json": "{", ".tmp-123": "{}", "notes.txt": "x"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	got, err := rs.load()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("loaded %d records, want 2: %+v", len(got), got)
	}
	for _, r := range got {
		if r.PID != 43 || !r.sameVolume(map[string]string{"maxSize": "4Mi"}) {
			t.Errorf("record %+v was not read back as saved", r)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, ".tmp-123")); !os.IsNotExist(err) {
		t.Errorf("the leftover temporary file is still there (err %v)", err)
	}
	for _, id := range ids {
		if err := rs.remove(id); err != nil {
			t.Errorf("remove %q: %v", id, err)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 { // vol-junk.json and notes.txt
		t.Errorf("left in the state dir: %v", entries)
	}
}
