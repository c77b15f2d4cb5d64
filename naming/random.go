package naming

import (
	"crypto/rand"
	"fmt"
	"io"
)

// acceptBelow is the largest multiple of len(Alphabet) that fits in a byte.
// Random bytes at or above it are thrown away, so that every character of
// Alphabet is equally likely (a plain modulo would favour the first 256 % 37).
const acceptBelow = 256 - 256%len(Alphabet)

// RandomString returns n characters of Alphabet drawn uniformly with
// crypto/rand. It returns "" for n <= 0.
func RandomString(n int) string {
	if n <= 0 {
		return ""
	}
	out := make([]byte, n)
	fillRandom(out, rand.Reader)
	return string(out)
}

// fillRandom fills dst with characters of Alphabet chosen by rejection sampling
// from the bytes of src. It reads in batches to keep system calls few. A
// failing src panics, as crypto/rand itself treats its failure as fatal: a
// predictable name is worse than no name.
func fillRandom(dst []byte, src io.Reader) {
	// Every byte is accepted with probability 222/256, so n+n/4+8 bytes almost
	// always suffice in one read.
	buf := make([]byte, len(dst)+len(dst)/4+8)
	filled := 0
	for filled < len(dst) {
		if _, err := io.ReadFull(src, buf); err != nil {
			panic(fmt.Sprintf("naming: reading random bytes: %v", err))
		}
		for _, b := range buf {
			if int(b) >= acceptBelow {
				continue
			}
			dst[filled] = Alphabet[int(b)%len(Alphabet)]
			filled++
			if filled == len(dst) {
				return
			}
		}
	}
}
