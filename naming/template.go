package naming

import "strings"

// runMarker is MinRun 'X's: a name contains it exactly when it has a run of at
// least MinRun 'X', which lets IsTemplate use the optimized substring search.
const runMarker = "XXXXXX"

// Template is a parsed template name: Prefix + Run random chars + Suffix.
type Template struct {
	Prefix, Suffix string
	Run            int
}

// ParseTemplate parses one path component. The rightmost maximal run of at least
// MinRun consecutive 'X' is the run; everything before it is Prefix, everything
// after it Suffix (no dot is added, as with mkstemp). Runs shorter than MinRun
// do not count, so "aXXXb_XXXXXX" has Prefix "aXXXb_". It returns
// ErrNotTemplate when there is no such run and ErrMultipleRuns when there are
// two or more, since the generated name would still be a template.
func ParseTemplate(name string) (Template, error) {
	start, end, count := longRuns(name)
	switch {
	case count == 0:
		return Template{}, ErrNotTemplate
	case count > 1:
		return Template{}, ErrMultipleRuns
	}
	return Template{Prefix: name[:start], Suffix: name[end:], Run: end - start}, nil
}

// longRuns finds the maximal runs of at least MinRun 'X' in name: how many
// there are, and the bounds [start, end) of the rightmost one.
func longRuns(name string) (start, end, count int) {
	for i := 0; i < len(name); {
		if name[i] != 'X' {
			i++
			continue
		}
		j := i
		for j < len(name) && name[j] == 'X' {
			j++
		}
		if j-i >= MinRun {
			start, end = i, j
			count++
		}
		i = j
	}
	return start, end, count
}

// IsTemplate reports whether name contains at least one run of at least MinRun
// 'X'. It is also true for names with several runs, which the filesystem
// refuses on create and never finds on lookup. It is called on every LOOKUP,
// so it does not allocate.
func IsTemplate(name string) bool {
	return strings.Contains(name, runMarker)
}

// Name returns one candidate: Prefix, then Run characters of Alphabet drawn
// uniformly with crypto/rand, then Suffix. Because the run was maximal and
// Alphabet has no 'X', the candidate is never a template itself.
func (t Template) Name() string {
	var b strings.Builder
	b.Grow(len(t.Prefix) + t.Run + len(t.Suffix))
	b.WriteString(t.Prefix)
	b.WriteString(RandomString(t.Run))
	b.WriteString(t.Suffix)
	return b.String()
}

// Draw returns the first candidate for which exists(candidate) is false,
// trying at most MaxDraws candidates, and ErrExhausted after that. The caller
// holds its directory's lock so that the answer of exists stays true until the
// entry is made.
func (t Template) Draw(exists func(name string) bool) (string, error) {
	for range MaxDraws {
		candidate := t.Name()
		if !exists(candidate) {
			return candidate, nil
		}
	}
	return "", ErrExhausted
}
