package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"path/filepath"
	"strings"
)

// The inputs of the real-program workloads are made once per run, in the run's private work directory, from what
// the machine has: the Go toolchain's source tree, generated lines and generated C files. Everything here is
// deterministic, so that every target, repetition and run gets the same input.

// realSizes is how big the inputs of the real-program workloads are.
type realSizes struct {
	tarFiles   int // R1: files of Go source in the tarball
	gitFiles   int // R2: Go files in the repository that is cloned
	pyFiles    int // R3: NamedTemporaryFile files of 4 KiB
	pyDirs     int // R3: mkdtemp directories
	sortLines  int // R4: lines sorted
	cFiles     int // R5: C files compiled
	sqliteRows int // R6: rows inserted
}

func fullRealSizes() realSizes {
	return realSizes{tarFiles: 2500, gitFiles: 400, pyFiles: 2000, pyDirs: 500, sortLines: 1_000_000, cFiles: 41, sqliteRows: 200_000}
}

// divided is s with every size divided by d (at least 1), for --quick.
func (s realSizes) divided(d int) realSizes {
	div := func(n int) int { return max(1, n/d) }
	return realSizes{tarFiles: div(s.tarFiles), gitFiles: div(s.gitFiles), pyFiles: div(s.pyFiles), pyDirs: div(s.pyDirs),
		sortLines: div(s.sortLines), cFiles: div(s.cFiles), sqliteRows: div(s.sqliteRows)}
}

// pickFiles walks the directories dirs of root, in this order and each in lexical order, and returns the first n
// regular files whose names end in suffix ("" for all), as paths relative to root, with their total size. It fails
// when root has fewer such files.
func pickFiles(root string, dirs []string, suffix string, n int) ([]string, int64, error) {
	var picked []string
	var total int64
	errEnough := errors.New("enough files")
	for _, dir := range dirs {
		err := filepath.WalkDir(filepath.Join(root, dir), func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !d.Type().IsRegular() || !strings.HasSuffix(d.Name(), suffix) {
				return nil
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			rel, err := filepath.Rel(root, path)
			if err != nil {
				return err
			}
			picked = append(picked, rel)
			total += info.Size()
			if len(picked) == n {
				return errEnough
			}
			return nil
		})
		if errors.Is(err, errEnough) {
			return picked, total, nil
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, 0, err
		}
	}
	return nil, 0, fmt.Errorf("%s has only %d files ending in %q under %s, %d wanted", root, len(picked), suffix, strings.Join(dirs, ", "), n)
}

// topDirs is the distinct first path elements of paths, in order of first appearance: what tar x creates.
func topDirs(paths []string) []string {
	var tops []string
	seen := map[string]bool{}
	for _, p := range paths {
		top, _, _ := strings.Cut(p, string(filepath.Separator))
		if !seen[top] {
			seen[top] = true
			tops = append(tops, top)
		}
	}
	return tops
}

// writeSortInput writes n lines in a random order: a 16-digit hexadecimal key, a space and the line's number.
func writeSortInput(w io.Writer, n int) error {
	rng := rand.New(rand.NewPCG(13, 2))
	bw := bufio.NewWriterSize(w, 1<<20)
	for i := range n {
		if _, err := fmt.Fprintf(bw, "%016x %07d\n", rng.Uint64(), i); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// checkSorted reads lines and fails unless there are want of them, in byte order (sort under LC_ALL=C).
func checkSorted(r io.Reader, want int) error {
	sc := bufio.NewScanner(r)
	var prev []byte
	count := 0
	for sc.Scan() {
		line := sc.Bytes()
		if count > 0 && bytes.Compare(prev, line) > 0 {
			return fmt.Errorf("line %d %q sorts before the line above it, %q", count+1, line, prev)
		}
		prev = append(prev[:0], line...)
		count++
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if count != want {
		return fmt.Errorf("%d lines, want %d", count, want)
	}
	return nil
}

// cSource is the i'th generated C file: a record type, a comparison for qsort and two small functions over
// arrays, different in every file, so that the compiler does real work (parsing libc headers, optimising loops).
func cSource(i int) string {
	return fmt.Sprintf(`#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct record%[1]d {
	int key;
	double weight;
	char name[32];
};

static int compare%[1]d(const void *a, const void *b)
{
	const struct record%[1]d *x = a, *y = b;
	if (x->key != y->key)
		return x->key < y->key ? -1 : 1;
	return strcmp(x->name, y->name);
}

double weigh%[1]d(struct record%[1]d *records, size_t n)
{
	double sum = 0;
	qsort(records, n, sizeof records[0], compare%[1]d);
	for (size_t i = 0; i < n; i++)
		sum += records[i].weight * (double)(i %% %[2]d + 1);
	return sum;
}

int describe%[1]d(const struct record%[1]d *r, char *out, size_t size)
{
	return snprintf(out, size, "%%s: %%d (%%.3f) #%[1]d", r->name, r->key * %[2]d, r->weight);
}
`, i, i%7+2)
}

// cFileName is the name of the i'th generated C file, and objectName that of its object.
func cFileName(i int) string  { return fmt.Sprintf("unit%03d.c", i) }
func objectName(i int) string { return fmt.Sprintf("unit%03d.o", i) }

// pythonTempfiles is R3: NamedTemporaryFile with 4 KiB written each (gone on close), then mkdtemp directories,
// removed; it prints what it did, which the workload checks.
const pythonTempfiles = `import os, sys, tempfile
target, files, dirs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
data = b"t" * 4096
for _ in range(files):
    with tempfile.NamedTemporaryFile(dir=target) as f:
        f.write(data)
for _ in range(dirs):
    os.rmdir(tempfile.mkdtemp(dir=target))
print("files", files, "dirs", dirs)
`

// pythonSQLite is R6: rows inserted in transactions of 1,000 (a test suite's fixture, not 200k fsyncs), an index,
// a sort on an unindexed column (SQLite's sorter spills to SQLITE_TMPDIR), VACUUM (a temporary copy of the
// database); it prints the row counts, which the workload checks.
const pythonSQLite = `import sqlite3, sys
path, rows = sys.argv[1], int(sys.argv[2])
con = sqlite3.connect(path)
con.execute("CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT, score INTEGER, note TEXT)")
for start in range(0, rows, 1000):
    with con:
        con.executemany("INSERT INTO item (name, score, note) VALUES (?, ?, ?)",
                        (("item-%08d" % ((i * 7919) % rows), (i * 31337) % 1000003, "n" * 40)
                         for i in range(start, min(start + 1000, rows))))
con.execute("CREATE INDEX item_name ON item (name)")
ordered = 0
last = -1
for (score,) in con.execute("SELECT score FROM item ORDER BY score"):
    if score < last:
        sys.exit("ORDER BY returned %d after %d" % (score, last))
    last = score
    ordered += 1
con.execute("VACUUM")
count = con.execute("SELECT count(*) FROM item").fetchone()[0]
con.close()
print("rows", count, "ordered", ordered)
`
