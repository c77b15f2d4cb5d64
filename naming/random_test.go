package naming

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"testing/iotest"
)

func TestRandomStringAlphabet(t *testing.T) {
	if strings.ContainsRune(Alphabet, 'X') {
		t.Fatal("Alphabet contains X: generated names could be templates")
	}
	for _, n := range []int{-1, 0, 1, 6, 37, 255, 1000} {
		s := RandomString(n)
		want := max(n, 0)
		if len(s) != want {
			t.Errorf("RandomString(%d) has length %d, want %d", n, len(s), want)
		}
		if strings.Trim(s, Alphabet) != "" {
			t.Errorf("RandomString(%d) = %q has characters outside the alphabet", n, s)
		}
	}
}

// TestRandomStringFrequencies is a sanity check of uniformity over 37*2000
// characters. The bounds are generous: the per-character bound is more than 11
// standard deviations, and a chi-square of 100 with 36 degrees of freedom has
// a probability below 1e-7. A modulo-biased draw (three characters at 6/7 of
// the others' rate) scores about 150 and almost always fails here;
// TestFillRandomRejectsBiasedBytes checks the rejection exactly.
func TestRandomStringFrequencies(t *testing.T) {
	const perChar = 2000
	s := RandomString(len(Alphabet) * perChar)
	counts := map[rune]int{}
	for _, c := range s {
		counts[c]++
	}
	chiSquare := 0.0
	for _, c := range Alphabet {
		got := counts[c]
		if got < perChar*3/4 || got > perChar*5/4 {
			t.Errorf("character %q drawn %d times, want about %d", c, got, perChar)
		}
		diff := float64(got - perChar)
		chiSquare += diff * diff / perChar
	}
	if chiSquare > 100 {
		t.Errorf("chi-square over %d characters = %.1f, want < 100 (expected about 36)", len(s), chiSquare)
	}
}

func TestFillRandomRejectsBiasedBytes(t *testing.T) {
	if acceptBelow != 222 {
		t.Fatalf("acceptBelow = %d, want 222 (6*37)", acceptBelow)
	}
	// Bytes 222..255 would map to 'a'..'7' with a plain modulo; they must be
	// skipped, so only 0, 36, 200 and 37 produce characters.
	source := []byte{222, 255, 0, 240, 36, 200, 230, 37}
	source = append(source, bytes.Repeat([]byte{0}, 64)...)
	got := make([]byte, 4)
	fillRandom(got, bytes.NewReader(source))
	if want := "a_pa"; string(got) != want {
		t.Errorf("fillRandom = %q, want %q", got, want)
	}
}

func TestFillRandomPanicsOnReadError(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("fillRandom returned without a random source; want a panic")
		}
	}()
	fillRandom(make([]byte, 6), iotest.ErrReader(errors.New("no entropy")))
}
