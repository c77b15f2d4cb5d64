package naming

import (
	"fmt"
	"math"
	"strconv"
)

// sizeForms is the part of every ParseSize error that says what is accepted,
// so that a user who typed a wrong size learns the right form from one line.
const sizeForms = "use a number of bytes with an optional K, M, G or T suffix (binary: 1K = 1024), e.g. 64KiB or 1M"

// ParseSize parses a size as the command line takes it, in binary units as dd
// and truncate read K, M, G and T: a plain number of bytes ("4096", "4096B"),
// or a number followed by K, M, G or T in either case, optionally followed by
// "iB" or "ib" ("4K", "4k", "64KiB", "1MiB", "2GiB", "1TiB"). A lone "b" is
// refused because dd reads it as 512-byte blocks. Spaces, signs, fractions,
// decimal units such as "KB", and values past int64 are errors whose message
// names the input and the accepted forms.
func ParseSize(s string) (int64, error) {
	digits := 0
	for digits < len(s) && s[digits] >= '0' && s[digits] <= '9' {
		digits++
	}
	if digits == 0 {
		return 0, fmt.Errorf("invalid size %q: %s", s, sizeForms)
	}
	multiplier, ok := sizeMultiplier(s[digits:])
	if !ok {
		return 0, fmt.Errorf("invalid size %q: %s", s, sizeForms)
	}
	count, err := strconv.ParseInt(s[:digits], 10, 64)
	if err != nil || count > math.MaxInt64/multiplier {
		return 0, fmt.Errorf("invalid size %q: too large (at most %d bytes); %s", s, int64(math.MaxInt64), sizeForms)
	}
	return count * multiplier, nil
}

// sizeMultiplier returns the number of bytes one unit of suffix stands for.
func sizeMultiplier(suffix string) (int64, bool) {
	if suffix == "" || suffix == "B" {
		return 1, true
	}
	var shift uint
	switch suffix[0] {
	case 'K', 'k':
		shift = 10
	case 'M', 'm':
		shift = 20
	case 'G', 'g':
		shift = 30
	case 'T', 't':
		shift = 40
	default:
		return 0, false
	}
	switch suffix[1:] {
	case "", "iB", "ib":
		return 1 << shift, true
	}
	return 0, false
}

// sizeUnits are FormatSize's units, each 1024 times the one before.
var sizeUnits = [...]string{"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}

// FormatSize renders a byte count for humans in the largest binary unit that
// keeps the number at least 1, with at most one decimal and no trailing ".0":
// "0 B", "512 B", "64 KiB", "1.5 MiB", "2 GiB". A value that would round up to
// 1024 of a unit is shown in the next unit ("1 MiB", not "1024 KiB").
func FormatSize(n int64) string {
	if n < 0 {
		// -MinInt64 overflows; its magnitude as a float64 is exact.
		return "-" + formatMagnitude(-float64(n))
	}
	return formatMagnitude(float64(n))
}

func formatMagnitude(bytes float64) string {
	if bytes < 1024 {
		return strconv.FormatFloat(bytes, 'f', 0, 64) + " B"
	}
	unit := 0
	tenths := math.Round(bytes * 10)
	for unit < len(sizeUnits)-1 && tenths >= 1024*10 {
		unit++
		tenths = math.Round(bytes / math.Ldexp(1, 10*unit) * 10)
	}
	whole, fraction := int64(tenths)/10, int64(tenths)%10
	if fraction == 0 {
		return strconv.FormatInt(whole, 10) + " " + sizeUnits[unit]
	}
	return strconv.FormatInt(whole, 10) + "." + strconv.FormatInt(fraction, 10) + " " + sizeUnits[unit]
}
