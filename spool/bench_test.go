package spool

import "testing"

// The benchmarks move 1 MiB per operation over a 64 MiB window, so that after the first pass
// they measure copying into existing pages or blocks, as a FUSE write of MaxWrite 1 MiB would.
const benchWindow = 64 * mib

func benchmarkWrite(b *testing.B, tier Tier) {
	pool := newTestPool(b, Config{MemoryCap: 2 * benchWindow})
	f := pool.NewFile()
	defer f.Close()
	if tier == Disk {
		if err := f.Rollover(); err != nil {
			b.Fatal(err)
		}
	}
	buf := pattern(int(mib), 1)
	b.SetBytes(mib)
	var off int64
	for b.Loop() {
		if _, err := f.WriteAt(buf, off); err != nil {
			b.Fatal(err)
		}
		off = (off + mib) % benchWindow
	}
}

func BenchmarkWriteMemory(b *testing.B) { benchmarkWrite(b, Memory) }
func BenchmarkWriteDisk(b *testing.B)   { benchmarkWrite(b, Disk) }

func BenchmarkRead(b *testing.B) {
	for _, tier := range []Tier{Memory, Disk} {
		b.Run(tier.String(), func(b *testing.B) {
			pool := newTestPool(b, Config{MemoryCap: 2 * benchWindow})
			f := pool.NewFile()
			defer f.Close()
			buf := pattern(int(mib), 1)
			for off := int64(0); off < benchWindow; off += mib {
				mustWrite(b, f, buf, off)
			}
			if tier == Disk {
				if err := f.Rollover(); err != nil {
					b.Fatal(err)
				}
			}
			b.SetBytes(mib)
			var off int64
			for b.Loop() {
				if n, err := f.ReadAt(buf, off); err != nil || n != len(buf) {
					b.Fatalf("ReadAt = %d, %v", n, err)
				}
				off = (off + mib) % benchWindow
			}
		})
	}
}

// BenchmarkRollover measures moving a 16 MiB RAM file to disk.
func BenchmarkRollover(b *testing.B) {
	pool := newTestPool(b, Config{MemoryCap: 64 * mib})
	data := pattern(int(16*mib), 1)
	b.SetBytes(16 * mib)
	for b.Loop() {
		f := pool.NewFile()
		mustWrite(b, f, data, 0)
		if err := f.Rollover(); err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
}
