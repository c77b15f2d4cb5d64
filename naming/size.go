package naming

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// sizeForms is the part of every ParseSize error that says what is accepted,
// so that a user who typed a wrong size learns the right form from one line.
const sizeForms = "use a number of bytes (4096 or 4096B), binary units K, M, G or T as dd reads them, also written KiB or Ki " +
	"(1K = 1024), or decimal units KB, MB, GB or TB (1KB = 1000), in any case, e.g. 64KiB, 1m or 10gb"

// ParseSize parses a size as the command line takes it, as dd and truncate
// read it, with units in any case: a plain number of bytes ("4096", "4096B");
// a number followed by K, M, G or T, optionally followed by "i" or "iB", in
// binary units ("4K", "4k", "64KiB", "1Mi", "2GIB"); or a number followed by
// KB, MB, GB or TB in decimal units ("1KB" = 1000, "2gb" = 2000000000). One
// set of spellings, whatever the case: "b" is a byte as "B" is (not dd's
// 512-byte block), and "Kb" is a thousand bytes as "KB" is. Spaces, signs,
// fractions and values past int64 are errors whose message names the input and
// the accepted forms.
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
	suffix = strings.ToLower(suffix)
	if suffix == "" || suffix == "b" {
		return 1, true
	}
	var power int
	switch suffix[0] {
	case 'k':
		power = 1
	case 'm':
		power = 2
	case 'g':
		power = 3
	case 't':
		power = 4
	default:
		return 0, false
	}
	binary, decimal := int64(1), int64(1)
	for range power {
		binary *= 1024
		decimal *= 1000
	}
	switch suffix[1:] {
	case "", "i", "ib":
		return binary, true
	case "b":
		return decimal, true
	}
	return 0, false
}

// durationForms is the part of every ParseDuration error that says what is accepted.
const durationForms = "use a number with a unit: s, m, h or d (a day of 24h), combined as in 1d12h or 90m"

// ParseDuration parses a duration as Go's time.ParseDuration does, and also
// takes d for days of 24 hours, as tmpfiles.d writes ages ("10d", "1d12h").
// Negative durations are refused.
func ParseDuration(s string) (time.Duration, error) {
	rest, total := s, time.Duration(0)
	if i := strings.IndexByte(rest, 'd'); i > 0 {
		days, err := strconv.ParseInt(rest[:i], 10, 64)
		if err != nil || days < 0 || days > int64(math.MaxInt64/(24*time.Hour)) {
			return 0, fmt.Errorf("invalid duration %q: %s", s, durationForms)
		}
		total, rest = time.Duration(days)*24*time.Hour, rest[i+1:]
		if rest == "" {
			return total, nil
		}
	}
	d, err := time.ParseDuration(rest)
	switch {
	case err != nil, d < 0, strings.HasPrefix(rest, "+"), strings.HasPrefix(rest, "-") && total > 0:
		return 0, fmt.Errorf("invalid duration %q: %s", s, durationForms)
	case d > math.MaxInt64-total:
		return 0, errors.New("invalid duration " + strconv.Quote(s) + ": too long")
	}
	return total + d, nil
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
